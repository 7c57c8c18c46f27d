//! Upstream pools: several peers per route, their health (active checks
//! in the background, passive ejection from real requests), names that
//! follow DNS ([`names`]) and the retry rules of one request's tries.
//! README, "Upstream pools", has the configuration and the behaviour;
//! `docs/architecture.md` where each piece is called from.

pub mod attempts;
pub mod health;
pub mod names;
pub mod peer;
pub mod pool;
pub mod protocol;
pub mod registry;

pub use attempts::Attempts;
pub use pool::{Member, Pool, PoolEntry};
pub use protocol::UpstreamTls;
pub use registry::{PeerKey, PoolSlot, UpstreamRegistry};
