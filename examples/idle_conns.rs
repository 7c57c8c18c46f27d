//! Opens N keep-alive connections to ADDR, sends one request on each (so
//! the server has set the connection up), then keeps them all idle until
//! stdin closes. Prints `ready` once every connection got its response.
//!
//! `idle_conns 127.0.0.1:8100 10000 /public/x`: HTTP/1.1 in clear text;
//! `idle_conns 127.0.0.1:8110 5000 /public/x h2 CA_FILE`: HTTP/2 over TLS
//! (ALPN h2, the server's certificate checked against CA_FILE, named
//! `localhost`), one stream on each connection.

use std::sync::Arc;
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

/// A TLS connection with ALPN h2, one GET answered, kept open (the
/// connection's driver runs on its own task).
async fn open_h2(
    addr: String,
    path: String,
    tls: tokio_rustls::TlsConnector,
) -> Result<h2::client::SendRequest<bytes::Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(&addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let stream = tls.connect(name, tcp).await?;
    let (client, connection) = h2::client::handshake(stream).await?;
    tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = http::Request::get(format!("https://localhost{path}")).body(())?;
    let (response, _) = client.send_request(request, true)?;
    let mut body = response.await?.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
    }
    Ok(client)
}

fn h2_connector(ca: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(robeing_gateway::tls::crypto::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("usage: idle_conns ADDR N PATH");
    let n: usize = args.next().and_then(|n| n.parse().ok()).expect("N");
    let path = args.next().unwrap_or_else(|| "/".into());
    let h2 = match (args.next().as_deref(), args.next()) {
        (Some("h2"), Some(ca)) => Some(h2_connector(&ca)),
        (None, _) => None,
        _ => panic!("usage: idle_conns ADDR N PATH [h2 CA_FILE]"),
    };
    let mut held = Vec::with_capacity(n);
    let mut held_h2 = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(500) {
        let count = 500.min(n - batch * 500);
        match &h2 {
            None => {
                let tasks: Vec<_> = (0..count)
                    .map(|_| tokio::spawn(open(addr.clone(), path.clone())))
                    .collect();
                for t in tasks {
                    held.push(t.await.expect("task").expect("connection"));
                }
            }
            Some(tls) => {
                let tasks: Vec<_> = (0..count)
                    .map(|_| tokio::spawn(open_h2(addr.clone(), path.clone(), tls.clone())))
                    .collect();
                for t in tasks {
                    held_h2.push(t.await.expect("task").expect("h2 connection"));
                }
            }
        }
    }
    println!("ready {}", held.len() + held_h2.len());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 1];
    let _ = stdin.read(&mut sink).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
