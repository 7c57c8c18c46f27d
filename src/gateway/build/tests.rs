//! Unit tests of `gateway/build.rs` (kept apart so the module reads as the code it tests).
use super::*;

fn redis_limit(var: &str) -> RateLimitConfig {
    RateLimitConfig {
        requests_per_minute: 5,
        max_keys: 10,
        store: LimitStore::Redis.into(),
        redis_url_env: Some(var.into()),
        store_timeout_ms: 5,
        on_store_error: Default::default(),
        ipv6_prefix_length: 64,
        redis_ca_file: None,
    }
}

#[test]
fn a_redis_url_is_checked_when_the_config_is_built() {
    let var = "ROBEING_TEST_REDIS_URL_PLAN";
    let unset = shared_limiter(Some(&redis_limit(var)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        unset.contains("rate_limit.redis_url_env: environment variable"),
        "{unset}"
    );
    // One variable, this test's own: no other test reads it.
    std::env::set_var(var, "http://127.0.0.1:6379");
    let bad = shared_limiter(Some(&redis_limit(var)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        bad.starts_with("rate_limit.redis_url_env: ROBEING_TEST_REDIS_URL_PLAN: not a Redis URL"),
        "{bad}"
    );
    std::env::set_var(var, "redis://127.0.0.1:6379/");
    assert!(shared_limiter(Some(&redis_limit(var))).unwrap().is_some());
}
