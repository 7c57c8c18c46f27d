//! Per-connection defenses, below HTTP: a total deadline for each request's
//! header section (slowloris), and a cap on concurrent connections per
//! client IP (slow-body and connection-hoarding clients) that engages only
//! under pressure: once the process holds `server.connection_pressure_threshold`
//! client connections. Below that, many clients behind one address (an
//! office NAT, a mobile carrier, an L4 balancer) are never refused.
//!
//! Pingora bounds each *read* of a request header (its keep-alive timeout),
//! not the whole header: a client sending one byte every 59 s holds a
//! connection forever. [`GuardedApp`] wraps every accepted stream in a
//! [`GuardedStream`] whose reads fail once the header has taken longer than
//! `server.header_timeout_ms`. The clock starts at accept for a connection's
//! first request and at the first byte of each later one; the proxy stops it
//! when the header is complete ([`header_complete`]) and re-arms it when the
//! request is done ([`awaiting_next_header`]). Peers in
//! `server.trusted_proxies` are not capped (they carry many clients); the
//! list is read at start, not on SIGHUP.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

mod http1;
mod listener;

pub use listener::ClientListeners;

use super::h2_headers::HeaderBlockWatch;
use crate::edge::limits::client_key;
use crate::errors::{envelope_wire, GatewayError};
use crate::observe::metrics::metrics;
use crate::wire::generate_request_id;

/// `[server]` limits applied per connection.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    /// HTTP/1.1: a connection idle between requests closes after this
    /// (`server.client_idle_timeout_seconds`).
    pub idle_timeout: Duration,
    /// 0: no cap.
    pub max_per_ip: usize,
    /// Open (capped) connections from which on `max_per_ip` applies; 0:
    /// always.
    pub pressure_threshold: usize,
    /// Peers not capped: `server.trusted_proxies` carry many clients.
    pub uncapped: Vec<ipnet::IpNet>,
    /// An IPv6 peer is counted by this prefix (`rate_limit.ipv6_prefix_length`).
    pub ipv6_prefix_length: u8,
}

/// A [`ServerApp`] (the HTTP proxy) behind the per-connection defenses.
pub struct GuardedApp<A> {
    app: Arc<A>,
    limits: ConnectionLimits,
    open: Arc<OpenConnections>,
    /// Ends the HTTP/1.1 connections waiting for their next request.
    draining: http1::Draining,
}

