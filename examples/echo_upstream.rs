//! A small real upstream for the quick start and the integration tests.
//!
//! `echo_upstream --listen 127.0.0.1:0 [--slack-secret S] [--idle-close-ms MS] [--record FILE]`
//! prints `listening on ADDR` and serves (with `--idle-close-ms`, a
//! keep-alive connection idle for MS ms is closed, as many servers do;
//! with `--record`, each request appends `METHOD TARGET BODY` to FILE, so
//! counts survive restarts). SIGTERM stops it gracefully: the listening
//! socket closes, keep-alive connections serve on for a 1 s grace, then
//! requests in flight finish, connections close and it exits.
//! - `/__received`: what it has received so far (method and target), as JSON;
//! - `.../slack/...`: verifies a Slack v0 signature over the raw body
//!   (200 when valid, 403 otherwise);
//! - `.../status/NNN`: answers NNN with extra headers and a non-JSON body;
//! - `.../download/N`: N bytes of a fixed pattern;
//! - `.../trickle/N`: declares N bytes, sends half, the rest 5 s later;
//! - `.../sse`: three server-sent events, 400 ms apart;
//! - `.../encoded`: a gzip-encoded text body;
//! - `.../hang`: never answers; `.../delay/MS/...`: echoes after MS ms;
//! - a WebSocket upgrade: sends the request headers as its first message,
//!   then echoes;
//! - anything else: echoes method, target, headers and the body's SHA-256.
//!
//! With `--close-second` it speaks raw HTTP/1.1 instead: the first request
//! of each connection is answered (its target as the body), the second is
//! read and recorded, then the connection closes without a byte: a pooled
//! connection that died, so every reuse of it is retried by a proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// How long keep-alive connections serve on after SIGTERM.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

struct State {
    slack_secret: String,
    received: Mutex<Vec<(String, String)>>,
    /// `--close-second`: the `traceparent` values of each request, in order.
    traceparents: Mutex<Vec<Vec<String>>>,
    record: Option<Mutex<std::fs::File>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn json(status: u16, value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .unwrap()
}

fn headers_json(headers: &hyper::HeaderMap) -> serde_json::Value {
    headers
        .iter()
        .map(|(n, v)| serde_json::json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect()
}

fn slack_signature_ok(secret: &str, headers: &hyper::HeaderMap, body: &[u8]) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (get("x-slack-request-timestamp"), get("x-slack-signature")) else {
        return false;
    };
    let Some(sig) = sig.strip_prefix("v0=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    let want = hex(&mac.finalize().into_bytes());
    // Test helper: a plain comparison is fine here.
    want == sig
}

fn segment_after<'a>(path: &'a str, marker: &str) -> Option<&'a str> {
    let i = path.find(marker)?;
    path[i + marker.len()..].split('/').next()
}

