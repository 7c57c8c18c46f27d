//! Micro-benchmarks of the per-request work: token verification (first
//! sight for HS256, RS256, ES256 and EdDSA, and remembered), path
//! normalization plus route lookup at 10, 1,000 and 100,000 routes, an
//! identity-cache hit, and envelope rendering.
//!
//! `make bench` (or `cargo bench --bench hot_path`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use robeing_gateway::auth::directory::FileDirectory;
use robeing_gateway::auth::identity::IdentityCache;
use robeing_gateway::auth::keys::{mint, public_key_from_pem, SigningKey};
use robeing_gateway::auth::token::{base_validation, JwtVerifier};
use robeing_gateway::config::testing::TestConfig;
use robeing_gateway::config::{self, UsersConfig};
use robeing_gateway::errors::{render_envelope, GatewayError};
use robeing_gateway::routing::table::test_route;
use robeing_gateway::routing::table::RouteTable;
use robeing_gateway::wire::path::normalize_path;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";

fn sample_config() -> config::Config {
    TestConfig::new().parse()
}

fn token_verification(c: &mut Criterion) {
    let mut auth = sample_config().auth;
    let remembering = JwtVerifier::with_secret(&auth, SECRET);
    let token = mint(&auth, &remembering.keys()[0], "alice", 3600).expect("token");
    // A client's next requests: the verified-token cache answers.
    c.bench_function("jwt/verify_hs256_remembered", |b| {
        b.iter(|| remembering.verify(black_box(&token)).expect("valid"))
    });
    // A token seen for the first time: signature, base64 and JSON every time.
    auth.verified_token_cache = 0;
    let verifier = JwtVerifier::with_secret(&auth, SECRET);
    c.bench_function("jwt/verify_hs256", |b| {
        b.iter(|| verifier.verify(black_box(&token)).expect("valid"))
    });
    // The public-key algorithms, first sight, keys made by openssl now.
    let dir = std::env::temp_dir().join(format!("rgw-bench-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("key dir");
    for (name, alg, genpkey) in [
        (
            "rs256",
            Algorithm::RS256,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        (
            "es256",
            Algorithm::ES256,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        ("eddsa", Algorithm::EdDSA, &["-algorithm", "ED25519"][..]),
    ] {
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        let ok = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(genpkey)
            .arg("-out")
            .arg(&private)
            .status()
            .expect("openssl (apt-get install openssl)")
            .success()
            && std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public)
                .status()
                .expect("openssl")
                .success();
        assert!(ok, "openssl could not make the {name} key");
        let pem = std::fs::read(&private).expect("private key");
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("encoding key");
        let mut header = Header::new(alg);
        header.kid = Some(name.into());
        let claims = serde_json::json!({"username": "alice", "exp": 4_102_444_800u64});
        let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("token");
        let decoding =
            public_key_from_pem(alg, &std::fs::read_to_string(&public).expect("public key"))
                .expect("decoding key");
        let key = SigningKey::new(
            Some(name.into()),
            alg,
            decoding,
            &base_validation(&auth),
            None,
        );
        let verifier = JwtVerifier::new(&auth, vec![key], None);
        c.bench_function(&format!("jwt/verify_{name}"), |b| {
            b.iter(|| verifier.verify(black_box(&token)).expect("valid"))
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn table_of(n: usize) -> RouteTable {
    let mut table = RouteTable::default();
    for i in 0..n {
        table.insert(test_route(&format!("/api/svc{i}/v1/*")));
    }
    table
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route/normalize_and_lookup");
    for n in [10usize, 1_000, 100_000] {
        let table = table_of(n);
        let clean = format!("/api/svc{}/v1/items/42", n / 2);
        let dirty = format!("/api/other/../svc{}/%761/./items/42", n / 2);
        for (label, path) in [("clean", clean), ("dot_segments", dirty)] {
            group.bench_with_input(BenchmarkId::new(label, n), &path, |b, path| {
                b.iter(|| {
                    let normal = normalize_path(black_box(path)).expect("normal");
                    table.lookup(&normal).expect("route").policy.auth_required
                })
            });
        }
    }
    group.finish();
}

fn identity_cache_hit(c: &mut Criterion) {
    let users: UsersConfig = sample_config().users;
    let dir = FileDirectory::load(std::path::Path::new("conf/users.toml")).expect("users");
    let cache = IdentityCache::new(Box::new(dir), &users);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(cache.resolve("alice")).expect("alice");
    c.bench_function("identity/cache_hit", |b| {
        b.iter(|| rt.block_on(cache.resolve(black_box("alice"))).expect("hit"))
    });
}

fn envelope(c: &mut Criterion) {
    let id = http::HeaderValue::from_static("req_0123456789abcdef0123456789abcdef");
    c.bench_function("errors/render_envelope", |b| {
        b.iter(|| render_envelope(black_box(&GatewayError::TokenExpired), &id).expect("render"))
    });
}

criterion_group!(
    benches,
    token_verification,
    route_lookup,
    identity_cache_hit,
    envelope
);
criterion_main!(benches);
