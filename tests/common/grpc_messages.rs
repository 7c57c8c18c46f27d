//! The messages of the test gRPC service `test.Echo` (prost derives, no
//! code generation), shared by `examples/grpc_upstream.rs` and the tests.
//!
//! - `Unary(EchoRequest) -> EchoReply`: the message back, with the identity
//!   headers the server received; `message = "fail"` answers
//!   PERMISSION_DENIED with a known `grpc-message`.
//! - `Stream(EchoRequest) -> stream EchoReply`: `count` replies, 100 ms apart.

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub user_id: String,
    #[prost(string, tag = "3")]
    pub username: String,
    #[prost(string, tag = "4")]
    pub forwarded_proto: String,
    #[prost(uint32, tag = "5")]
    pub index: u32,
    /// The `traceparent` the server received.
    #[prost(string, tag = "6")]
    pub traceparent: String,
}

pub const UNARY: &str = "/test.Echo/Unary";
pub const STREAM: &str = "/test.Echo/Stream";
/// The `grpc-message` of a failed call.
pub const FAIL_MESSAGE: &str = "denied: fail requested";
