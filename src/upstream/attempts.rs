//! One request's tries at a route's pool: which peer each try goes to,
//! whether a failure may be retried, and what the peers learn from it.
//! A feature that spans phases, so one type: `upstream_peer` asks
//! [`Attempts::next_peer`], `fail_to_connect` and `error_while_proxy` ask
//! [`Attempts::after_connect_failure`] and [`Attempts::after_proxy_error`],
//! `upstream_response_filter` tells [`Attempts::answered`], and `logging`
//! takes [`Attempts::finish`].
//!
//! The retry rules (README, "Upstream pools"):
//! - a connection that failed before any byte of the request was written
//!   is retried on another peer, for any method;
//! - after that, only idempotent methods whose body Pingora still holds,
//!   and only while no response header came back: a POST or PATCH is never
//!   replayed;
//! - at most `max_retries` more tries, never the same peer twice unless a
//!   pooled connection turned out stale, and only while the request is
//!   younger than the pool's budget.

use std::sync::Arc;
use std::time::Instant;

use pingora::{Error, ErrorSource, ErrorType};

use super::peer::{InFlightAtPeer, PeerState};
use super::pool::{Pool, Tried};
use crate::observe::metrics::metrics;

/// The error of a pool with no eligible peer (`fail_to_proxy` answers 503).
pub const NO_HEALTHY_PEER: &str = "no_healthy_peer";

#[derive(Default)]
pub struct Attempts {
    tried: Tried,
    tries: u32,
    /// The member and its in-flight slot of the current try.
    current: Option<(usize, InFlightAtPeer)>,
    /// The next try may go to the same peer (a stale pooled connection).
    same_peer_again: bool,
    answered: bool,
}

impl Attempts {
    /// The peer of the next try: an eligible one not tried yet (or the
    /// same one after a stale pooled connection), or the 503 error.
    pub fn next_peer(
        &mut self,
        pool: &Pool,
        key: &[u8],
    ) -> pingora::Result<Box<pingora::prelude::HttpPeer>> {
        let same = std::mem::take(&mut self.same_peer_again);
        let member = match (&self.current, same) {
            (Some((i, _)), true) => Some(*i),
            _ => pool.pick(key, self.tried),
        };
        let Some(i) = member else {
            self.current = None;
            return Error::e_explain(
                ErrorType::Custom(NO_HEALTHY_PEER),
                format!(
                    "no eligible peer of {} ({} tries)",
                    pool.pattern, self.tries
                ),
            );
        };
        let m = &pool.members[i];
        self.tried |= 1 << i;
        self.tries += 1;
        self.current = Some((i, m.state.start_request()));
        Ok(Box::new(m.peer.clone()))
    }

    fn current_peer(&self) -> Option<&Arc<PeerState>> {
        self.current.as_ref().map(|(_, slot)| slot.peer())
    }

    fn may_try_again(&self, pool: &Pool, started: Instant) -> bool {
        self.tries <= pool.max_retries && started.elapsed() < pool.retry_budget
    }

    /// `fail_to_connect`: nothing was written; the peer is charged and
    /// another one tried while the budget allows.
    pub fn after_connect_failure(&mut self, pool: &Pool, started: Instant, e: &mut Error) {
        if let Some(peer) = self.current_peer() {
            peer.record_failure();
        }
        let retry = self.may_try_again(pool, started) && pool.has_untried(self.tried);
        if retry {
            metrics()
                .upstream_retries
                .with_label_values(&["connect_failed"])
                .inc();
        }
        e.set_retry(retry);
    }

    /// `error_while_proxy`: the request may have reached the peer. Only an
    /// idempotent request with its whole body still held, and no answer
    /// yet, goes again.
    pub fn after_proxy_error(
        &mut self,
        pool: &Pool,
        started: Instant,
        e: &mut Error,
        replayable: bool,
        connection_reused: bool,
    ) {
        let from_peer = *e.esource() == ErrorSource::Upstream && !self.answered;
        // Pingora's own verdict: an error it deems safe to send again (a
        // pooled connection the peer had closed before answering). Such
        // keep-alive churn is not the peer's failure, and the same peer
        // may take the request again on a fresh connection.
        let mut verdict = e.retry;
        verdict.decide_reuse(connection_reused);
        let stale = verdict.retry();
        if from_peer && !connection_reused {
            if let Some(peer) = self.current_peer() {
                peer.record_failure();
            }
        }
        // A stale pooled connection does not use up `max_retries`: a peer
        // that closed several idle connections at once may cost a request
        // several of them (Pingora's own loop still bounds the tries).
        let within_budget =
            started.elapsed() < pool.retry_budget && (stale || self.tries <= pool.max_retries);
        let allowed = replayable && !self.answered && (from_peer || stale) && within_budget;
        let retry = if !allowed {
            false
        } else if pool.has_untried(self.tried) {
            true
        } else {
            self.same_peer_again = stale;
            stale
        };
        if retry {
            let reason = if stale {
                "stale_connection"
            } else {
                "idempotent_no_response"
            };
            metrics()
                .upstream_retries
                .with_label_values(&[reason])
                .inc();
        }
        e.set_retry(retry);
    }

    /// A response header came back: the peer answered.
    pub fn answered(&mut self) {
        self.answered = true;
        if let Some(peer) = self.current_peer() {
            peer.record_success();
        }
    }

    /// The request is done: releases the in-flight slot; the peer of the
    /// last try and the number of tries, for the access log.
    pub fn finish(&mut self) -> (Option<Arc<PeerState>>, u32) {
        let peer = self.current.take().map(|(_, slot)| slot.peer().clone());
        (peer, self.tries)
    }
}
