//! The limiter's connections to Redis: each worker thread's own, on which
//! a request sends its decision itself (written, answered and read on the
//! request's task, with no other task in between), the batch driver's and
//! the dependency probe's (README, "Running several instances").
//!
//! A thread's connection is leased to one request at a time. A request
//! that finds it busy queues its decision for the driver's next batch
//! (in [`super`]); one that finds none starts opening it, in a task of the
//! thread's runtime and within [`super::CONNECT_BUDGET`], and queues
//! meanwhile, so a request never waits for a connect. A call that fails,
//! times out or is abandoned closes the connection (a late answer must
//! not be read as the next one's); the thread's next request opens it
//! again. So does an idle connection with something to read: Redis
//! closed it (restarted, `CLIENT KILL`, its `timeout`), and a call on it
//! would fail and fall back although a new connection would be answered
//! ([`Connection::if_still_open`]).
//!
//! One connection per thread, not one per process: the gateway's threads
//! each run their own runtime (`work_stealing = false`), and a socket is
//! driven by the runtime that opened it, so a shared one would wake
//! another thread for every answer.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use redis::{ConnectionAddr, ConnectionInfo};
use rustls::pki_types::ServerName;
use thread_local::ThreadLocal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use super::resp::{self, Reply};
use super::{StoreError, CONNECT_BUDGET};

/// Largest reply read before the connection is taken as broken (a full
/// batch's answer is under 8 KiB; an error is a line).
const MAX_REPLY: usize = 16 * 1024;

/// Where and how the connections are opened: the store's URL, read once.
pub struct Endpoint {
    address: Address,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

enum Address {
    Tcp(String, u16),
    Tls {
        host: String,
        port: u16,
        connector: TlsConnector,
        name: ServerName<'static>,
    },
    Unix(PathBuf),
}

impl Endpoint {
    /// The endpoint of the URL redis-rs parsed. `root_cert`: PEM trust
    /// anchors of `rate_limit.redis_ca_file`, else the system's, as
    /// redis-rs loads them. `rediss://...#insecure` (no certificate
    /// check) is refused: the store decides who may pass.
    pub fn of(info: &ConnectionInfo, root_cert: Option<&[u8]>) -> Result<Self, String> {
        let address = match &info.addr {
            ConnectionAddr::Tcp(host, port) => Address::Tcp(host.clone(), *port),
            ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err(
                    "#insecure turns the certificate check off, which the gateway \
                            does not do (rate_limit.redis_ca_file names the roots to trust)"
                        .into(),
                )
            }
            ConnectionAddr::TcpTls { host, port, .. } => Address::Tls {
                host: host.clone(),
                port: *port,
                connector: TlsConnector::from(Arc::new(tls_client(root_cert)?)),
                name: ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host}: not a TLS server name: {e}"))?,
            },
            ConnectionAddr::Unix(path) => Address::Unix(path.clone()),
        };
        Ok(Self {
            address,
            username: info.redis.username.clone(),
            password: info.redis.password.clone(),
            db: info.redis.db,
        })
    }
}

/// The rustls client of `rediss://`, on the gateway's crypto provider.
fn tls_client(root_cert: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let roots = match root_cert {
        Some(pem) => crate::tls::root_store_from_pem(pem, Path::new("rate_limit.redis_ca_file"))?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err("no system trust anchors for rediss:// \
                            (set rate_limit.redis_ca_file)"
                    .into());
            }
            roots
        }
    };
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::crypto::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One open connection and its buffers (kept from call to call).
pub struct Connection {
    stream: Stream,
    /// `EVALSHA <the script's hash>`, encoded once.
    evalsha: Arc<[u8]>,
    command: Vec<u8>,
    reply: Vec<u8>,
    numbers: Vec<u64>,
}

