//! The client listeners: each listening socket bound (or taken over from
//! the predecessor in a handoff), accepted from, each connection's TLS
//! handshake, and the connection handed to the guarded app.
//!
//! Pingora's listening service does the same, but the task it spawns per
//! connection holds the TLS handshake's future inline: 8.8 KB, a 10 KiB
//! allocation, kept for as long as the connection lives, TLS or not. Here
//! the handshake is boxed and freed once done, so an idle connection's
//! task holds a few hundred bytes (docs/benchmarks.md, "Memory per idle
//! connection").
//!
//! What Pingora's service did and this one keeps: the listening sockets go
//! into Pingora's table of file descriptors under their `listen` address,
//! so a handoff passes them on (and a successor takes them from it); the
//! accept loops stop when the server shuts down, then the app cleans up
//! (draining); `accept()` failing for lack of file descriptors pauses that
//! loop for a second. What changed: the handshake has the header deadline
//! (`server.header_timeout_ms`, as nginx's `client_header_timeout` covers
//! it) rather than Pingora's fixed 60 s, and a failed handshake is the
//! client's doing: counted in `gateway_connections_refused_total`, logged
//! at DEBUG, not at ERROR.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, error, info, warn};
use pingora::apps::ServerApp;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::l4::listener::Listener;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use tokio::net::{TcpListener, TcpSocket};

use crate::observe::metrics::metrics;

/// Pingora's backlog for its listening sockets.
const BACKLOG: u32 = 65535;

/// How often, and how long apart, binding an address another process still
/// holds is tried again (Pingora's own figures: a predecessor started
/// without a handoff may take a while to let go).
const BIND_TRIES: usize = 30;
const BIND_TRY_STEP: Duration = Duration::from_secs(1);

/// `accept()` found no file descriptor left (EMFILE): it would fail again
/// at once, so the loop pauses while other connections close.
const EMFILE: i32 = 24;

/// One listening address, clear text or TLS.
struct Endpoint {
    addr: String,
    tls: Option<TlsEndpoint>,
}

/// A TLS listener's settings, and whether returning clients may resume.
struct TlsEndpoint {
    settings: TlsSettings,
    resumption: bool,
}

impl TlsEndpoint {
    /// The acceptor; without resumption, rustls neither sends TLS 1.3
    /// tickets nor keeps sessions (Pingora's settings leave rustls's
    /// defaults: two tickets a handshake, 256 sessions kept).
    fn acceptor(self) -> Acceptor {
        let mut acceptor = self.settings.build();
        if !self.resumption {
            let mut config = (**acceptor.acceptor.config()).clone();
            config.send_tls13_tickets = 0;
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            acceptor.acceptor = Arc::new(config).into();
        }
        acceptor
    }
}

/// The proxy's client-facing listeners, serving `app`.
pub struct ClientListeners<A> {
    name: String,
    /// Every `listen` address, kept for Pingora's table of inherited
    /// sockets (the endpoints are taken when the service starts).
    addresses: Vec<String>,
    endpoints: Vec<Endpoint>,
    app: Option<Arc<A>>,
    handshake_timeout: Duration,
}

impl<A> ClientListeners<A> {
    /// `handshake_timeout`: how long a client has to finish its TLS
    /// handshake.
    pub fn new(name: &str, app: A, handshake_timeout: Duration) -> Self {
        Self {
            name: name.to_string(),
            addresses: Vec::new(),
            endpoints: Vec::new(),
            app: Some(Arc::new(app)),
            handshake_timeout,
        }
    }

    /// A clear-text listener (HTTP/1.x, or h2c when the app allows it).
    pub fn add_tcp(&mut self, addr: &str) {
        self.addresses.push(addr.to_string());
        self.endpoints.push(Endpoint {
            addr: addr.to_string(),
            tls: None,
        });
    }

    /// A TLS listener; `resumption`: `session_resumption`.
    pub fn add_tls(&mut self, addr: &str, settings: TlsSettings, resumption: bool) {
        self.addresses.push(addr.to_string());
        self.endpoints.push(Endpoint {
            addr: addr.to_string(),
            tls: Some(TlsEndpoint {
                settings,
                resumption,
            }),
        });
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for ClientListeners<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let Some(app) = self.app.take() else {
            return;
        };
        let mut loops = Vec::new();
        for endpoint in self.endpoints.drain(..) {
            let listener = match listen(&endpoint.addr, fds.as_ref()).await {
                Ok(listener) => Arc::new(Listener::from(listener)),
                Err(e) => {
                    // Serving without one of the configured listeners would
                    // look healthy and be wrong.
                    error!("cannot listen on {}: {e}", endpoint.addr);
                    std::process::exit(1);
                }
            };
            let tls = endpoint.tls.map(|tls| Arc::new(tls.acceptor()));
            for _ in 0..listeners_per_fd.max(1) {
                let accepting = AcceptLoop {
                    addr: endpoint.addr.clone(),
                    listener: listener.clone(),
                    tls: tls.clone(),
                    app: app.clone(),
                    handshake_timeout: self.handshake_timeout,
                };
                loops.push(tokio::spawn(accepting.run(shutdown.clone())));
            }
        }
        for accepting in loops {
            let _ = accepting.await;
        }
        app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.addresses.clone())
    }
}

