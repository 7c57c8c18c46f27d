//! The identity of a request's user: username -> UUID through the
//! [`directory`](crate::auth::directory), and the cache in front of it.
//!
//! [`IdentityCache`] fronts either directory source with a bounded quick_cache: hits live
//! for `cache_ttl_seconds`, misses (unknown users) for the shorter
//! `negative_cache_ttl_seconds`, errors are never cached, and concurrent
//! lookups of one username share a single directory query. When the
//! directory fails, a cached answer is used for up to
//! `stale_if_error_seconds` past its TTL (re-asked once a second); a user
//! with no cached answer fails closed.

use std::path::Path;
use std::time::{Duration, Instant};

use http::HeaderValue;
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use uuid::Uuid;

use super::directory::{DirectoryUser, FileDirectory, PostgresDirectory, UserDirectory};
use crate::config::{ConfigError, UserSource, UsersConfig};
use crate::errors::GatewayError;
use crate::observe::metrics::metrics;

/// The identity headers of one user, ready to insert upstream, and since
/// when their tokens are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: Uuid,
    pub user_id: HeaderValue,
    pub username: HeaderValue,
    /// Tokens issued before this (Unix seconds) are refused.
    pub tokens_valid_after: Option<u64>,
}

impl Identity {
    fn new(username: &str, user: DirectoryUser) -> Option<Self> {
        let mut buf = Uuid::encode_buffer();
        let hyphenated = user.id.hyphenated().encode_lower(&mut buf);
        Some(Self {
            id: user.id,
            user_id: HeaderValue::from_str(hyphenated).ok()?,
            username: HeaderValue::from_bytes(username.as_bytes()).ok()?,
            tokens_valid_after: user.tokens_valid_after,
        })
    }

    /// Whether a token issued at `iat` (Unix seconds) is still valid for
    /// this user: always, unless they logged out everywhere after it. JWT
    /// times are whole seconds, so a token issued in the second of the
    /// revocation stays valid, as with Keycloak's not-before; a token
    /// without `iat` is refused once the user has revoked any.
    pub fn accepts_token_issued(&self, iat: Option<u64>) -> bool {
        match (self.tokens_valid_after, iat) {
            (None, _) => true,
            (Some(after), Some(iat)) => iat >= after,
            (Some(_), None) => false,
        }
    }
}

#[derive(Debug, Clone)]
struct CachedLookup {
    /// `None`: the directory said the user does not exist.
    identity: Option<Identity>,
    expires_at: Instant,
    /// Past `expires_at`, the answer may still be used while the directory
    /// is failing, until this instant.
    usable_until: Instant,
}

/// While the directory fails, a stale answer is re-checked this often (one
/// query per user per interval, not one per request).
const STALE_RETRY: Duration = Duration::from_secs(1);

/// One cached user as handed from a process to its successor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotEntry {
    pub username: String,
    pub user_id: String,
    /// Absent in a predecessor's file from before revocation.
    #[serde(default)]
    pub tokens_valid_after: Option<u64>,
    pub remaining_ms: u64,
}

/// Username -> identity, cached in front of a [`UserDirectory`].
pub struct IdentityCache {
    directory: Box<dyn UserDirectory>,
    cache: Cache<String, CachedLookup>,
    ttl: Duration,
    negative_ttl: Duration,
    stale_if_error: Duration,
}

impl IdentityCache {
    pub fn new(directory: Box<dyn UserDirectory>, users: &UsersConfig) -> Self {
        Self {
            directory,
            cache: Cache::new(users.cache_capacity),
            ttl: Duration::from_secs(users.cache_ttl_seconds),
            negative_ttl: Duration::from_secs(users.negative_cache_ttl_seconds),
            stale_if_error: Duration::from_secs(users.stale_if_error_seconds),
        }
    }

    /// Builds the directory named by `[users]` and the cache in front of it.
    pub fn from_config(users: &UsersConfig) -> Result<Self, ConfigError> {
        let directory: Box<dyn UserDirectory> = match users.source {
            UserSource::Postgres => {
                let var = users.database_url_env.as_deref().unwrap_or_default();
                let url = crate::config::env::text(var)
                    .map_err(|m| ConfigError::invalid("users.database_url_env", m))?;
                Box::new(PostgresDirectory::new(users, &url)?)
            }
            UserSource::File => {
                let path = users.users.as_deref().unwrap_or(Path::new(""));
                Box::new(FileDirectory::load(path)?)
            }
        };
        Ok(Self::new(directory, users))
    }

