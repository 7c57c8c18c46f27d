//! Rate limits shared by every gateway instance, decided in Redis
//! (`[rate_limit] store = "redis"`).
//!
//! The same GCRA as [`super::limits`], run atomically by a Lua script on
//! Redis's own clock (`TIME`), so instances with skewed clocks still agree.
//! Each counter is one key with a TTL of the time until its state equals
//! no state: an idle user costs nothing.
//!
//! When no Redis call is in flight, a request sends its decision itself,
//! at once, on its thread's own connection ([`direct`]): no queue, no
//! hand-off to another task and back, so the sequential case pays only
//! the round trip. While a call is in flight, decisions are batched: a
//! request queues its decision, and one driver task per process sends
//! everything queued as one script call (up to [`MAX_BATCH`] decisions),
//! one batch in flight at a time. (The gate is the process's, not each
//! thread's: under load nearly every decision joins a batch, so Redis
//! sees few round trips; the gateway's own requests per second measured
//! the same either way within this machine's noise.) The script
//! decides them in queue order, each exactly as if it had been sent alone,
//! so the limit stays exact; one round trip and one script run serve many
//! requests. Every key of a batch is in one script call, so the store is a
//! single Redis, not a Redis Cluster.
//!
//! Every connection is the gateway's own ([`direct`], speaking the RESP
//! of [`resp`]); redis-rs only reads the URL and hashes the script. The
//! driver is spawned on first use, inside the server's runtime, and opens
//! its connection when a batch finds none, within [`CONNECT_BUDGET`]; any
//! failure closes it, and the next batch opens it again. A decision that Redis
//! does not give within `store_timeout_ms` (down, slow, an error, the
//! queue full) is made by `on_store_error` instead: the local limiter
//! (default), allow, or deny (503). After a failure (an error, or
//! [`TIMEOUTS_BEFORE_SKIP`] late answers in a row) the store is skipped for
//! [`RETRY_AFTER_FAILURE`], so an outage costs a few timeouts per second
//! rather than one per request; the next decision after that tries Redis
//! again, and recovery needs no restart.

mod direct;
mod resp;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;
use tokio::sync::{mpsc, oneshot};

use super::limits::{Decision, LimitKey, Subject};
use crate::observe::metrics::metrics;

/// Budget for opening the process's first connection to Redis.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(1);

/// How long the store is skipped after it failed.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Decisions in a row that missed the budget before the store counts as
/// failed. A busy gateway's event loop makes an answer late now and then
/// (that decision alone falls back); a Redis that stopped answering makes
/// every one late.
pub const TIMEOUTS_BEFORE_SKIP: u32 = 8;

/// Most decisions in one script call.
pub const MAX_BATCH: usize = 128;

/// Decisions that may wait for the driver; a full queue is a store
/// failure (the fallback decides), never an unbounded wait.
const QUEUE_CAPACITY: usize = 4096;

const MINUTE_US: u64 = 60_000_000;
const SECOND_US: u64 = 1_000_000;