impl<A> GuardedApp<A> {
    pub fn new(app: A, limits: ConnectionLimits) -> Self {
        Self {
            app: Arc::new(app),
            limits,
            open: Arc::new(OpenConnections::default()),
            draining: http1::Draining::default(),
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A stream handed back for reuse is guarded already.
        if stream.as_any().is::<GuardedStream>() {
            return self.app.process_new(stream, shutdown).await;
        }
        let capped = client_ip(&stream)
            .filter(|ip| !self.limits.uncapped.iter().any(|net| net.contains(ip)))
            .map(|ip| client_key(ip, self.limits.ipv6_prefix_length));
        let slot = match capped {
            Some(ip) => match self.open.acquire(ip, &self.limits) {
                Some(slot) => Some(slot),
                None => {
                    metrics()
                        .connections_refused
                        .with_label_values(&["per_ip_limit"])
                        .inc();
                    return None;
                }
            },
            None => None,
        };
        let guarded = Box::new(GuardedStream::new(stream, &self.limits, slot));
        let h2c = self.app.server_options().is_some_and(|o| o.h2c);
        if guarded.h2.is_some() || h2c {
            // HTTP/2 (ALPN h2): Pingora's own path, a stream per request.
            return self.app.process_new(guarded, shutdown).await;
        }
        http1::serve(&self.app, guarded, &self.draining, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.draining.start();
        self.app.cleanup().await;
    }
}

/// The peer address of an accepted connection.
pub fn client_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    let addr = digest.peer_addr()?.as_inet()?.ip();
    Some(addr)
}

/// Open connections per client IP, and in all.
#[derive(Default)]
struct OpenConnections {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
}

impl OpenConnections {
    /// A slot for one more connection from `ip`, unless the process is
    /// under pressure and `ip` already holds its share.
    fn acquire(self: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Option<IpSlot> {
        if limits.max_per_ip == 0 {
            return Some(IpSlot { ip, open: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let under_pressure = counts.total >= limits.pressure_threshold;
        let count = counts.by_ip.entry(ip).or_insert(0);
        if under_pressure && *count >= limits.max_per_ip {
            return None;
        }
        *count += 1;
        counts.total += 1;
        Some(IpSlot {
            ip,
            open: Some(self.clone()),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.by_ip.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.by_ip.remove(&ip);
            }
            counts.total = counts.total.saturating_sub(1);
        }
    }
}

/// One counted connection; released when the connection is dropped.
struct IpSlot {
    ip: IpAddr,
    open: Option<Arc<OpenConnections>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.release(self.ip);
        }
    }
}

/// An accepted stream whose request headers must arrive within a deadline.
pub struct GuardedStream {
    inner: Stream,
    timeout: Duration,
    /// True between requests and while a header is being read.
    awaiting_header: AtomicBool,
    /// When the awaited header started: at accept, or at its first byte.
    header_started: Option<Instant>,
    /// Wakes the connection at the deadline. Armed only while a header spans
    /// reads, so a header that arrives in one read costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// HTTP/2: where header blocks start and end (the clock runs while one
    /// is open).
    h2: Option<HeaderBlockWatch>,
    /// HTTP/1.1 between requests: since when the connection is idle, and
    /// the bound. Pingora keeps such a connection forever, and its own
    /// keep-alive timeout would register a timer for every request.
    idle_timeout: Duration,
    idle_since: Option<Instant>,
    /// Armed once, reset only when it fires before the connection was idle
    /// that long: a busy connection costs about one reset per idle period.
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// HTTP/1.1: a request's first read, made while no request was in
    /// progress (`http1`), and how much of it Pingora has read since.
    first_bytes: Vec<u8>,
    first_bytes_read: usize,
    /// Writes gathered until a flush, as the 1,460-byte buffer of
    /// Pingora's own listeners did: a response's header and a small body
    /// leave in one system call (one TLS record). Taken on a request's first
    /// write, freed while the connection waits for its next request.
    write_buf: Vec<u8>,
    /// HTTP/1.x: bytes Pingora has read since the request started, and the
    /// length of the header it parsed (`header_complete`). Equal, for a
    /// request that began with a read of its own: Pingora holds no byte of
    /// a pipelined next request (`http1`).
    delivered: usize,
    header_len: AtomicUsize,
    _slot: Option<IpSlot>,
}

/// The most bytes gathered before a write goes out (one TCP segment, as
/// Pingora's listeners buffer); a larger write goes out directly.
const WRITE_BUFFER_BYTES: usize = 1460;

impl GuardedStream {
    fn new(inner: Stream, limits: &ConnectionLimits, slot: Option<IpSlot>) -> Self {
        // HTTP/2 (ALPN h2, after the TLS handshake) multiplexes requests on
        // the connection: the clock runs while a header block is open
        // (`h2_headers`), not per request.
        let http1 = !matches!(
            inner.selected_alpn_proto(),
            Some(pingora::protocols::ALPN::H2)
        );
        Self {
            inner,
            timeout: limits.header_timeout,
            awaiting_header: AtomicBool::new(http1),
            // The first request's clock starts at accept: connecting and
            // sending nothing is the cheapest slowloris of all.
            header_started: http1.then(Instant::now),
            timer: None,
            h2: (!http1).then(HeaderBlockWatch::default),
            idle_timeout: limits.idle_timeout,
            idle_since: None,
            idle_timer: None,
            first_bytes: Vec::new(),
            first_bytes_read: 0,
            write_buf: Vec::new(),
            delivered: 0,
            header_len: AtomicUsize::new(0),
            _slot: slot,
        }
    }

    /// A request starts: its bytes are counted from here.
    fn start_request(&mut self) {
        self.delivered = 0;
        *self.header_len.get_mut() = 0;
    }

    /// Whether Pingora has read the request's header and not one byte
    /// more (no body, no next request).
    fn read_only_the_header(&self) -> bool {
        let header_len = self.header_len.load(Ordering::Relaxed);
        header_len != 0 && header_len == self.delivered
    }

    /// Frees the write buffer of a connection waiting for its next request
    /// (an idle connection holds none); kept while it holds bytes.
    fn release_write_buffer(&mut self) {
        if self.write_buf.is_empty() && self.write_buf.capacity() != 0 {
            self.write_buf = Vec::new();
        }
    }

    /// Writes out what the write buffer holds.
    fn poll_write_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write_buf.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.write_buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.write_buf.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: false when they are to be written
    /// directly (as many as the buffer holds, or more).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.write_buf.len() + len > WRITE_BUFFER_BYTES {
            if let Err(e) = std::task::ready!(self.poll_write_buffered(cx)) {
                return Poll::Ready(Err(e));
            }
        }
        if len >= WRITE_BUFFER_BYTES {
            return Poll::Ready(Ok(false));
        }
        if self.write_buf.capacity() == 0 {
            self.write_buf.reserve_exact(WRITE_BUFFER_BYTES);
        }
        Poll::Ready(Ok(true))
    }

    /// Keeps a request's first read for Pingora's first read of it.
    fn keep_first_bytes(&mut self, bytes: &[u8]) {
        self.first_bytes = bytes.to_vec();
        self.first_bytes_read = 0;
    }

