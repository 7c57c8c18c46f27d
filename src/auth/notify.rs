//! Identity changes pushed by PostgreSQL (`[users] notify_channel`): a
//! background service holds one dedicated connection (outside the lookup
//! pool) that `LISTEN`s on the channel; each notification's payload is a
//! username whose row changed (`conf/user-notify.sql` installs the trigger),
//! and that username leaves the identity cache, found or not found. A user
//! deleted or renamed is refused at once, a user created right after a 404
//! is served at once.
//!
//! The verified-token cache maps a token to its username only, never to an
//! identity, so it needs no eviction: the next request resolves the
//! username through the (now emptied) cache entry.
//!
//! The connection is checked every [`PING_EVERY`]; when it drops, the
//! service reconnects with a back-off from 100 ms to 5 s, and
//! `gateway_user_notify_up` is 0 meanwhile (the cache TTL still bounds
//! staleness). Once back it assumes it missed notifications and clears the
//! identity cache.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Socket};

use super::database::Database;
use crate::auth::identity::IdentityCache;
use crate::live::Live;
use crate::observe::metrics::metrics;
use crate::observe::process_log::with_causes;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the idle connection proves it is still there.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// Where to listen: built by the config plan from `[users]`.
#[derive(Clone)]
pub struct NotifySource {
    pub database: Database,
    /// Checked to be a plain identifier when the config was validated.
    pub channel: String,
}

pub struct UserNotifications {
    /// The running configuration's identity cache and LISTEN settings.
    identity: Live<Arc<IdentityCache>>,
    source: Live<Option<NotifySource>>,
}

impl UserNotifications {
    pub fn new(identity: Live<Arc<IdentityCache>>, source: Live<Option<NotifySource>>) -> Self {
        Self { identity, source }
    }

    /// One connection's life: connect, LISTEN, clear the cache, then evict
    /// on every notification until the connection fails.
    async fn listen(&self, source: &NotifySource, backoff: &mut Duration) -> Result<(), String> {
        let (sender, mut usernames) = tokio::sync::mpsc::unbounded_channel::<String>();
        let config = &source.database.config;
        let (client, driver) = match &source.database.tls {
            Some(tls) => connect(config, tls.clone(), sender).await?,
            None => connect(config, NoTls, sender).await?,
        };
        let listening = client
            .batch_execute(&format!("LISTEN {}", source.channel))
            .await;
        if let Err(e) = listening {
            driver.abort();
            return Err(format!("LISTEN failed: {e}"));
        }
        // Whatever changed while nobody listened is unknown: forget it all.
        self.identity.get().clear();
        metrics().user_notify_up.set(1);
        *backoff = FIRST_BACKOFF;
        log::info!("listening for user changes on channel {}", source.channel);
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                username = usernames.recv() => match username {
                    Some(username) => {
                        self.identity.get().evict(&username);
                        metrics().user_notify_evictions.inc();
                    }
                    None => break,
                },
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(PING_EVERY, client.simple_query("SELECT 1")).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        driver.abort();
        Err("connection lost".to_owned())
    }
}

/// Opens the LISTEN connection (plain or TLS) and spawns its driver.
async fn connect<T>(
    config: &tokio_postgres::Config,
    tls: T,
    sender: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<String>), String>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| format!("cannot connect: {}", with_causes(&e)))?;
    Ok((
        client,
        tokio::spawn(forward_notifications(connection, sender)),
    ))
}

/// Drives the connection (plain or TLS), sending each notification's
/// payload on; returns why it ended.
async fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    sender: tokio::sync::mpsc::UnboundedSender<String>,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                let _ = sender.send(n.payload().to_owned());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return format!("connection failed: {e}"),
            None => return "connection closed".to_owned(),
        }
    }
}

#[async_trait]
impl BackgroundService for UserNotifications {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let source = self.source.get();
            let outcome = match &source {
                None => Ok(()),
                Some(source) => tokio::select! {
                    _ = shutdown.changed() => return,
                    outcome = self.listen(source, &mut backoff) => outcome,
                },
            };
            metrics().user_notify_up.set(0);
            let wait = match outcome {
                // Not configured (now): look again after a while (SIGHUP).
                Ok(()) => Duration::from_secs(1),
                Err(e) => {
                    log::warn!("user change notifications (users.database_url_env): {e}; retrying in {backoff:?} (cache TTL bounds staleness meanwhile)");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