impl Connection {
    /// Connects, then `AUTH` and `SELECT` as the URL says. `evalsha`:
    /// [`resp::verb_and_body`] of `EVALSHA <the script's hash>`.
    pub async fn open(endpoint: &Endpoint, evalsha: Arc<[u8]>) -> Result<Self, StoreError> {
        let stream: Stream = match &endpoint.address {
            Address::Tcp(host, port) => Box::new(tcp(host, *port).await?),
            Address::Tls {
                host,
                port,
                connector,
                name,
            } => {
                let tcp = tcp(host, *port).await?;
                Box::new(connector.connect(name.clone(), tcp).await?)
            }
            Address::Unix(path) => Box::new(UnixStream::connect(path).await?),
        };
        let mut connection = Self {
            stream,
            evalsha,
            command: Vec::with_capacity(256),
            reply: Vec::with_capacity(256),
            numbers: Vec::with_capacity(3),
        };
        if let Some(password) = &endpoint.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            auth.extend(endpoint.username.as_deref().map(str::as_bytes));
            auth.push(password.as_bytes());
            connection.expect_status(&auth).await?;
        }
        if endpoint.db != 0 {
            let db = endpoint.db.to_string();
            connection
                .expect_status(&[b"SELECT", db.as_bytes()])
                .await?;
        }
        Ok(connection)
    }

    /// This idle connection, or `None` (closing it) when it has something
    /// to read: an end of stream or an error (Redis closed it while it was
    /// idle) or bytes nobody asked for. Either way it cannot carry the
    /// next call. One poll with a no-op waker: the readiness the event
    /// loop already saw, with no system call while there is none (the
    /// last read of a call was short, which clears it).
    pub fn if_still_open(mut self) -> Option<Self> {
        let mut scratch = [0u8; 64];
        let mut buf = ReadBuf::new(&mut scratch);
        let mut cx = Context::from_waker(Waker::noop());
        let closed = Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut buf)
            .is_ready();
        (!closed).then_some(self)
    }

    /// `PING`, answered: the dependency probe.
    pub async fn ping(&mut self) -> Result<(), StoreError> {
        self.expect_status(&[b"PING"]).await
    }

    async fn expect_status(&mut self, parts: &[&[u8]]) -> Result<(), StoreError> {
        self.command.clear();
        resp::command(&mut self.command, parts);
        match self.round_trip().await? {
            Answer::Status => Ok(()),
            other => Err(other.unexpected(0)),
        }
    }

    /// The GCRA script's answer for `decisions`, three numbers each
    /// (allowed 0/1, tat - now, wait), in order. `script`: its text, sent
    /// when Redis does not know its hash.
    pub async fn decide<'a, I>(&mut self, script: &str, decisions: I) -> Result<&[u64], StoreError>
    where
        I: ExactSizeIterator<Item = resp::Decision<'a>> + Clone,
    {
        let n = decisions.len();
        self.command.clear();
        resp::script_call(&mut self.command, &self.evalsha, decisions.clone());
        let answer = match self.round_trip().await? {
            // A Redis restarted or flushed since: EVAL runs the script and
            // keeps it for the next EVALSHA.
            Answer::NoScript => {
                self.command.clear();
                let eval = resp::verb_and_body(b"EVAL", script.as_bytes());
                resp::script_call(&mut self.command, &eval, decisions);
                self.round_trip().await?
            }
            answer => answer,
        };
        match answer {
            Answer::Integers if self.numbers.len() == 3 * n => Ok(&self.numbers),
            other => Err(other.unexpected(n)),
        }
    }

    /// Writes the command and reads its one reply (an integer array's
    /// numbers into `numbers`).
    async fn round_trip(&mut self) -> Result<Answer, StoreError> {
        self.stream.write_all(&self.command).await?;
        self.stream.flush().await?;
        self.reply.clear();
        // Nothing to parse before the first read.
        while self.stream.read_buf(&mut self.reply).await? != 0 {
            match resp::reply(&self.reply, &mut self.numbers)
                .map_err(|e| StoreError::BadReply(e.0))?
            {
                Some((reply, used)) if used == self.reply.len() => return Ok(Answer::of(reply)),
                // Bytes nobody asked for: the connection is out of step.
                Some(_) => return Err(StoreError::BadReply("more than one reply")),
                None if self.reply.len() >= MAX_REPLY => {
                    return Err(StoreError::BadReply("a reply longer than any answer"))
                }
                None => {}
            }
        }
        Err(StoreError::Io(Arc::new(
            io::ErrorKind::UnexpectedEof.into(),
        )))
    }
}

