//! What operators see: Prometheus [`metrics`], the JSON [`access_log`], the
//! [`process_log`] on stderr, the [`dependencies`] checked once a second,
//! the spans exported over OTLP ([`traces`]) and the [`admin`] listener (`/metrics`, `/healthz`, `/readyz`).

pub mod access_log;
pub mod admin;
pub mod dependencies;
pub mod metrics;
pub mod process_log;
pub mod traces;
