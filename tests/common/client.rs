//! A raw HTTP/1.1 client that sends request targets exactly as written,
//! and the assertions on what comes back.

use super::*;

/// How a request failed, as a client sees it.
#[derive(Debug)]
pub enum ClientError {
    /// The connection closed before any byte of a response: the request was
    /// not processed, and an idempotent one may be sent again (RFC 9112 §9.3.1).
    NoResponse(String),
    /// A response started and broke, or was malformed.
    Broken(String),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        json_of(&self.body)
    }

    /// The values of header `name` as the echo upstream received them.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        echoed_header(&self.json(), name)
    }
}

/// A response body as JSON, or a panic showing what it was.
pub fn json_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(body)))
}

/// The values of header `name` in the echo upstream's answer `echo`.
pub fn echoed_header(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("echo headers")
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|pair| pair[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// One client connection; requests on it reuse the connection.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_nodelay(true).ok();
        Self {
            stream: BufReader::new(stream),
        }
    }

    pub async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_nodelay(true).ok();
        Self {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("send");
    }

    /// Sends a request; `Content-Length` is added for a non-empty body.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, target, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {target}: {e:?}"))
    }

    pub async fn try_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Response, ClientError> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: gateway.test\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&bytes)
            .await
            .map_err(|e| ClientError::NoResponse(e.to_string()))?;
        self.try_read_response().await
    }

    /// Reads a status line and headers.
    pub async fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        self.try_read_head().await.expect("response head")
    }

    async fn try_read_head(&mut self) -> Result<(u16, Vec<(String, String)>), ClientError> {
        let mut line = String::new();
        match self.stream.read_line(&mut line).await {
            Ok(0) => return Err(ClientError::NoResponse("closed".into())),
            Err(e) if line.is_empty() => return Err(ClientError::NoResponse(e.to_string())),
            Err(e) => return Err(ClientError::Broken(e.to_string())),
            Ok(_) => {}
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Broken(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream
                .read_line(&mut line)
                .await
                .map_err(|e| ClientError::Broken(e.to_string()))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l
                .split_once(':')
                .ok_or_else(|| ClientError::Broken(format!("bad header {l:?}")))?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        Ok((status, headers))
    }

    /// Reads one chunk of a chunked body; `None` at the terminating chunk.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        self.try_read_chunk().await.expect("chunk")
    }

    async fn try_read_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let broken = |e: std::io::Error| ClientError::Broken(e.to_string());
        let mut line = String::new();
        self.stream.read_line(&mut line).await.map_err(broken)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| ClientError::Broken(format!("bad chunk size {line:?}")))?;
        let mut data = vec![0; size];
        self.stream.read_exact(&mut data).await.map_err(broken)?;
        let mut crlf = [0; 2];
        self.stream.read_exact(&mut crlf).await.map_err(broken)?;
        Ok((size > 0).then_some(data))
    }

    pub async fn read_response(&mut self) -> Response {
        self.try_read_response().await.expect("response")
    }

    pub async fn try_read_response(&mut self) -> Result<Response, ClientError> {
        let (status, headers) = self.try_read_head().await?;
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let broken = |e: std::io::Error| ClientError::Broken(e.to_string());
        let mut body = Vec::new();
        if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
            // no body
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            while let Some(chunk) = self.try_read_chunk().await? {
                body.extend_from_slice(&chunk);
            }
        } else if let Some(len) = find("content-length") {
            body.resize(
                len.parse()
                    .map_err(|_| ClientError::Broken(format!("content-length {len}")))?,
                0,
            );
            self.stream.read_exact(&mut body).await.map_err(broken)?;
        } else {
            self.stream.read_to_end(&mut body).await.map_err(broken)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    pub fn into_inner(self) -> BufReader<TcpStream> {
        self.stream
    }
}

/// One request on its own connection.
pub async fn send(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    Conn::connect(port)
        .await
        .request(method, target, headers, body)
        .await
}

/// A connection to 127.0.0.1:`port` from the loopback address `source`
/// (127.0.0.0/8 is all loopback: a second client address without setup).
pub async fn connect_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("IPv4 source address"))?;
    socket.connect(([127, 0, 0, 1], port).into()).await
}

pub async fn get(port: u16, target: &str, headers: &[(String, String)]) -> Response {
    send(port, "GET", target, headers, b"").await
}

/// The value of one metric series, as scraped now (0 when absent).
pub async fn metric_value(admin_port: u16, series: &str) -> u64 {
    let metrics =
        String::from_utf8_lossy(&get(admin_port, "/metrics", &[]).await.body).into_owned();
    metrics
        .lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(name, _)| name == series))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The value of one series, `None` while it is not exported.
pub async fn metric_series(admin_port: u16, name: &str) -> Option<u64> {
    let metrics =
        String::from_utf8_lossy(&get(admin_port, "/metrics", &[]).await.body).into_owned();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until series `name` is `want`, at most `limit`; the time it took.
pub async fn wait_for_metric(admin_port: u16, name: &str, want: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if metric_series(admin_port, name).await == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} is {:?}, not {want}, after {limit:?}",
            metric_series(admin_port, name).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `body` in HTTP/1.1 chunked framing, `piece` bytes a chunk.
pub fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut framed = Vec::with_capacity(body.len() + body.len() / piece * 8 + 8);
    for chunk in body.chunks(piece) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    framed
}

/// Headers from string pairs.
pub fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// Asserts `resp` is the gateway's envelope with `status` and `code`.
pub fn assert_envelope(resp: &Response, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {code}, got {} {:?}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let header_id = resp.header("x-request-id").expect("X-Request-Id header");
    assert_eq!(v["error"]["request_id"], header_id);
    if status == 401 {
        assert!(
            resp.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "401 without WWW-Authenticate: Bearer"
        );
    } else {
        assert!(resp.header("www-authenticate").is_none());
    }
}