async fn tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    // A command is one small write, answered before the next.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A reply, owned (so that the connection can be written again).
enum Answer {
    Status,
    NoScript,
    Error(String),
    /// In the connection's `numbers`.
    Integers,
}

impl Answer {
    fn of(reply: Reply<'_>) -> Self {
        match reply {
            Reply::Status(_) => Self::Status,
            Reply::Error(text) if text.starts_with(b"NOSCRIPT") => Self::NoScript,
            Reply::Error(text) => Self::Error(String::from_utf8_lossy(text).into_owned()),
            Reply::Integers => Self::Integers,
        }
    }

    /// The error of an answer that is not the one due for `decisions`.
    fn unexpected(self, decisions: usize) -> StoreError {
        match self {
            Self::Error(text) => StoreError::Refused(text),
            Self::NoScript => StoreError::Refused("NOSCRIPT after EVAL".into()),
            Self::Status => StoreError::BadReply("a status where numbers were due"),
            Self::Integers => StoreError::BadAnswer(decisions),
        }
    }
}

/// Every thread's connection slot.
pub struct ThreadConnections {
    endpoint: Arc<Endpoint>,
    /// `EVALSHA <hash>`, encoded once.
    evalsha: Arc<[u8]>,
    slots: ThreadLocal<Arc<Slot>>,
}

#[derive(Default)]
struct Slot(Mutex<State>);

#[derive(Default)]
enum State {
    #[default]
    Missing,
    Opening,
    Leased,
    Idle(Connection),
}

impl ThreadConnections {
    pub fn new(endpoint: Arc<Endpoint>, evalsha: Arc<[u8]>) -> Self {
        Self {
            endpoint,
            evalsha,
            slots: ThreadLocal::new(),
        }
    }

    /// This thread's connection if it is idle. `None` while it is leased
    /// or opening; when there is none, `None` and it starts opening.
    pub fn lease(&self) -> Option<Lease<'_>> {
        let slot = self.slots.get_or(Arc::default);
        let mut state = slot.0.lock().ok()?;
        let idle = match std::mem::replace(&mut *state, State::Leased) {
            State::Idle(connection) => connection.if_still_open(),
            State::Missing => None,
            busy => {
                *state = busy;
                return None;
            }
        };
        match idle {
            Some(connection) => Some(Lease {
                slot,
                connection: Some(connection),
            }),
            // None, or one Redis closed (dropped here): opened again while
            // this decision queues.
            None => {
                *state = State::Opening;
                drop(state);
                self.open(slot.clone());
                None
            }
        }
    }

    /// Opens the slot's connection in a task of this thread's runtime.
    fn open(&self, slot: Arc<Slot>) {
        let (endpoint, evalsha) = (self.endpoint.clone(), self.evalsha.clone());
        tokio::spawn(async move {
            let opening = Connection::open(&endpoint, evalsha);
            let next = match tokio::time::timeout(CONNECT_BUDGET, opening).await {
                Ok(Ok(connection)) => State::Idle(connection),
                // The driver's connection meets the same failure and says
                // so (WARN, the store's gauge); this one stays quiet.
                Ok(Err(e)) => {
                    log::debug!("shared rate limits: a thread's connection to Redis: {e}");
                    State::Missing
                }
                Err(_) => State::Missing,
            };
            if let Ok(mut state) = slot.0.lock() {
                *state = next;
            }
        });
    }
}

/// A thread's connection, leased to one request. Given back after a call
/// that was answered; dropped otherwise, which closes it.
pub struct Lease<'a> {
    slot: &'a Slot,
    connection: Option<Connection>,
}

impl Lease<'_> {
    pub fn connection(&mut self) -> Option<&mut Connection> {
        self.connection.as_mut()
    }

    pub fn give_back(mut self) {
        if let (Some(connection), Ok(mut state)) = (self.connection.take(), self.slot.0.lock()) {
            *state = State::Idle(connection);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.connection.is_some() {
            if let Ok(mut state) = self.slot.0.lock() {
                *state = State::Missing;
            }
        }
    }
}

/// The connection's transport: TCP, TLS over TCP, or a Unix socket.
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

type Stream = Box<dyn Transport>;
