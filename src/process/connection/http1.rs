//! The HTTP/1.1 keep-alive loop, owned by the gateway so that an idle
//! connection costs only its socket and [`GuardedStream`].
//!
//! Pingora's own loop (its blanket `ServerApp` for an `HttpServerApp`)
//! starts each request's future, 13.4 KB with the `rustls` feature, and
//! its header buffer before the request's first byte: both stay allocated
//! for as long as the client keeps the connection idle. Here each request
//! is handed to Pingora (`process_new_http`) only once its first bytes
//! have arrived: between requests the connection waits in a future of a
//! few hundred bytes, and the bytes of that first read wait in the guard
//! until Pingora reads them (one read, as before: no extra system call).
//!
//! What Pingora's loop did and this one keeps: the keep-alive settings it
//! carries from one request to the next (including a pipelined request's
//! bytes, which are served without waiting for the socket), the request
//! limit per connection, no keep-alive once the service drains, and idle
//! connections closed when it does. The header deadline and the idle bound
//! are the guard's, as before. HTTP/2 connections keep Pingora's path.

use std::fmt::Write as _;
use std::future::{poll_fn, Future as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

use super::GuardedStream;

/// The most bytes of a request's first read (Pingora's own first header
/// read is 4 KiB too); read on the stack, kept exactly as long.
const FIRST_READ_BYTES: usize = 4096;

/// Pingora's keep-alive timeout for a new connection's session; idle
/// connections are closed by the guard's `client_idle_timeout_seconds`.
const KEEPALIVE_SECONDS: u64 = 60;

/// Tells waiting connections that the service is draining.
#[derive(Default)]
pub(super) struct Draining {
    started: AtomicBool,
    notify: Notify,
}

impl Draining {
    pub(super) fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// Serves one HTTP/1.x connection's requests until it closes, is idle past
/// its bound, or the service drains.
pub(super) async fn serve<A: HttpServerApp + Send + Sync + 'static>(
    app: &Arc<A>,
    mut guarded: Box<GuardedStream>,
    draining: &Draining,
    shutdown: &ShutdownWatch,
) {
    let mut carried: Option<HttpPersistentSettings> = None;
    // Whether the next request starts with bytes Pingora carried over.
    let mut pipelined = false;
    // Registered once per connection (its first wait), not per request.
    let drained = draining.notify.notified();
    tokio::pin!(drained);
    loop {
        if !pipelined && !first_bytes(&mut guarded, draining, drained.as_mut()).await {
            return;
        }
        guarded.start_request();
        let mut session = ServerSession::new_http1(guarded);
        match carried.take() {
            Some(settings) => settings.apply_to_session(&mut session),
            None => {
                let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE_SECONDS);
                session.set_keepalive(keepalive);
                session.set_keepalive_reuses_remaining(
                    app.server_options().and_then(|o| o.keepalive_request_limit),
                );
            }
        }
        let Some(reused) = app.process_new_http(session, shutdown).await else {
            return;
        };
        let (stream, settings) = reused.consume();
        // The stream handed back is the one handed in.
        let Ok(stream) = stream.into_any().downcast::<GuardedStream>() else {
            return;
        };
        guarded = stream;
        // A request that began with a read of its own and of which Pingora
        // read only the header leaves nothing behind (the common case, and
        // cheap); otherwise the settings are asked.
        let nothing_left = !pipelined && guarded.read_only_the_header();
        pipelined = !nothing_left && settings.as_ref().is_some_and(may_hold_pipelined_bytes);
        carried = settings;
    }
}

/// Waits for the next request's first bytes and keeps them in the guard:
/// false when the connection closed, broke, passed its header deadline or
/// idle bound (the guard's reads end it), or the service drains while it
/// waits (bytes already there are served, as Pingora's own loop does).
async fn first_bytes(
    guarded: &mut GuardedStream,
    draining: &Draining,
    mut drained: Pin<&mut tokio::sync::futures::Notified<'_>>,
) -> bool {
    poll_fn(|cx| {
        let mut room = [MaybeUninit::<u8>::uninit(); FIRST_READ_BYTES];
        let mut buf = ReadBuf::uninit(&mut room);
        match Pin::new(&mut *guarded).poll_read(cx, &mut buf) {
            Poll::Pending => {
                guarded.release_write_buffer();
                if draining.started.load(Ordering::Acquire) || drained.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(false);
                }
                Poll::Pending
            }
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(false),
            Poll::Ready(Ok(())) => {
                guarded.keep_first_bytes(buf.filled());
                Poll::Ready(true)
            }
            Poll::Ready(Err(_)) => Poll::Ready(false),
        }
    })
    .await
}

/// Whether Pingora carried bytes of a pipelined next request over in the
/// settings: that request is served at once, not after the socket's next
/// bytes (an empty prefix is no request). Asked only when the guard's count
/// cannot rule it out (a body, a pipelined start): about 1,600
/// instructions. Pingora 0.9 has no accessor for them; its derived `Debug`
/// names the field, and this reads the first
/// characters of its value and stops. Should the text not be the one
/// expected (another Pingora), the answer is yes: the request is handed
/// over at once, as Pingora's own loop would, and only the idle memory is
/// lost.
fn may_hold_pipelined_bytes(settings: &HttpPersistentSettings) -> bool {
    /// The first characters of the field's value, then the `Debug` text is
    /// stopped.
    #[derive(Default)]
    struct Field {
        named: bool,
        value: [u8; 12],
        len: usize,
    }
    impl std::fmt::Write for Field {
        fn write_str(&mut self, piece: &str) -> std::fmt::Result {
            if !self.named {
                self.named = piece == "pipelined_prefix";
                return Ok(());
            }
            let n = piece.len().min(self.value.len() - self.len);
            self.value[self.len..self.len + n].copy_from_slice(&piece.as_bytes()[..n]);
            self.len += n;
            if self.len == self.value.len() {
                return Err(std::fmt::Error);
            }
            Ok(())
        }
    }
    let mut field = Field::default();
    let _ = write!(field, "{settings:?}");
    let value = &field.value[..field.len];
    !(value.starts_with(b": None") || value.starts_with(b": Some(b\"\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings as Pingora carries them after a request, through a real
    /// session over a loopback socket.
    async fn settings(prefix: Option<&[u8]>) -> HttpPersistentSettings {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let stream: pingora::protocols::Stream =
            Box::new(pingora::protocols::l4::stream::Stream::from(client));
        let session = ServerSession::new_http1(stream);
        let mut settings = HttpPersistentSettings::for_session(&session);
        if let Some(prefix) = prefix {
            settings.set_pipelined_prefix(bytes::BytesMut::from(prefix));
        }
        settings
    }

    #[tokio::test]
    async fn pipelined_bytes_are_seen_in_the_settings() {
        assert!(!may_hold_pipelined_bytes(&settings(None).await));
        assert!(!may_hold_pipelined_bytes(&settings(Some(b"")).await));
        let with = settings(Some(b"GET /next HTTP/1.1\r\n\r\n")).await;
        assert!(may_hold_pipelined_bytes(&with));
    }
}
