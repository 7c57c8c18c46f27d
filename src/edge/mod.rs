//! Policies applied at the edge, each one type per feature: CORS
//! ([`cors`]), per-user rate limits ([`limits`]), response compression
//! ([`compression`]) and Slack request signatures ([`slack`]).

pub mod compression;
pub mod cors;
pub mod limits;
pub mod shared_limits;
pub mod slack;