/// GCRA in microseconds for each key of the batch, in order. KEYS[i]: a
/// counter; ARGV[2i-1], ARGV[2i]: its interval and tolerance. Returns,
/// flat, per key: allowed (1/0), tat - now after the decision, wait until
/// allowed. A key repeated in the batch sees its earlier decisions.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  if now + tolerance < tat then
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = tat - (now + tolerance)
  else
    local new_tat = tat + interval
    redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
    out[#out + 1] = 1
    out[#out + 1] = new_tat - now
    out[#out + 1] = 0
  end
end
return out
"#;

use crate::config::StoreFallback;

/// Why the store gave no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("skipped for a second after a failure")]
    Skipped,
    #[error("no answer within the budget")]
    Timeout,
    #[error("the queue of decisions is full")]
    QueueFull,
    #[error("the decision driver has stopped")]
    DriverGone,
    #[error("the script's answer did not hold three numbers for each of {0} decisions")]
    BadAnswer(usize),
    #[error("redis connection: {0}")]
    Io(Arc<std::io::Error>),
    #[error("redis answered: {0}")]
    Refused(String),
    #[error("redis sent {0}")]
    BadReply(&'static str),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

/// The script's answer for one decision: allowed, tat - now, wait.
type Answer = (bool, u64, u64);

/// One decision waiting in the queue for its batch.
struct Pending {
    key: String,
    interval: u64,
    tolerance: u64,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The driver's queue, set up on first use (the driver's task holds its
/// own connection).
struct Store {
    queue: mpsc::Sender<Pending>,
}

/// One Redis call counted in flight until dropped (answered, timed out,
/// or abandoned with its request).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Counts a call if none is in flight.
    fn first(counter: &'a AtomicUsize) -> Option<Self> {
        counter
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Self(counter))
    }

    /// Counts a call whatever else is in flight (the driver's batch).
    fn another(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct SharedLimiter {
    /// Where the connections go: the URL, read once.
    endpoint: Arc<direct::Endpoint>,
    /// `EVALSHA <the script's hash>`, encoded once.
    evalsha: Arc<[u8]>,
    /// Redis calls in flight: a request's own, or the driver's batch.
    in_flight: Arc<AtomicUsize>,
    /// Each thread's own connection, on which a request decides alone.
    threads: direct::ThreadConnections,
    /// Set up on first use.
    store: OnceLock<Store>,
    /// The dependency probe's own connection (not the decisions' one: a
    /// probe must not queue behind them), opened again after a failure.
    probe: tokio::sync::Mutex<Option<direct::Connection>>,
    timeout: Duration,
    pub fallback: StoreFallback,
    /// Milliseconds since `origin` until which the store is skipped.
    skip_until_ms: AtomicU64,
    /// Decisions since the last answer that missed the budget.
    timeouts_in_a_row: AtomicU32,
    origin: Instant,
}

impl SharedLimiter {
    /// Checks the URL now (a bad one is a configuration error); connects
    /// on first use.
    /// `root_cert`: PEM roots a `rediss://` server must chain to (else the
    /// system's; the name is checked either way).
    pub fn new(
        url: &str,
        root_cert: Option<Vec<u8>>,
        timeout: Duration,
        fallback: StoreFallback,
    ) -> Result<Self, String> {
        let info = url
            .into_connection_info()
            .map_err(|e| format!("not a Redis URL: {e}"))?;
        let endpoint = Arc::new(direct::Endpoint::of(&info, root_cert.as_deref())?);
        let script = redis::Script::new(GCRA_SCRIPT);
        let evalsha: Arc<[u8]> =
            resp::verb_and_body(b"EVALSHA", script.get_hash().as_bytes()).into();
        metrics().rate_limit_store_up.set(1);
        Ok(Self {
            threads: direct::ThreadConnections::new(endpoint.clone(), evalsha.clone()),
            endpoint,
            evalsha,
            in_flight: Arc::default(),
            store: OnceLock::new(),
            probe: tokio::sync::Mutex::new(None),
            timeout,
            fallback,
            skip_until_ms: AtomicU64::new(0),
            timeouts_in_a_row: AtomicU32::new(0),
            origin: Instant::now(),
        })
    }

    /// Whether Redis answers a PING now (the dependency probe; once a
    /// second at most, off the request path).
    pub async fn ping(&self) -> Result<(), String> {
        let mut probe = self.probe.lock().await;
        // One Redis closed while idle (restarted, say) is opened again,
        // not reported down.
        let mut connection = match probe.take().and_then(direct::Connection::if_still_open) {
            Some(connection) => connection,
            None => tokio::time::timeout(
                CONNECT_BUDGET,
                direct::Connection::open(&self.endpoint, self.evalsha.clone()),
            )
            .await
            .map_err(|_| format!("no connection within {CONNECT_BUDGET:?}"))?
            .map_err(|e| e.to_string())?,
        };
        tokio::time::timeout(CONNECT_BUDGET, connection.ping())
            .await
            .map_err(|_| format!("no PONG within {CONNECT_BUDGET:?}"))?
            .map_err(|e| e.to_string())?;
        *probe = Some(connection);
        Ok(())
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
        let (interval, tolerance) = gcra_parameters(per_minute);
        let key = RedisKey::of(&key);
        let alone = InFlight::first(&self.in_flight)
            .and_then(|counted| Some((counted, self.threads.lease()?)));
        let result = match alone {
            Some((_counted, lease)) => {
                self.decide_alone(lease, key.as_bytes(), interval, tolerance)
                    .await
            }
            None => {
                let queue = &self.store().queue;
                self.decide(queue, key.to_text(), interval, tolerance).await
            }
        };
        let m = metrics();
        match result {
            Ok((allowed, ahead, wait)) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                m.rate_limit_store_up.set(1);
                Ok(decision(
                    allowed, ahead, wait, interval, tolerance, per_minute,
                ))
            }
            Err(e) => {
                let failed = match e {
                    StoreError::Timeout => {
                        self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
                            >= TIMEOUTS_BEFORE_SKIP
                    }
                    _ => true,
                };
                if failed {
                    m.rate_limit_store_up.set(0);
                    self.skip_until_ms.store(
                        self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                }
                Err(e)
            }
        }
    }

    /// Sends the decision itself on its thread's idle connection, within
    /// the budget. A call that fails or times out drops the lease, which
    /// closes the connection.
    async fn decide_alone(
        &self,
        mut lease: direct::Lease<'_>,
        key: &[u8],
        interval: u64,
        tolerance: u64,
    ) -> Result<Answer, StoreError> {
        let m = metrics();
        m.rate_limit_store_round_trips.inc();
        m.rate_limit_store_sent_alone.inc();
        let Some(connection) = lease.connection() else {
            return Err(StoreError::DriverGone);
        };
        let call = connection.decide(GCRA_SCRIPT, std::iter::once((key, interval, tolerance)));
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Ok(numbers) => answer_at(numbers?, 0),
            Err(_) => return Err(StoreError::Timeout),
        };
        lease.give_back();
        Ok(answer)
    }

    /// Queues the decision and waits for its batch's answer, within the
    /// budget (a queue that is full fails at once).
    async fn decide(
        &self,
        queue: &mpsc::Sender<Pending>,
        key: String,
        interval: u64,
        tolerance: u64,
    ) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key,
            interval,
            tolerance,
            reply,
        };
        queue.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => StoreError::DriverGone,
        })?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::DriverGone),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// The driver's queue: on first use the driver is spawned on this
    /// runtime (it opens its connection when its first batch comes).
    fn store(&self) -> &Store {
        self.store.get_or_init(|| {
            let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(drive(
                Driver {
                    endpoint: self.endpoint.clone(),
                    evalsha: self.evalsha.clone(),
                    budget: self.timeout,
                    in_flight: self.in_flight.clone(),
                    connection: None,
                },
                waiting,
            ));
            Store { queue }
        })
    }
}

