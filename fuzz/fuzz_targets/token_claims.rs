//! Any bearer header value through token extraction and verification:
//! refused or accepted, never a panic; an accepted token names a username
//! that is safe to put in a header.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use robeing_gateway::auth::token::{bearer_token, is_sane_username, BearerToken, JwtVerifier};
use robeing_gateway::config::testing::TestConfig;

static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    let config = TestConfig::new().parse();
    JwtVerifier::with_secret(&config.auth, b"fuzz-secret-fuzz-secret-fuzz-secret-0123")
});

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    if let BearerToken::Present(token) = bearer_token(&headers) {
        if let Ok(username) = VERIFIER.verify(token) {
            assert!(is_sane_username(&username));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = VERIFIER.verify(text);
    }
});