async fn websocket(req: Request<Incoming>) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let first = headers_json(req.headers()).to_string();
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws.send(Message::text(first)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() || ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let target = req.uri().to_string();
    if path == "/__received" {
        let received = state.received.lock().unwrap().clone();
        return Ok(json(200, serde_json::json!(received)));
    }
    state
        .received
        .lock()
        .unwrap()
        .push((req.method().to_string(), target.clone()));

    if req.headers().get("upgrade").is_some() {
        return Ok(websocket(req).await);
    }
    if path.ends_with("/hang") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some(ms) = segment_after(&path, "/delay/").and_then(|n| n.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = segment_after(&path, "/status/").and_then(|c| c.parse::<u16>().ok()) {
        return Ok(Response::builder()
            .status(code)
            .header("content-type", "application/octet-stream")
            .header("x-upstream", "echo")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(full(&b"not json \x00\xff\xfe"[..]))
            .unwrap());
    }
    if let Some(n) = segment_after(&path, "/trickle/").and_then(|n| n.parse::<usize>().ok()) {
        let halves = futures_util::stream::unfold(0u32, move |i| async move {
            match i {
                0 => Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'a'; n / 2]))),
                    1,
                )),
                1 => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Some((Ok(Frame::data(Bytes::from(vec![b'b'; n - n / 2]))), 2))
                }
                _ => None,
            }
        });
        return Ok(Response::builder()
            .header("content-length", n)
            .body(BodyExt::boxed(StreamBody::new(halves)))
            .unwrap());
    }
    if let Some(n) = segment_after(&path, "/download/").and_then(|n| n.parse::<usize>().ok()) {
        let body: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .body(full(body))
            .unwrap());
    }
    if path.ends_with("/encoded") {
        // Already gzip-encoded by the upstream: must pass through as is.
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&b"already encoded upstream ".repeat(40))
            .unwrap();
        return Ok(Response::builder()
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .body(full(gz.finish().unwrap()))
            .unwrap());
    }
    if path.ends_with("/sse") {
        let events = futures_util::stream::unfold(0u32, |i| async move {
            if i == 3 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            let frame = Frame::data(Bytes::from(format!("data: event-{i}\n\n")));
            Some((Ok::<_, Infallible>(frame), i + 1))
        });
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(BodyExt::boxed(StreamBody::new(events)))
            .unwrap());
    }

    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(json(400, serde_json::json!({"error": "body read failed"}))),
    };
    if let Some(record) = &state.record {
        use std::io::Write;
        let mut line = format!("{} {} ", parts.method, target).into_bytes();
        line.extend_from_slice(&body);
        line.push(b'\n');
        // One append per request: lines of several processes do not mix.
        let _ = record.lock().unwrap().write_all(&line);
    }
    let summary = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": target,
        "headers": headers_json(&parts.headers),
        "body_len": body.len(),
        "body_sha256": hex(&Sha256::digest(&body)),
    });
    if path.contains("/slack/") {
        let ok = slack_signature_ok(&state.slack_secret, &parts.headers, &body);
        let mut summary = summary;
        summary["signature_valid"] = ok.into();
        return Ok(json(if ok { 200 } else { 403 }, summary));
    }
    Ok(json(200, summary))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut slack_secret = std::env::var("SLACK_SIGNING_SECRET").unwrap_or_default();
    let mut idle_close: Option<Duration> = None;
    let mut record = None;
    let mut close_second = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().expect("--listen needs an address"),
            "--slack-secret" => slack_secret = args.next().expect("--slack-secret needs a value"),
            "--idle-close-ms" => {
                let ms = args.next().and_then(|v| v.parse().ok());
                idle_close = Some(Duration::from_millis(ms.expect("--idle-close-ms takes MS")));
            }
            "--record" => {
                let path = args.next().expect("--record needs a file");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .expect("cannot open the record file");
                record = Some(Mutex::new(file));
            }
            "--close-second" => close_second = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let addr: SocketAddr = listen.parse().expect("--listen takes IP:port");
    let listener = TcpListener::bind(addr).await.expect("cannot bind");
    println!("listening on {}", listener.local_addr().unwrap());
    let state = Arc::new(State {
        slack_secret,
        received: Mutex::new(Vec::new()),
        traceparents: Mutex::new(Vec::new()),
        record,
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let (stopping, _) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = terminate.recv() => break,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let state = state.clone();
        if close_second {
            connections.spawn(serve_close_second(state, stream));
            continue;
        }
        let mut stop = stopping.subscribe();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let mut builder = hyper::server::conn::http1::Builder::new();
            if let Some(idle) = idle_close {
                // hyper's header timer runs from the end of one response to
                // the next request's header: an idle keep-alive limit.
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle);
            }
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            // Stopping: keep-alive goes on for a grace period, long enough
            // for a balancer's checks to see the closed listener and stop
            // sending (closing an idle connection at once races a request
            // already on its way); then the request in flight finishes and
            // the connection closes.
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tokio::time::sleep(DRAIN_GRACE) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
}

/// `--close-second`: answers the first request of a connection, records the
/// second and closes without answering it. GETs without a body only.
/// `/__received` lists the targets, `/__traceparents` each request's
/// `traceparent` values.
async fn serve_close_second(state: Arc<State>, mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    for nth in 0.. {
        let end = loop {
            if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&seen[..end]).into_owned();
        seen.drain(..end);
        let mut line = head.lines().next().unwrap_or("").split(' ');
        let method = line.next().unwrap_or("").to_owned();
        let target = line.next().unwrap_or("").to_owned();
        let body = if target == "/__received" {
            let received = state.received.lock().unwrap().clone();
            serde_json::json!(received).to_string()
        } else if target == "/__traceparents" {
            let seen = state.traceparents.lock().unwrap().clone();
            serde_json::json!(seen).to_string()
        } else {
            let traceparents = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
                .map(|(_, value)| value.trim().to_owned())
                .collect();
            state.traceparents.lock().unwrap().push(traceparents);
            state
                .received
                .lock()
                .unwrap()
                .push((method, target.clone()));
            if nth > 0 {
                return;
            }
            target
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