/// The driver's state: its own connection (opened when a batch finds
/// none, closed by any failure) and the decision budget.
struct Driver {
    endpoint: Arc<direct::Endpoint>,
    evalsha: Arc<[u8]>,
    budget: Duration,
    in_flight: Arc<AtomicUsize>,
    connection: Option<direct::Connection>,
}

/// The driver: everything queued goes to Redis as one batch, the next
/// batch once its answer is in. A batch gets the decision budget too
/// (its waiters have given up after that); it ends when the limiter, and
/// with it the queue, is dropped.
async fn drive(mut driver: Driver, mut waiting: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Waiters that gave up are not decided: their requests were
        // decided by the fallback and must not count twice.
        batch.retain(|p: &Pending| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics().rate_limit_store_round_trips.inc();
        let in_flight = driver.in_flight.clone();
        let counted = InFlight::another(&in_flight);
        let answers = driver.decide_batch(&batch).await;
        drop(counted);
        for (i, pending) in batch.drain(..).enumerate() {
            let answer = match &answers {
                Ok(numbers) => Ok(answer_at(numbers, i)),
                Err(e) => Err(e.clone()),
            };
            let _ = pending.reply.send(answer);
        }
    }
}

impl Driver {
    /// One script call for the whole batch, within the budget; the
    /// connection is opened first when there is none (within
    /// [`CONNECT_BUDGET`]: opening takes a few round trips), and closed
    /// by any failure.
    async fn decide_batch(&mut self, batch: &[Pending]) -> Result<Vec<u64>, StoreError> {
        // Closed by Redis while idle (restarted, say): open a new one
        // rather than fail the batch on it.
        self.connection = self
            .connection
            .take()
            .and_then(direct::Connection::if_still_open);
        if self.connection.is_none() {
            let opening = direct::Connection::open(&self.endpoint, self.evalsha.clone());
            let opened = match tokio::time::timeout(CONNECT_BUDGET, opening).await {
                Ok(opened) => opened,
                Err(_) => Err(StoreError::Timeout),
            };
            // Once per skip period at most (the failure skips the store),
            // and someone must look: a store that refuses or fails its TLS
            // check stays down.
            let opened = opened.inspect_err(|e| {
                log::warn!(
                    "shared rate limits: cannot connect to Redis \
                     (rate_limit.redis_url_env, rate_limit.redis_ca_file): {e}"
                )
            })?;
            self.connection = Some(opened);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(StoreError::DriverGone);
        };
        let decisions = batch
            .iter()
            .map(|p| (p.key.as_bytes(), p.interval, p.tolerance));
        let call = connection.decide(GCRA_SCRIPT, decisions);
        let answers = match tokio::time::timeout(self.budget, call).await {
            Ok(numbers) => numbers.map(<[u64]>::to_vec),
            Err(_) => Err(StoreError::Timeout),
        };
        if let Err(e) = &answers {
            // Redis answered, and said no (`NOAUTH`, `NOPERM`, `OOM`,
            // a script error): a setting for someone to fix, not a blip.
            // Once per skip period at most, like the connect failure.
            if matches!(e, StoreError::Refused(_)) {
                log::warn!("shared rate limits: {e} (rate_limit.redis_url_env)");
            }
            self.connection = None;
        }
        answers
    }
}

