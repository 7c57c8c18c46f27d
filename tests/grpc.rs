//! gRPC through the gateway (README, "gRPC"): a tonic client over TLS
//! (ALPN h2) to the gateway, the gateway over h2c to a real tonic server
//! (`examples/grpc_upstream.rs`). Unary and server-streaming calls,
//! trailers intact, identity injected, and the gateway's own refusals and
//! upstream failures as gRPC statuses, not JSON envelopes.

mod common;

#[path = "common/grpc_messages.rs"]
mod messages;

use std::time::{Duration, Instant};

use common::*;
use messages::*;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;
use tonic_prost::ProstCodec;

async fn channel(port: u16, ca: &std::path::Path) -> Channel {
    let pem = std::fs::read(ca).expect("ca");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .domain_name("localhost");
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("connect to the gateway")
}

fn call(message: &str, count: u32, token: Option<&str>) -> tonic::Request<EchoRequest> {
    let mut req = tonic::Request::new(EchoRequest {
        message: message.into(),
        count,
    });
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("metadata");
        req.metadata_mut().insert("authorization", value);
    }
    // A client-sent identity is stripped, as for HTTP/1.
    req.metadata_mut().insert(
        "x-user-id",
        "00000000-0000-0000-0000-000000000000".parse().unwrap(),
    );
    req
}

async fn unary(
    channel: &Channel,
    path: &'static str,
    req: tonic::Request<EchoRequest>,
) -> Result<tonic::Response<EchoReply>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let codec = ProstCodec::<EchoRequest, EchoReply>::default();
    grpc.unary(req, PathAndQuery::from_static(path), codec)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_pass_with_identity_trailers_and_grpc_errors() {
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "grpc");
    let server = Upstream::start_grpc();
    let down = closed_port();
    let tls_port = free_port();
    let routes = route("/test.Echo/*", server.port, true, "protocol = \"h2c\"")
        + &route("/down.Echo/*", down, false, "protocol = \"h2c\"");
    let server_extra = tls_block(tls_port, &cert, &key, "");
    let _gw = Gateway::start_with(GatewayOptions {
        server_extra: &server_extra,
        ..GatewayOptions::new(&routes)
    });
    let name = unique("grpcuser");
    let id = add_user(&name);
    let token = token_for(&name);
    let ch = channel(tls_port, &cert).await;

    // Unary, with the identity the gateway injected.
    let reply = unary(&ch, UNARY, call("hello", 0, Some(&token)))
        .await
        .expect("unary call")
        .into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.user_id, id);
    assert_eq!(reply.username, name);
    assert_eq!(reply.forwarded_proto, "https");

    // Server streaming: five messages, as they are sent (100 ms apart).
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.expect("ready");
    let started = Instant::now();
    let mut stream = grpc
        .server_streaming(
            call("tick", 5, Some(&token)),
            PathAndQuery::from_static(STREAM),
            ProstCodec::<EchoRequest, EchoReply>::default(),
        )
        .await
        .expect("streaming call")
        .into_inner();
    let mut arrivals = Vec::new();
    while let Some(reply) = stream.message().await.expect("stream message") {
        assert_eq!(reply.index as usize, arrivals.len());
        assert_eq!(reply.user_id, id);
        arrivals.push(started.elapsed());
    }
    assert_eq!(arrivals.len(), 5);
    assert!(
        arrivals[4] - arrivals[0] >= Duration::from_millis(300),
        "buffered: {arrivals:?}"
    );
    // The stream ended with the server's trailers: grpc-status 0.
    let trailers = stream.trailers().await.expect("trailers");
    assert!(
        trailers.is_none()
            || trailers
                .unwrap()
                .get("grpc-status")
                .is_none_or(|s| s == "0")
    );

    // The server's own error: status and message arrive in its trailers.
    let err = unary(&ch, UNARY, call("fail", 0, Some(&token)))
        .await
        .expect_err("fail is refused by the server");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), FAIL_MESSAGE);

    // The gateway's refusals, the gRPC way (HTTP 200, grpc-status).
    let err = unary(&ch, UNARY, call("hello", 0, None))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().starts_with("MISSING_TOKEN"), "{err:?}");
    let err = unary(&ch, "/nothing.Here/Call", call("hello", 0, Some(&token)))
        .await
        .expect_err("no route");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().starts_with("ROUTE_NOT_FOUND"), "{err:?}");

    // A failing upstream: UNAVAILABLE, and the connection stays usable.
    let err = unary(&ch, "/down.Echo/Unary", call("hello", 0, None))
        .await
        .expect_err("upstream down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().starts_with("SERVICE_UNAVAILABLE"), "{err:?}");
    let again = unary(&ch, UNARY, call("again", 0, Some(&token)))
        .await
        .expect("the connection still works");
    assert_eq!(again.into_inner().message, "again");
}

