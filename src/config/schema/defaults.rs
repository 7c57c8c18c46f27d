//! The defaults of the configuration keys, one function each (serde's
//! `default = "..."` takes a path); README, "Configuration reference",
//! lists them.

pub fn health_interval_ms() -> u64 {
    1_000
}
pub fn health_timeout_ms() -> u64 {
    1_000
}
pub fn health_threshold() -> u32 {
    2
}
fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
pub fn cors_methods() -> Vec<String> {
    strings(&["GET", "POST", "PUT", "DELETE"])
}
pub fn cors_headers() -> Vec<String> {
    strings(&["Authorization", "Content-Type"])
}
pub fn cors_expose_headers() -> Vec<String> {
    strings(&[
        "X-Request-Id",
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    ])
}
pub fn cors_max_age_seconds() -> u32 {
    3600
}
pub fn compression_min_size_bytes() -> u64 {
    256
}
pub fn store_timeout_ms() -> u64 {
    5
}
pub fn http2() -> bool {
    true
}
pub fn session_resumption() -> bool {
    true
}
pub fn jwks_refresh_seconds() -> u64 {
    300
}
pub fn jwks_timeout_ms() -> u64 {
    2000
}
/// nginx's `keepalive_timeout` is 75 s; Pingora's HTTP/1 default is 60 s.
pub fn client_idle_timeout_seconds() -> u64 {
    60
}
/// 64 Slack bodies at their 1 MiB default limit; Slack's own are a few KiB.
pub fn max_buffered_body_bytes() -> u64 {
    64 * 1024 * 1024
}
/// 10 a second sustained: an address spraying forged RS256 tokens costs at
/// most ~4 ms of CPU a second; a NAT with 600 users signing in at once passes.
pub fn first_sight_per_ip_per_minute() -> u32 {
    600
}
/// What one subscriber gets (RFC 6177).
pub fn ipv6_prefix_length() -> u8 {
    64
}
pub fn rate_limit_max_keys() -> usize {
    100_000
}
pub fn log_level() -> String {
    "info".into()
}
pub fn log_format() -> super::LogFormat {
    super::LogFormat::Json
}
pub fn log_destination() -> String {
    "stdout".into()
}
pub fn log_queue_capacity() -> usize {
    65_536
}
pub fn threads() -> usize {
    2
}
/// A private runtime directory (systemd `RuntimeDirectory=robeing-gateway`):
/// see `process::handoff::check_private_dirs`.
pub fn pid_file() -> String {
    "/run/robeing-gateway/robeing-gateway.pid".into()
}
pub fn upgrade_sock() -> String {
    "/run/robeing-gateway/upgrade.sock".into()
}
pub fn grace_period_seconds() -> u64 {
    1
}
pub fn graceful_shutdown_timeout_seconds() -> u64 {
    10
}
pub fn upstream_keepalive_pool_size() -> usize {
    256
}
pub fn header_timeout_ms() -> u64 {
    10_000
}
pub fn max_connections_per_ip() -> usize {
    256
}
pub fn connection_pressure_threshold() -> usize {
    10_000
}
pub fn max_uri_bytes() -> usize {
    8 * 1024
}
pub fn max_header_bytes() -> usize {
    32 * 1024
}
pub fn max_body_bytes() -> u64 {
    100 * 1024 * 1024
}
pub fn username_claim() -> String {
    "username".into()
}
pub fn leeway_seconds() -> u64 {
    30
}
pub fn max_token_bytes() -> usize {
    8 * 1024
}
pub fn verified_token_cache() -> usize {
    10_000
}
pub fn query() -> String {
    r#"SELECT id FROM "user" WHERE username = $1"#.into()
}
pub fn pool_size() -> usize {
    16
}
pub fn query_timeout_ms() -> u64 {
    2_000
}
pub fn cache_ttl_seconds() -> u64 {
    300
}
pub fn negative_cache_ttl_seconds() -> u64 {
    10
}
pub fn stale_if_error_seconds() -> u64 {
    300
}
pub fn cache_capacity() -> usize {
    100_000
}
pub fn connect_timeout_ms() -> u64 {
    2_000
}
pub fn read_timeout_ms() -> u64 {
    30_000
}
pub fn write_timeout_ms() -> u64 {
    30_000
}
pub fn idle_timeout_ms() -> u64 {
    60_000
}
pub fn resolve_interval_seconds() -> u64 {
    30
}
pub fn resolve_at_start() -> bool {
    true
}
pub fn auth_required() -> bool {
    true
}
pub fn sample_ratio() -> f64 {
    1.0
}
pub fn trace_service_name() -> String {
    "robeing-gateway".into()
}
pub fn trace_export_interval_ms() -> u64 {
    5000
}