/// The listening socket for `addr`: the predecessor's, when the handoff
/// passed one on, else a new one, entered in the table so that a successor
/// gets it.
async fn listen(addr: &str, fds: Option<&ListenFds>) -> std::io::Result<TcpListener> {
    let Some(fds) = fds else {
        return bind(addr).await;
    };
    let inherited = fds.lock().get(addr).copied();
    if let Some(fd) = inherited {
        // SAFETY: the table's descriptors are listening sockets this
        // process received in the handoff and owns; each address is taken
        // once (the service starts once).
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        listener.set_nonblocking(true)?;
        return TcpListener::from_std(listener);
    }
    let listener = bind(addr).await?;
    fds.lock().add(addr.to_string(), listener.as_raw_fd());
    Ok(listener)
}

/// Binds `addr` as Pingora does: `SO_REUSEADDR`, its backlog, and patience
/// with an address still held by a process on its way out.
async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let sock_addr: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })?;
    let mut tries = 0;
    loop {
        let socket = match sock_addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(sock_addr) {
            Ok(()) => return socket.listen(BACKLOG),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries + 1 < BIND_TRIES => {
                tries += 1;
                warn!("{addr} is in use, will try again");
                tokio::time::sleep(BIND_TRY_STEP).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One accept loop of one listening socket.
struct AcceptLoop<A> {
    addr: String,
    listener: Arc<Listener>,
    tls: Option<Arc<Acceptor>>,
    app: Arc<A>,
    handshake_timeout: Duration,
}

impl<A: ServerApp + Send + Sync + 'static> AcceptLoop<A> {
    async fn run(self, mut shutdown: ShutdownWatch) {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                changed = shutdown.changed() => match changed {
                    // The first value, seen again: not a shutdown.
                    Ok(()) if !*shutdown.borrow() => continue,
                    _ => {
                        info!("Shutting down {}", self.addr);
                        break;
                    }
                },
            };
            match accepted {
                Ok(stream) => {
                    let connection = Connection {
                        stream,
                        tls: self.tls.clone(),
                        app: self.app.clone(),
                        handshake_timeout: self.handshake_timeout,
                    };
                    // Pingora's handle: without work stealing it spreads
                    // connections over its threads.
                    pingora_runtime::current_handle().spawn(connection.serve(shutdown.clone()));
                }
                Err(e) => {
                    warn!("accept() on {} failed: {e}", self.addr);
                    if e.raw_os_error() == Some(EMFILE) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// An accepted connection, before its handshake.
struct Connection<A> {
    stream: L4Stream,
    tls: Option<Arc<Acceptor>>,
    app: Arc<A>,
    handshake_timeout: Duration,
}

impl<A: ServerApp + Send + Sync + 'static> Connection<A> {
    /// Handshakes, then serves the connection until it closes. This is the
    /// future the connection's task holds for its whole life: the handshake
    /// is boxed so that its state is freed when it is done.
    async fn serve(self, shutdown: ShutdownWatch) {
        let Connection {
            mut stream,
            tls,
            app,
            handshake_timeout,
        } = self;
        // Pingora's accept sets this too: small responses go out at once.
        if let Err(e) = stream.set_nodelay() {
            debug!("TCP_NODELAY on an accepted connection: {e}");
        }
        let stream: Stream = match tls {
            None => Box::new(stream),
            Some(acceptor) => {
                match Box::pin(handshake(stream, acceptor, handshake_timeout)).await {
                    Some(stream) => stream,
                    None => return,
                }
            }
        };
        let mut next = app.process_new(stream, &shutdown).await;
        while let Some(stream) = next {
            next = app.process_new(stream, &shutdown).await;
        }
    }
}

/// The TLS handshake within its deadline; `None` (counted) when it fails.
async fn handshake(
    stream: L4Stream,
    acceptor: Arc<Acceptor>,
    deadline: Duration,
) -> Option<Stream> {
    // Kept for the failure's log line; written out only then.
    let peer = stream
        .get_socket_digest()
        .and_then(|digest| digest.peer_addr().cloned());
    let peer = || peer.as_ref().map_or_else(String::new, ToString::to_string);
    match tokio::time::timeout(deadline, acceptor.tls_handshake(stream)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        Ok(Err(e)) => {
            metrics()
                .connections_refused
                .with_label_values(&["tls_handshake_failed"])
                .inc();
            debug!("TLS handshake with {} failed: {e}", peer());
            None
        }
        Err(_) => {
            metrics()
                .connections_refused
                .with_label_values(&["tls_handshake_timeout"])
                .inc();
            debug!("TLS handshake with {} passed its deadline", peer());
            None
        }
    }
}
