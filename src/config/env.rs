//! The one way a configuration reads the environment (`*_env` keys): a
//! variable that is unset or empty is missing, said the same way for every
//! key (the caller adds the key's name).

use std::ffi::OsString;

/// The value of `var`, as bytes (secrets need not be UTF-8).
pub fn value(var: &str) -> Result<OsString, String> {
    match std::env::var_os(var) {
        None => Err(format!("environment variable {var} is not set")),
        Some(v) if v.is_empty() => Err(format!("environment variable {var} is empty")),
        Some(v) => Ok(v),
    }
}

/// The value of `var` as text (a URL).
pub fn text(var: &str) -> Result<String, String> {
    value(var)?
        .into_string()
        .map_err(|_| format!("environment variable {var} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_and_empty_are_missing() {
        assert_eq!(
            value("ROBEING_TEST_SURELY_UNSET").unwrap_err(),
            "environment variable ROBEING_TEST_SURELY_UNSET is not set"
        );
        // PATH is set and not empty on every machine that runs tests.
        assert!(text("PATH").is_ok_and(|p| !p.is_empty()));
    }
}
