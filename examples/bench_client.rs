//! Sends exactly N requests to ADDR over C keep-alive connections (one
//! request at a time on each), for the instruction bench: a proxy under
//! callgrind is counted over a known number of requests. Each request
//! carries the next token of TOKENS_FILE (one per line) as a bearer token,
//! when given; a connection the server closes is reopened. Prints
//! `done N STATUS=COUNT ...` on stdout.
//!
//! `bench_client 127.0.0.1:8100 /api/x 1000 4 [TOKENS_FILE]`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One response: its status, and whether the server closes the connection.
async fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(u16, bool)> {
    conn.get_mut().write_all(request).await?;
    let mut status = 0;
    let mut length = 0usize;
    let mut close = false;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let lower = line.to_ascii_lowercase();
        if status == 0 {
            status = lower
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok((status, close))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_client ADDR PATH N CONNS [TOKENS_FILE]";
    let addr = args.next().expect(usage);
    let path = args.next().expect(usage);
    let total: usize = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let conns: usize = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let tokens: Vec<String> = args
        .next()
        .map(|file| {
            std::fs::read_to_string(file)
                .expect("tokens file")
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(if tokens.is_empty() {
        vec![format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()]
    } else {
        tokens
            .iter()
            .map(|t| {
                format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {t}\r\n\r\n")
                    .into_bytes()
            })
            .collect()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, requests, next) = (addr.clone(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = BTreeMap::<u16, usize>::new();
            let mut conn: Option<BufReader<TcpStream>> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return statuses;
                }
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => BufReader::new(TcpStream::connect(&addr).await.expect("connect")),
                };
                let request = &requests[i % requests.len()];
                let (status, close) = exchange(&mut c, request).await.expect("response");
                *statuses.entry(status).or_default() += 1;
                if !close {
                    conn = Some(c);
                }
            }
        }));
    }
    let mut statuses = BTreeMap::<u16, usize>::new();
    for task in tasks {
        for (status, n) in task.await.expect("client task") {
            *statuses.entry(status).or_default() += n;
        }
    }
    let summary: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}={n}")).collect();
    println!("done {total} {}", summary.join(" "));
}
