//! Key pairs made at test time by the `openssl` CLI (nothing private is
//! checked in), tokens signed with them, and a loopback JWKS server whose
//! answer, availability and request count a test controls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

/// A key pair in PEM files under a fresh temporary directory.
pub struct KeyPair {
    pub algorithm: Algorithm,
    pub private_pem: Vec<u8>,
    pub public_file: PathBuf,
}

/// `openssl genpkey` arguments of each algorithm; `bits` for RSA.
pub fn key_pair(algorithm: Algorithm, bits: u32) -> KeyPair {
    let dir = std::env::temp_dir().join(unique("robeing-keys"));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public_file = dir.join("public.pem");
    let rsa_bits = format!("rsa_keygen_bits:{bits}");
    let args: Vec<&str> = match algorithm {
        Algorithm::RS256 => vec!["-algorithm", "RSA", "-pkeyopt", &rsa_bits],
        Algorithm::ES256 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Algorithm::EdDSA => vec!["-algorithm", "ED25519"],
        other => panic!("no key pair for {other:?}"),
    };
    let run = |cmd: &mut Command| {
        let out = cmd
            .output()
            .expect("openssl (scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("openssl")
        .arg("genpkey")
        .args(&args)
        .arg("-out")
        .arg(&private));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public_file));
    KeyPair {
        algorithm,
        private_pem: std::fs::read(&private).unwrap(),
        public_file,
    }
}

impl KeyPair {
    /// A token for `username` valid for ten minutes, its header naming `kid`.
    pub fn token(&self, kid: Option<&str>, username: &str) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = kid.map(str::to_owned);
        self.token_with_header(header, username)
    }

    pub fn token_with_header(&self, header: Header, username: &str) -> String {
        let claims = serde_json::json!({"username": username, "exp": now() + 600});
        self.token_signed(header, &claims)
    }

    /// A token with these claims, its header naming `kid`.
    pub fn token_with_claims(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = kid.map(str::to_owned);
        self.token_signed(header, claims)
    }

    fn token_signed(&self, header: Header, claims: &serde_json::Value) -> String {
        let key = match self.algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.private_pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.private_pem),
            _ => EncodingKey::from_ed_pem(&self.private_pem),
        }
        .unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    pub fn public_pem(&self) -> String {
        std::fs::read_to_string(&self.public_file).unwrap()
    }

    /// The public key as a JWK (RSA keys only).
    pub fn rsa_jwk(&self, kid: &str) -> serde_json::Value {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPublicKey::from_public_key_pem(&self.public_pem()).unwrap();
        serde_json::json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
        })
    }
}

/// A loopback HTTP server answering every request with `body` (200), while
/// it is up; counts the requests it answered.
pub struct JwksServer {
    pub port: u16,
    body: Arc<Mutex<Vec<u8>>>,
    up: Arc<AtomicBool>,
    pub requests: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(body: Vec<u8>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Self {
            port,
            body: Arc::new(Mutex::new(body)),
            up: Arc::new(AtomicBool::new(true)),
            requests: Arc::new(AtomicUsize::new(0)),
        };
        let (body, up, requests) = (
            server.body.clone(),
            server.up.clone(),
            server.requests.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                if !up.load(Ordering::SeqCst) {
                    // Down: the connection is closed before any answer.
                    drop(stream);
                    continue;
                }
                let body = body.lock().unwrap().clone();
                let requests = requests.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    pub fn serve(&self, body: Vec<u8>) {
        *self.body.lock().unwrap() = body;
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A JWKS document of these keys.
pub fn jwks_document(keys: &[serde_json::Value]) -> Vec<u8> {
    serde_json::json!({ "keys": keys }).to_string().into_bytes()
}
