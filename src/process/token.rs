//! The `token` command: a development token for `username`, signed with
//! the configured key (`kid`, or the only one), valid for `ttl_seconds`.
//! It reads the file as start-up does, so it refuses the same files.

use std::path::Path;

use crate::auth::keys;
use crate::auth::token::base_validation;
use crate::config;

/// The token, or the message the command fails with.
pub fn mint(
    conf: &Path,
    username: &str,
    ttl_seconds: u64,
    kid: Option<&str>,
) -> Result<String, String> {
    let loaded = config::load(conf).map_err(|e| e.to_string())?;
    let auth = &loaded.config.auth;
    let keys = keys::load_keys(auth, &base_validation(auth)).map_err(|e| e.to_string())?;
    keys::signing_key(&keys, kid)
        .and_then(|key| keys::mint(auth, key, username, ttl_seconds))
        .map_err(|e| format!("cannot mint token: {e}"))
}