    /// Hands over what is left of the first read, and frees it once it is
    /// all read (an idle connection holds no buffer).
    fn read_first_bytes(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let left = &self.first_bytes[self.first_bytes_read..];
        if left.is_empty() {
            return false;
        }
        let n = left.len().min(buf.remaining());
        buf.put_slice(&left[..n]);
        self.first_bytes_read += n;
        if self.first_bytes_read == self.first_bytes.len() {
            self.first_bytes = Vec::new();
            self.first_bytes_read = 0;
        }
        true
    }

    /// HTTP/1.1, a read found nothing between requests: whether the
    /// connection has now been idle for `idle_timeout` (else the timer will
    /// wake it when it has).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        let deadline = since + self.idle_timeout;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            // It fired for an earlier idle period: wait for this one.
            timer.as_mut().reset(deadline);
        }
        false
    }

    /// Best effort: a 408 envelope (HTTP/1 only: on HTTP/2 the connection
    /// just closes), then the read fails and Pingora closes.
    fn refuse(&mut self, cx: &mut Context<'_>) -> io::Error {
        metrics().header_timeouts.inc();
        self.header_started = None;
        self.timer = None;
        if self.h2.is_some() {
            return io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP/2 header block deadline passed",
            );
        }
        let request_id = generate_request_id();
        // The one renderer's envelope: rendering a fixed error cannot fail.
        let wire = envelope_wire(&GatewayError::RequestTimeout, &request_id).unwrap_or_default();
        let inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(_)) = inner.poll_write(cx, &wire) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        io::Error::new(io::ErrorKind::TimedOut, "request header deadline passed")
    }
}

/// The guard of the session's downstream stream, if it has one.
fn guard_of(session: &pingora::proxy::Session) -> Option<&GuardedStream> {
    session
        .as_downstream()
        .stream()?
        .as_any()
        .downcast_ref::<GuardedStream>()
}

/// The request's header section is complete: stop its clock, and note its
/// length.
pub fn header_complete(session: &pingora::proxy::Session) {
    if let Some(guard) = guard_of(session) {
        guard.awaiting_header.store(false, Ordering::Relaxed);
        if let Some(http1) = session.as_downstream().as_http1() {
            // Parsed: the header's bytes are there.
            let len = http1.get_headers_raw_bytes().len();
            guard.header_len.store(len, Ordering::Relaxed);
        }
    }
}

/// The request is done: the next header's clock starts at its first byte.
pub fn awaiting_next_header(session: &pingora::proxy::Session) {
    if let Some(guard) = guard_of(session) {
        guard.awaiting_header.store(true, Ordering::Relaxed);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if this.read_first_bytes(buf) {
            this.delivered += buf.filled().len() - before;
            return Poll::Ready(Ok(()));
        }
        let awaiting = this.awaiting_header.load(Ordering::Relaxed);
        if !awaiting && this.h2.is_none() {
            this.header_started = None;
            this.timer = None;
        }
        let deadline = this.header_started.map(|started| started + this.timeout);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(this.refuse(cx)));
        }
        let filled = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match (&read, deadline) {
            // Idle between requests (HTTP/1.1): past the bound, the read
            // ends as if the client had closed, and Pingora closes quietly.
            (Poll::Pending, None) if awaiting && this.h2.is_none() && this.idle_expired(cx) => {
                return Poll::Ready(Ok(()));
            }
            (Poll::Pending, Some(deadline)) => {
                // The header spans reads: wake at its deadline even if no
                // further byte ever comes.
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.refuse(cx)));
                }
            }
            (Poll::Ready(Ok(())), _) if this.h2.is_some() => {
                let open = this
                    .h2
                    .as_mut()
                    .is_some_and(|h2| h2.feed(&buf.filled()[filled..]));
                if !open {
                    this.header_started = None;
                    this.timer = None;
                } else if this.header_started.is_none() {
                    this.header_started = Some(Instant::now());
                }
            }
            // The first byte of a later request: its header clock starts.
            (Poll::Ready(Ok(())), None) if awaiting && buf.filled().len() > filled => {
                this.header_started = Some(Instant::now());
                this.idle_since = None;
            }
            _ => {}
        }
        if read.is_ready() {
            this.delivered += buf.filled().len() - filled;
        }
        read
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match std::task::ready!(this.poll_room(cx, buf.len())) {
            Ok(true) => {
                this.write_buf.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            Ok(false) => Pin::new(&mut this.inner).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = std::task::ready!(self.poll_write_buffered(cx)) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = std::task::ready!(self.poll_write_buffered(cx)) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum();
        match std::task::ready!(this.poll_room(cx, len)) {
            Ok(true) => {
                for buf in bufs {
                    this.write_buf.extend_from_slice(buf);
                }
                Poll::Ready(Ok(len))
            }
            Ok(false) => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        // What is buffered goes out before the close.
        let _ = std::future::poll_fn(|cx| self.poll_write_buffered(cx)).await;
        self.inner.shutdown().await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        // Only Pingora's h2c check peeks, before any first bytes are kept
        // (those are read by the HTTP/1 loop alone).
        self.inner.try_peek(buf).await
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
