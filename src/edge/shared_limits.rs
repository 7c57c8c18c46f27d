//! Rate limits shared by every gateway instance, decided in Redis
//! (`[rate_limit] store = "redis"`).
//!
//! The same GCRA as [`super::limits`], one Lua script per decision, run
//! atomically by Redis on its own clock (`TIME`), so instances with
//! skewed clocks still agree. Each counter is one key with a TTL of the
//! time until its state equals no state: an idle user costs nothing.
//! One multiplexed connection per process (redis-rs `ConnectionManager`,
//! which reconnects by itself), opened on first use inside the server's
//! runtime.
//!
//! The first decision of a process also opens the connection, within
//! [`CONNECT_BUDGET`]. A decision that Redis does not give within
//! `store_timeout_ms` (down,
//! slow, an error) is made by `on_store_error` instead: the local limiter
//! (default), allow, or deny (503). After a failure the store is skipped
//! for [`RETRY_AFTER_FAILURE`], so an outage costs one timeout per second
//! rather than one per request; the next decision after that tries Redis
//! again, and recovery needs no restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::limits::{Decision, LimitKey, Subject};
use crate::observe::metrics::metrics;

/// Budget for opening the process's first connection to Redis.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(1);

/// How long the store is skipped after it failed a decision.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

const MINUTE_US: u64 = 60_000_000;
const SECOND_US: u64 = 1_000_000;

/// GCRA in microseconds. KEYS[1]: the counter; ARGV: interval, tolerance.
/// Returns {allowed, tat - now after the decision, wait until allowed}.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if now + tolerance < tat then
  return {0, tat - now, tat - (now + tolerance)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, new_tat - now, 0}
"#;

/// What decides while the store cannot (`on_store_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFallback {
    /// This process's own limiter (the budget is per instance meanwhile).
    Local,
    Allow,
    /// 503 `SERVICE_UNAVAILABLE`.
    Deny,
}