/// The `i`-th decision of a checked flat answer.
fn answer_at(numbers: &[u64], i: usize) -> Answer {
    (numbers[3 * i] == 1, numbers[3 * i + 1], numbers[3 * i + 2])
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
/// Written on the stack, hex by hand: `format!` of a u128 in hex cost 800
/// instructions a decision.
struct RedisKey {
    bytes: [u8; REDIS_KEY_BYTES],
    len: usize,
}

/// "rgw:rl:" + 16 hex digits + ":ip:" + the longest IPv6 text (45).
const REDIS_KEY_BYTES: usize = 7 + 16 + 4 + 45;

impl RedisKey {
    fn of(key: &LimitKey) -> Self {
        let mut out = Self {
            bytes: [0; REDIS_KEY_BYTES],
            len: 0,
        };
        out.push(b"rgw:rl:");
        out.hex(u128::from(key.scope), 1);
        match key.subject {
            Subject::User(id) => {
                out.push(b":u:");
                out.hex(id, 32);
            }
            Subject::Ip(ip) => {
                out.push(b":ip:");
                out.push(crate::text::IpText::new(ip).as_bytes());
            }
        }
        out
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The key as text (only ASCII is ever pushed), for the driver's queue.
    fn to_text(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(REDIS_KEY_BYTES);
        self.bytes[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }

    /// Lowercase hex of `n`, at least `width` digits.
    fn hex(&mut self, n: u128, width: usize) {
        let mut text = [0u8; 32];
        crate::text::hex_lower(&n.to_be_bytes(), &mut text);
        let digits = (128 - n.leading_zeros() as usize)
            .div_ceil(4)
            .clamp(width, 32);
        self.push(&text[32 - digits..]);
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
    fn urls_are_checked() {
        let new =
            |url| SharedLimiter::new(url, None, Duration::from_millis(5), StoreFallback::Local);
        assert!(new("http://127.0.0.1:1")
            .err()
            .unwrap()
            .starts_with("not a Redis URL"));
        // No certificate check is never the gateway's choice.
        let insecure = new("rediss://127.0.0.1:1/#insecure");
        assert!(insecure.err().unwrap().contains("#insecure"));
        assert!(new("redis://127.0.0.1:1/").is_ok());
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
        assert_eq!(
            RedisKey::of(&user).to_text(),
            format!("rgw:rl:0:u:{:032x}", 0xab)
        );
        let ip = LimitKey {
            scope: 0x1f,
            subject: Subject::Ip("127.0.0.1".parse().unwrap()),
        };
        assert_eq!(RedisKey::of(&ip).to_text(), "rgw:rl:1f:ip:127.0.0.1");
        // The widest of each: every digit kept.
        let widest = LimitKey {
            scope: u64::MAX,
            subject: Subject::User(u128::MAX),
        };
        assert_eq!(
            RedisKey::of(&widest).to_text(),
            format!("rgw:rl:{:x}:u:{:x}", u64::MAX, u128::MAX)
        );
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let widest_ip = LimitKey {
            scope: u64::MAX,
            subject: Subject::Ip(v6),
        };
        assert_eq!(
            RedisKey::of(&widest_ip).to_text(),
            format!("rgw:rl:{:x}:ip:{v6}", u64::MAX)
        );
    }
}
