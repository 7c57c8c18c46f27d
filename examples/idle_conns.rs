//! Opens N keep-alive connections to ADDR, sends one request on each (so
//! the server has set the connection up), then keeps them all idle until
//! stdin closes. Prints `ready` once every connection got its response.
//!
//! `idle_conns 127.0.0.1:8100 10000 /public/x`

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn open(addr: String, path: String) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(&addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Read the head, then the Content-Length body.
    let mut reader = BufReader::new(&mut stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(stream)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("usage: idle_conns ADDR N PATH");
    let n: usize = args.next().and_then(|n| n.parse().ok()).expect("N");
    let path = args.next().unwrap_or_else(|| "/".into());
    let mut held = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(500) {
        let tasks: Vec<_> = (0..500.min(n - batch * 500))
            .map(|_| tokio::spawn(open(addr.clone(), path.clone())))
            .collect();
        for t in tasks {
            held.push(t.await.expect("task").expect("connection"));
        }
    }
    println!("ready {}", held.len());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 1];
    let _ = stdin.read(&mut sink).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