// Trace context over HTTP/2 both ways: a gRPC call to an h2c server and an
// h2 request to an h2 (TLS) upstream, a second gateway, each carry one
// `traceparent` of the caller's trace, and each makes a span.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_and_h2_requests_carry_their_trace_and_make_spans() {
    const GRPC_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const H2_TRACE: &str = "00-5bf92f3577b34da6a3ce929d0e0e4737-10f067aa0ba902b8-01";
    let dir = cert_dir();
    let (cert, key) = make_cert(&dir, "traced");
    let server = Upstream::start_grpc();
    let echo = Upstream::start();
    let collector = Collector::start();
    // The inner hop: a gateway on TLS (h2) in front of the echo upstream.
    let inner_tls = free_port();
    let inner_extra = tls_block(inner_tls, &cert, &key, "");
    let inner_routes = route("/public/*", echo.port, false, "");
    let _inner = Gateway::start_with(GatewayOptions {
        server_extra: &inner_extra,
        ..GatewayOptions::new(&inner_routes)
    });
    let tls_port = free_port();
    let routes = format!(
        "\n[tracing]\notlp_endpoint = \"{}\"\nexport_interval_ms = 200\n",
        collector.url()
    ) + &route("/test.Echo/*", server.port, false, "protocol = \"h2c\"")
        + &route(
            "/public/*",
            inner_tls,
            false,
            &format!("protocol = \"h2\"\ntls_ca_file = \"{}\"", cert.display()),
        );
    let server_extra = tls_block(tls_port, &cert, &key, "");
    let _gw = Gateway::start_with(GatewayOptions {
        server_extra: &server_extra,
        ..GatewayOptions::new(&routes)
    });

    let ch = channel(tls_port, &cert).await;
    let mut req = call("hello", 0, None);
    req.metadata_mut()
        .insert("traceparent", GRPC_TRACE.parse().unwrap());
    let reply = unary(&ch, UNARY, req).await.expect("unary").into_inner();
    assert_eq!(reply.traceparent.len(), 55, "{}", reply.traceparent);
    assert_eq!(&reply.traceparent[..36], &GRPC_TRACE[..36]);
    let grpc_span = reply.traceparent[36..52].to_owned();
    assert_ne!(grpc_span, &GRPC_TRACE[36..52]);

    let client = H2Client::connect(tls_port, &cert).await;
    let r = client.get("/public/h2", &[("traceparent", H2_TRACE)]).await;
    assert_eq!(r.status, 200);
    let sent = r.upstream_header("traceparent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        &sent[0][..36],
        &H2_TRACE[..36],
        "the trace goes through both hops"
    );

    let spans = collector.wait_for(2, Duration::from_secs(10));
    let of = |trace: &str| {
        spans
            .iter()
            .find(|s| s.trace_id_hex() == trace[3..35])
            .unwrap_or_else(|| panic!("no span of {trace}: {spans:?}"))
    };
    let grpc = of(GRPC_TRACE);
    assert_eq!(grpc.span.name, "/test.Echo/*");
    assert_eq!(grpc.span_id_hex(), grpc_span);
    assert_eq!(grpc.parent_id_hex(), &GRPC_TRACE[36..52]);
    assert_eq!(grpc.attr("network.protocol.version").as_deref(), Some("2"));
    assert_eq!(grpc.attr("http.request.method").as_deref(), Some("POST"));
    let h2 = of(H2_TRACE);
    assert_eq!(h2.span.name, "/public/*");
    assert_eq!(h2.attr("network.protocol.version").as_deref(), Some("2"));
    assert_eq!(h2.attr("http.response.status_code").as_deref(), Some("200"));
}