impl StoreFallback {
    pub fn from_config(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("local") => Ok(Self::Local),
            Some("allow") => Ok(Self::Allow),
            Some("deny") => Ok(Self::Deny),
            Some(other) => Err(format!("'{other}' is not local, allow or deny")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Why the store gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("skipped for a second after a failure")]
    Skipped,
    #[error("no answer within the budget")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

pub struct SharedLimiter {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    pub fallback: StoreFallback,
    /// Milliseconds since `origin` until which the store is skipped.
    skip_until_ms: AtomicU64,
    origin: Instant,
}

impl SharedLimiter {
    /// Checks the URL now (a bad one is a configuration error); connects
    /// on first use.
    pub fn new(url: &str, timeout: Duration, fallback: StoreFallback) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
        metrics().rate_limit_store_up.set(1);
        Ok(Self {
            client,
            connection: OnceCell::new(),
            script: redis::Script::new(GCRA_SCRIPT),
            timeout,
            fallback,
            skip_until_ms: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// One request of `key` against `per_minute`, decided in Redis within
    /// the budget.
    pub async fn check(&self, key: LimitKey, per_minute: u32) -> Result<Decision, StoreError> {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(StoreError::Skipped);
        }
        let result = match self.connection().await {
            Ok(connection) => {
                match tokio::time::timeout(self.timeout, self.decide(connection, key, per_minute))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Timeout),
                }
            }
            Err(e) => Err(e),
        };
        let m = metrics();
        match &result {
            Ok(_) => m.rate_limit_store_up.set(1),
            Err(_) => {
                m.rate_limit_store_up.set(0);
                self.skip_until_ms.store(
                    self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64,
                    Ordering::Relaxed,
                );
            }
        }
        result
    }

    /// The process's connection, opened on first use within
    /// [`CONNECT_BUDGET`] (not the per-decision budget: opening it takes a
    /// few round trips); afterwards it reconnects by itself.
    async fn connection(&self) -> Result<&ConnectionManager, StoreError> {
        // One attempt per try (no retry loop inside): a Redis that is down
        // at start costs one refused connect per skip period, not seconds.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(CONNECT_BUDGET);
        let open = self
            .connection
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config));
        match tokio::time::timeout(CONNECT_BUDGET, open).await {
            Ok(connection) => Ok(connection?),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn decide(
        &self,
        connection: &ConnectionManager,
        key: LimitKey,
        per_minute: u32,
    ) -> Result<Decision, StoreError> {
        let (interval, tolerance) = gcra_parameters(per_minute);
        let (allowed, ahead, wait): (u64, u64, u64) = self
            .script
            .key(redis_key(&key))
            .arg(interval)
            .arg(tolerance)
            .invoke_async(&mut connection.clone())
            .await?;
        Ok(decision(
            allowed == 1,
            ahead,
            wait,
            interval,
            tolerance,
            per_minute,
        ))
    }
}

/// The emission interval and burst tolerance of `per_minute`, in
/// microseconds (Lua's numbers are doubles: nanoseconds since the epoch
/// would not fit). Above 60 million a minute the interval stays 1 µs.
fn gcra_parameters(per_minute: u32) -> (u64, u64) {
    let n = u64::from(per_minute.max(1));
    let interval = (MINUTE_US / n).max(1);
    (interval, interval * (n - 1))
}

/// `rgw:rl:<scope>:<subject>`: the default scope is 0, a route's own its
/// pattern's FNV-1a, the same in every instance and binary version.
fn redis_key(key: &LimitKey) -> String {
    match key.subject {
        Subject::User(id) => format!("rgw:rl:{:x}:u:{id:032x}", key.scope),
        Subject::Ip(ip) => format!("rgw:rl:{:x}:ip:{ip}", key.scope),
    }
}

/// The decision of the script's answer, with the local limiter's fields.
fn decision(
    allowed: bool,
    ahead_us: u64,
    wait_us: u64,
    interval: u64,
    tolerance: u64,
    limit: u32,
) -> Decision {
    let reset_seconds = ahead_us.div_ceil(SECOND_US);
    if !allowed {
        return Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_seconds,
            retry_after_seconds: wait_us.div_ceil(SECOND_US).max(1),
        };
    }
    let remaining = (tolerance + interval).saturating_sub(ahead_us) / interval;
    Decision {
        allowed: true,
        limit,
        remaining: remaining.min(u64::from(u32::MAX)) as u32,
        reset_seconds,
        retry_after_seconds: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_urls_are_checked() {
        assert_eq!(StoreFallback::from_config(None), Ok(StoreFallback::Local));
        assert_eq!(
            StoreFallback::from_config(Some("deny")),
            Ok(StoreFallback::Deny)
        );
        assert!(StoreFallback::from_config(Some("open")).is_err());
        let bad = SharedLimiter::new(
            "http://127.0.0.1:1",
            Duration::from_millis(5),
            StoreFallback::Local,
        );
        assert!(bad.err().unwrap().starts_with("not a Redis URL"));
        assert!(SharedLimiter::new(
            "redis://127.0.0.1:1/",
            Duration::from_millis(5),
            StoreFallback::Local
        )
        .is_ok());
    }

    #[test]
    fn the_script_answer_reads_like_the_local_decision() {
        // 10 a minute: interval 6 s, tolerance 54 s. The first request of a
        // quiet user leaves 9 and resets in 6 s.
        let (interval, tolerance) = (6_000_000, 54_000_000);
        let first = decision(true, interval, 0, interval, tolerance, 10);
        assert_eq!((first.remaining, first.reset_seconds), (9, 6));
        let refused = decision(false, 60_000_000, 1_500_000, interval, tolerance, 10);
        assert_eq!((refused.allowed, refused.retry_after_seconds), (false, 2));
    }

    #[test]
    fn any_limit_has_a_nonzero_interval() {
        assert_eq!(gcra_parameters(10), (6_000_000, 54_000_000));
        let (interval, tolerance) = gcra_parameters(u32::MAX);
        assert_eq!(interval, 1);
        let d = decision(true, 1, 0, interval, tolerance, u32::MAX);
        assert!(d.allowed && d.remaining > 0);
    }

    #[test]
    fn keys_name_scope_and_subject() {
        let user = LimitKey {
            scope: 0,
            subject: Subject::User(0xab),
        };
        assert_eq!(redis_key(&user), format!("rgw:rl:0:u:{:032x}", 0xab));
        let ip = LimitKey {
            scope: 0x1f,
            subject: Subject::Ip("127.0.0.1".parse().unwrap()),
        };
        assert_eq!(redis_key(&ip), "rgw:rl:1f:ip:127.0.0.1");
    }
}
