//! TLS for the tests: certificates made by the openssl CLI at test time,
//! the `[[server.tls]]` block, and an HTTP/2 client over rustls, either
//! through the `h2` crate (streams, bodies, trailers) or as raw frames
//! (what a well-behaved client would never send).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for localhost and 127.0.0.1 in `dir`.
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    make_cert_for(dir, name, "DNS:localhost,IP:127.0.0.1")
}

/// A self-signed certificate for `names` (subjectAltName entries) in `dir`.
pub fn make_cert_for(dir: &Path, name: &str, names: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName={names}")])
        // Its own trust anchor, but not a CA: webpki (rustls) refuses a CA
        // certificate used as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A fresh directory for one test's certificates.
pub fn cert_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(super::unique("robeing-tls"));
    std::fs::create_dir_all(&dir).expect("cert dir");
    dir
}

/// One `[[server.tls]]` listener.
pub fn tls_block(port: u16, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:{port}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n",
        cert.display(),
        key.display()
    )
}

pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_on(ca, alpn, robeing_gateway::tls::crypto::provider())
}

fn client_config_on(
    ca: &Path,
    alpn: &[&[u8]],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca pem")).expect("ca cert");
    }
    // The gateway's provider (rustls has ring too, through Pingora).
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to the gateway offering `alpn`, checked against `ca`.
pub async fn tls_connect(port: u16, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(client_config(ca, alpn))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// A TLS 1.3 handshake with the gateway by a client on `provider`: its
/// error, if it fails.
pub async fn handshake_on(
    port: u16,
    ca: &Path,
    provider: rustls::crypto::CryptoProvider,
) -> Result<(), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(client_config_on(ca, &[b"http/1.1"], Arc::new(provider)))
        .connect(name, tcp)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// An HTTP/2 response, read to its end.
#[derive(Debug)]
pub struct H2Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        super::json_of(&self.body)
    }

    /// The values of `name` as the echo upstream received them.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        super::echoed_header(&self.json(), name)
    }
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// One HTTP/2 connection (ALPN h2) through the `h2` crate; requests on it
/// are streams, and clones of it share the connection.
#[derive(Clone)]
pub struct H2Client {
    send: h2::client::SendRequest<Bytes>,
}

impl H2Client {
    pub async fn connect(port: u16, ca: &Path) -> Self {
        let tls = tls_connect(port, ca, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(tls)
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Self { send }
    }

    /// Sends one request and returns the response head and its body stream.
    pub async fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<(String, String)>, h2::RecvStream), h2::Error> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(()).expect("request");
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            send_body(&mut stream, body).await?;
        }
        let response = response.await?;
        let status = response.status().as_u16();
        let headers = pairs(response.headers());
        Ok((status, headers, response.into_body()))
    }

    /// Starts an upload: the head and `first` bytes of the body, the stream
    /// left open (the response, and the stream to send the rest or stall).
    pub async fn start_upload(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        first: &[u8],
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), h2::Error> {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("https://localhost{path}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(()).expect("request");
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(req, false)?;
        stream.send_data(Bytes::copy_from_slice(first), false)?;
        Ok((response, stream))
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<H2Response, h2::Error> {
        let (status, headers, mut recv) = self.open(method, path, headers, body).await?;
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        let trailers = recv
            .trailers()
            .await?
            .map(|t| pairs(&t))
            .unwrap_or_default();
        Ok(H2Response {
            status,
            headers,
            body,
            trailers,
        })
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> H2Response {
        self.request("GET", path, headers, b"")
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

/// Sends `body` within the peer's flow-control window, then ends the stream.
async fn send_body(stream: &mut h2::SendStream<Bytes>, body: &[u8]) -> Result<(), h2::Error> {
    let mut rest = Bytes::copy_from_slice(body);
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len().min(1 << 20));
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .expect("stream open")?;
        let piece = rest.split_to(granted.min(rest.len()));
        stream.send_data(piece, rest.is_empty())?;
    }
    Ok(())
}

/// HTTP/2 frame types the raw client writes or looks for.
pub mod frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

/// One frame as read: type, flags, stream id, payload.
#[derive(Debug)]
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// An HTTP/2 connection written frame by frame: for requests the `h2`
/// crate refuses to send (upper-case names, duplicated pseudo-headers) and
/// for floods and resets.
pub struct RawH2 {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl RawH2 {
    /// Preface and an empty SETTINGS frame sent.
    pub async fn connect(port: u16, ca: &Path) -> Self {
        let mut tls = tls_connect(port, ca, &[b"h2"]).await;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        let mut raw = Self {
            tls,
            buf: Vec::new(),
        };
        raw.send_frame(frame::SETTINGS, 0, 0, &[])
            .await
            .expect("settings");
        raw
    }

    pub async fn send_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let len = payload.len() as u32;
        let mut head = [0u8; 9];
        head[..3].copy_from_slice(&len.to_be_bytes()[1..]);
        head[3] = kind;
        head[4] = flags;
        head[5..].copy_from_slice(&stream.to_be_bytes());
        self.tls.write_all(&head).await?;
        self.tls.write_all(payload).await?;
        self.tls.flush().await
    }

    /// A HEADERS frame with END_HEADERS (and END_STREAM) from literal fields.
    pub async fn send_headers(
        &mut self,
        stream: u32,
        fields: &[(&str, &str)],
        end_stream: bool,
    ) -> std::io::Result<()> {
        let block = hpack_literals(fields);
        let flags = frame::END_HEADERS | if end_stream { frame::END_STREAM } else { 0 };
        self.send_frame(frame::HEADERS, flags, stream, &block).await
    }

    /// Frames read until `within` passes with nothing new, or the server
    /// closes. SETTINGS from the server are acknowledged.
    pub async fn read_frames(&mut self, within: Duration) -> Vec<RawFrame> {
        let mut frames = Vec::new();
        loop {
            while let Some(f) = self.take_frame() {
                if f.kind == frame::SETTINGS && f.flags & 1 == 0 {
                    let _ = self.send_frame(frame::SETTINGS, 1, 0, &[]).await;
                }
                frames.push(f);
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(within, self.tls.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return frames,
            }
        }
    }

    /// How long until the server closes the connection (frames it sends
    /// meanwhile are read and dropped), or `None` if it is still open after
    /// `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        let mut chunk = [0u8; 16384];
        loop {
            let left = limit.checked_sub(started.elapsed())?;
            match tokio::time::timeout(left, self.tls.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    fn take_frame(&mut self) -> Option<RawFrame> {
        if self.buf.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        if self.buf.len() < 9 + len {
            return None;
        }
        let head: Vec<u8> = self.buf.drain(..9 + len).collect();
        Some(RawFrame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload: head[9..].to_vec(),
        })
    }
}

/// HPACK literal header fields without indexing, new names, no Huffman
/// coding (RFC 7541 §6.2.2): names go on the wire exactly as given.
pub fn hpack_literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_string(&mut out, name.as_bytes());
        hpack_string(&mut out, value.as_bytes());
    }
    out
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    // A 7-bit prefix integer (§5.1), H = 0.
    let mut len = s.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push((len % 128 + 128) as u8);
            len /= 128;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}
