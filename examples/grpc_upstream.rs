//! A small real gRPC server (tonic) for the HTTP/2 tests: the `test.Echo`
//! service of `tests/common/grpc_messages.rs`, over h2c.
//!
//! `grpc_upstream --listen 127.0.0.1:0` prints `listening on ADDR` and serves.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[path = "../tests/common/grpc_messages.rs"]
mod messages;
use messages::*;

fn reply(req: &Request<EchoRequest>, index: u32) -> EchoReply {
    let meta = |name: &str| {
        req.metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    EchoReply {
        message: req.get_ref().message.clone(),
        user_id: meta("x-user-id"),
        username: meta("x-username"),
        forwarded_proto: meta("x-forwarded-proto"),
        index,
        traceparent: meta("traceparent"),
    }
}

struct Unary;

impl UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            if req.get_ref().message == "fail" {
                return Err(Status::permission_denied(FAIL_MESSAGE));
            }
            Ok(Response::new(reply(&req, 0)))
        })
    }
}

struct Streaming;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

impl ServerStreamingService<EchoRequest> for Streaming {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let count = req.get_ref().count;
            let first = reply(&req, 0);
            let replies = futures_util::stream::unfold(0, move |i| {
                let mut next = first.clone();
                async move {
                    if i >= count {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    next.index = i;
                    Some((Ok(next), i + 1))
                }
            });
            Ok(Response::new(Box::pin(replies) as ReplyStream))
        })
    }
}

#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl<B> Service<http::Request<B>> for Echo
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let codec = ProstCodec::<EchoReply, EchoRequest>::default();
        match req.uri().path() {
            UNARY => Box::pin(async move { Ok(Grpc::new(codec).unary(Unary, req).await) }),
            STREAM => {
                Box::pin(async move { Ok(Grpc::new(codec).server_streaming(Streaming, req).await) })
            }
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:0", String::as_str);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("address"));
    tonic::transport::Server::builder()
        .add_service(Echo)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
        .expect("serve");
}