    /// The identity of `username`: from the cache when fresh, else from the
    /// directory, one query per username at a time.
    pub async fn resolve(&self, username: &str) -> Result<Identity, GatewayError> {
        let now = Instant::now();
        if let Some(hit) = self.cache.get(username) {
            if hit.expires_at > now {
                metrics().identity_cache_hits.inc();
                return hit.identity.ok_or(GatewayError::UserNotFound);
            }
        }
        // Absent or stale: take the loading guard, or wait for whoever holds
        // it and use what they stored.
        let (guard, stale) = match self
            .cache
            .entry_async(username, |_, v: &mut CachedLookup| {
                if v.expires_at > Instant::now() {
                    EntryAction::Retain(v.identity.clone())
                } else {
                    EntryAction::ReplaceWithGuard
                }
            })
            .await
        {
            EntryResult::Retained(identity) => {
                metrics().identity_cache_hits.inc();
                return identity.ok_or(GatewayError::UserNotFound);
            }
            EntryResult::Vacant(guard) => (guard, None),
            EntryResult::Replaced(guard, stale) => (guard, Some(stale)),
            // Only produced by the synchronous API with a timeout.
            EntryResult::Removed(..) | EntryResult::Timeout => {
                return Err(GatewayError::UserDirectoryUnavailable)
            }
        };
        metrics().identity_cache_misses.inc();
        let timer = metrics().directory_query_duration.start_timer();
        // On error the guard drops without a value: nothing is cached and the
        // next waiter becomes the loader.
        let found = self.directory.find_user(username).await;
        timer.observe_duration();
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                metrics().directory_errors.inc();
                log::warn!(
                    "user directory lookup failed (users.database_url_env): {}",
                    crate::observe::process_log::with_causes(&e)
                );
                let now = Instant::now();
                // Stale-if-error: keep the last answer while it is within its
                // window, and ask again in a second rather than per request.
                let Some(stale) = stale.filter(|s| s.usable_until > now) else {
                    return Err(GatewayError::UserDirectoryUnavailable);
                };
                metrics().identity_stale_served.inc();
                let identity = stale.identity.clone();
                let _ = guard.insert(CachedLookup {
                    expires_at: (now + STALE_RETRY).min(stale.usable_until),
                    ..stale
                });
                return identity.ok_or(GatewayError::UserNotFound);
            }
        };
        let (identity, ttl) = match found {
            Some(user) => (Identity::new(username, user), self.ttl),
            None => (None, self.negative_ttl),
        };
        let expires_at = Instant::now() + ttl;
        let _ = guard.insert(CachedLookup {
            identity: identity.clone(),
            expires_at,
            usable_until: expires_at + self.stale_if_error,
        });
        identity.ok_or(GatewayError::UserNotFound)
    }

    /// The found users still fresh, with their remaining lifetime, for a
    /// successor process to start warm (unknown users are not carried).
    pub fn snapshot(&self) -> Vec<SnapshotEntry> {
        let now = Instant::now();
        self.cache
            .iter()
            .filter_map(|(username, cached)| {
                let identity = cached.identity?;
                let remaining = cached.expires_at.checked_duration_since(now)?;
                Some(SnapshotEntry {
                    username,
                    user_id: identity.user_id.to_str().ok()?.to_owned(),
                    tokens_valid_after: identity.tokens_valid_after,
                    remaining_ms: remaining.as_millis() as u64,
                })
            })
            .collect()
    }

    /// Loads entries from a predecessor's [`Self::snapshot`]; returns how
    /// many were taken. Entries keep their remaining lifetime, never more
    /// than this process's own TTL.
    pub fn restore(&self, entries: Vec<SnapshotEntry>) -> usize {
        let now = Instant::now();
        let mut restored = 0;
        for entry in entries {
            let Ok(id) = Uuid::parse_str(&entry.user_id) else {
                continue;
            };
            let user = DirectoryUser {
                id,
                tokens_valid_after: entry.tokens_valid_after,
            };
            let Some(identity) = Identity::new(&entry.username, user) else {
                continue;
            };
            let ttl = Duration::from_millis(entry.remaining_ms).min(self.ttl);
            self.cache.insert(
                entry.username,
                CachedLookup {
                    identity: Some(identity),
                    expires_at: now + ttl,
                    usable_until: now + ttl + self.stale_if_error,
                },
            );
            restored += 1;
        }
        restored
    }

    /// The service the directory asks, and whether it answers now (`None`
    /// for a directory in this process).
    pub async fn probe_directory(&self) -> Option<(&'static str, Result<(), String>)> {
        let name = self.directory.dependency()?;
        Some((name, self.directory.ping().await.map_err(|e| e.to_string())))
    }

    /// Refreshes the cache and pool gauges (at scrape time).
    pub fn export_gauges(&self) {
        let m = metrics();
        m.identity_cache_entries.set(self.cache.len() as i64);
        if let Some(status) = self.directory.pool_status() {
            m.directory_pool_size.set(status.size as i64);
            m.directory_pool_available.set(status.available as i64);
            m.directory_pool_waiting.set(status.waiting as i64);
        }
    }

    /// Forgets `username`, found or not found (a notification said its
    /// row changed).
    pub fn evict(&self, username: &str) {
        self.cache.remove(username);
    }

    /// Forgets every user (notifications may have been missed).
    pub fn clear(&self) {
        self.cache.clear();
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::directory::DirectoryError;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    struct CountingDirectory {
        calls: Arc<AtomicU64>,
        fail: bool,
    }

    #[async_trait]
    impl UserDirectory for CountingDirectory {
        async fn find_user(&self, username: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail {
                return Err(DirectoryError::Timeout(Duration::ZERO));
            }
            Ok((username == "alice").then(|| DirectoryUser {
                id: Uuid::from_u128(7),
                tokens_valid_after: Some(1_700_000_000),
            }))
        }
    }

    fn users(negative_ttl: u64) -> UsersConfig {
        crate::config::testing::TestConfig::new()
            .set(
                "users",
                &format!("negative_cache_ttl_seconds = {negative_ttl}"),
            )
            .parse()
            .users
    }

    fn cache(fail: bool) -> (IdentityCache, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let dir = CountingDirectory {
            calls: calls.clone(),
            fail,
        };
        (IdentityCache::new(Box::new(dir), &users(10)), calls)
    }

    #[tokio::test]
    async fn hits_misses_and_unknown_users_are_cached() {
        let (c, calls) = cache(false);
        let id = c.resolve("alice").await.unwrap();
        assert_eq!(id.user_id, "00000000-0000-0000-0000-000000000007");
        assert_eq!(id.username, "alice");
        assert_eq!(c.resolve("alice").await.unwrap(), id);
        assert_eq!(c.resolve("bob").await, Err(GatewayError::UserNotFound));
        assert_eq!(c.resolve("bob").await, Err(GatewayError::UserNotFound));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let (c, calls) = cache(true);
        for _ in 0..3 {
            assert_eq!(
                c.resolve("alice").await,
                Err(GatewayError::UserDirectoryUnavailable)
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn snapshot_carries_found_users_to_a_successor() {
        let (old, old_calls) = cache(false);
        old.resolve("alice").await.unwrap();
        assert!(old.resolve("bob").await.is_err());
        let snapshot = old.snapshot();
        assert_eq!(snapshot.len(), 1, "unknown users are not carried");
        let (new, new_calls) = cache(false);
        assert_eq!(new.restore(snapshot), 1);
        let restored = new.resolve("alice").await.unwrap();
        assert_eq!(restored.username, "alice");
        assert_eq!(restored.tokens_valid_after, Some(1_700_000_000));
        assert_eq!(old_calls.load(Ordering::SeqCst), 2);
        assert_eq!(new_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_share_one_query() {
        let (c, calls) = cache(false);
        let c = Arc::new(c);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.resolve("alice").await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn tokens_issued_before_the_revocation_are_refused() {
        let user = |after| DirectoryUser {
            id: Uuid::from_u128(1),
            tokens_valid_after: after,
        };
        let open = Identity::new("a", user(None)).unwrap();
        assert!(open.accepts_token_issued(None));
        assert!(open.accepts_token_issued(Some(1)));
        let revoked = Identity::new("a", user(Some(100))).unwrap();
        assert!(!revoked.accepts_token_issued(Some(99)));
        assert!(revoked.accepts_token_issued(Some(100)));
        assert!(revoked.accepts_token_issued(Some(101)));
        assert!(!revoked.accepts_token_issued(None));
    }
}
