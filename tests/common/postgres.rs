//! The real PostgreSQL `make test` starts (pg_virtualenv exports PG*): the
//! schema, users, and a psql runner.

use super::*;

pub(crate) fn pg_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "PostgreSQL is required and {name} is not set. Run `make test`, which starts a \
             throwaway cluster with pg_virtualenv, or export PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE."
        )
    })
}

/// The connection string of the test cluster (key=value form).
pub fn database_url() -> String {
    format!(
        "host={} port={} user={} password={} dbname={}",
        pg_env("PGHOST"),
        pg_env("PGPORT"),
        pg_env("PGUSER"),
        std::env::var("PGPASSWORD").unwrap_or_default(),
        pg_env("PGDATABASE"),
    )
}

/// Runs psql with `args` (stopping at the first error); returns stdout.
pub(crate) fn run_psql(args: &[&str]) -> String {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .expect("psql must be installed (make test installs PostgreSQL)");
    assert!(
        out.status.success(),
        "psql {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs SQL through psql and returns its unaligned output.
pub fn psql(sql: &str) -> String {
    run_psql(&["-A", "-t", "-c", sql])
}

/// Creates the schema and fixed users once per test binary.
pub fn ensure_schema() {
    static SCHEMA: Once = Once::new();
    SCHEMA.call_once(|| {
        database_url();
        run_psql(&[
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema.sql"),
        ]);
    });
}

/// Adds a user with a fresh UUID and returns the UUID.
pub fn add_user(username: &str) -> String {
    ensure_schema();
    psql(&format!(
        "INSERT INTO \"user\" (id, username) VALUES (gen_random_uuid(), '{username}') \
         ON CONFLICT (username) DO UPDATE SET username = EXCLUDED.username RETURNING id"
    ))
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The port of the test cluster.
pub fn pg_port() -> u16 {
    pg_env("PGPORT").parse().expect("PGPORT")
}

/// Installs `conf/user-notify.sql` (once per test binary).
pub fn ensure_user_notify_trigger() {
    static TRIGGER: Once = Once::new();
    TRIGGER.call_once(|| {
        ensure_schema();
        let sql = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/user-notify.sql");
        run_psql(&["-f", sql]);
    });
}
