//! Writes the load bench's fixtures: N users (file directory and HAProxy
//! map), a token per user, a token for `alice`, one for `alice` with the
//! claims the identity-policy bench sends upstream and requires, and an
//! invalid token.
//!
//! `bench_fixtures DIR N` with the signing secret in `GATEWAY_JWT_SECRET`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: bench_fixtures DIR N"));
    let n: u128 = args.next().and_then(|n| n.parse().ok()).expect("N users");
    let secret = std::env::var("GATEWAY_JWT_SECRET").expect("GATEWAY_JWT_SECRET");
    let key = EncodingKey::from_secret(secret.as_bytes());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 6 * 3600;
    let token = |name: &str| {
        let claims = serde_json::json!({"username": name, "exp": exp});
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let (mut users, mut map, mut tokens) = (String::new(), String::new(), String::new());
    for i in 0..=n {
        let name = if i == n {
            "alice".to_owned()
        } else {
            format!("user{i}")
        };
        let id = uuid::Uuid::from_u128(0x6f1c_0000_0000_4000_8000_0000_0000_0000 + i);
        writeln!(users, "{name} = \"{id}\"").unwrap();
        writeln!(map, "{name} {id}").unwrap();
        if i < n {
            writeln!(tokens, "{}", token(&name)).unwrap();
        }
    }
    let alice = token("alice");
    let mut invalid = alice.clone();
    invalid.pop();
    invalid.push(if alice.ends_with('A') { 'B' } else { 'A' });
    std::fs::write(dir.join("users.toml"), users).unwrap();
    std::fs::write(dir.join("users.map"), map).unwrap();
    std::fs::write(dir.join("tokens.txt"), tokens).unwrap();
    std::fs::write(dir.join("alice.txt"), format!("{alice}\n")).unwrap();
    let claims = serde_json::json!({
        "username": "alice", "exp": exp, "email": "alice@example.test",
        "roles": ["admin", "dev"], "role": "admin"
    });
    let with_claims = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    std::fs::write(dir.join("alice-claims.txt"), format!("{with_claims}\n")).unwrap();
    std::fs::write(dir.join("invalid.txt"), format!("{invalid}\n")).unwrap();
}
