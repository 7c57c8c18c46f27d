//! The file's keyword values (`load_balancing = "consistent"`), each an
//! enum parsed once, as the file is read; the modules that act on them
//! import the enum from here. A word that is none of its enum's is kept as
//! written ([`Word::Unknown`]), so validation names its key and line with
//! every other problem of the file at once (a serde error would stop at the
//! first, without the line of a route).

use std::fmt;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Deserializer};

/// An enum the file names by words.
pub trait Keyword: Sized + Copy + PartialEq + 'static {
    /// Every word, with the value it names.
    const WORDS: &'static [(&'static str, Self)];
    /// What a refused word is not: `'x' is not {EXPECTED}`.
    const EXPECTED: &'static str;

    /// The word this value is written as.
    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(word, _)| word)
    }
}

/// A keyword as the file wrote it: known, or kept for validation to refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word<K> {
    Known(K),
    Unknown(String),
}

impl<K: Keyword> Word<K> {
    /// The value; `None` only for a word validation refuses.
    pub fn known(&self) -> Option<K> {
        match self {
            Self::Known(k) => Some(*k),
            Self::Unknown(_) => None,
        }
    }

    /// The value, or validation's message for a word that is none of
    /// `K`'s.
    pub fn parsed(&self) -> Result<K, String> {
        match self {
            Self::Known(k) => Ok(*k),
            Self::Unknown(word) => Err(format!("'{word}' is not {}", K::EXPECTED)),
        }
    }

    /// Validation's message for a word that is none of `K`'s.
    pub fn problem(&self) -> Option<String> {
        self.parsed().err()
    }
}

impl<K: Keyword + Default> Word<K> {
    /// The value, or `K`'s default for a word validation refused (a file
    /// that fails validation never reaches the code that asks).
    pub fn get(&self) -> K {
        self.known().unwrap_or_default()
    }
}

impl<K: Keyword + Default> Default for Word<K> {
    fn default() -> Self {
        Self::Known(K::default())
    }
}

impl<K: Keyword> From<K> for Word<K> {
    fn from(k: K) -> Self {
        Self::Known(k)
    }
}

impl<K: Keyword> fmt::Display for Word<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(k) => f.write_str(k.word()),
            Self::Unknown(word) => f.write_str(word),
        }
    }
}

impl<'de, K: Keyword> Deserialize<'de> for Word<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        Ok(match K::WORDS.iter().find(|(w, _)| *w == word) {
            Some((_, value)) => Self::Known(*value),
            None => Self::Unknown(word),
        })
    }
}

/// How a pool picks a peer (`load_balancing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balancing {
    #[default]
    RoundRobin,
    LeastConnections,
    /// By user id (client IP when anonymous): one user, one peer while it
    /// is eligible.
    Consistent,
}

impl Keyword for Balancing {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("round_robin", Self::RoundRobin),
        ("least_connections", Self::LeastConnections),
        ("consistent", Self::Consistent),
    ];
    const EXPECTED: &'static str = "round_robin, least_connections or consistent";
}

/// What a route speaks to its peers (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 without TLS (gRPC to a local service).
    H2c,
    /// HTTP/2 over TLS.
    H2,
}

impl UpstreamProtocol {
    pub fn is_tls(self) -> bool {
        self == Self::H2
    }
}

impl Keyword for UpstreamProtocol {
    const WORDS: &'static [(&'static str, Self)] =
        &[("http1", Self::Http1), ("h2c", Self::H2c), ("h2", Self::H2)];
    const EXPECTED: &'static str = "http1, h2c or h2";
}

/// Where rate-limit counters live (`[rate_limit] store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitStore {
    /// This process's counters.
    #[default]
    Local,
    /// One budget shared by every instance.
    Redis,
}

impl Keyword for LimitStore {
    const WORDS: &'static [(&'static str, Self)] =
        &[("local", Self::Local), ("redis", Self::Redis)];
    const EXPECTED: &'static str = "local or redis";
}

/// What decides while the store cannot (`on_store_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreFallback {
    /// This process's own limiter (the budget is per instance meanwhile).
    #[default]
    Local,
    Allow,
    /// 503 `SERVICE_UNAVAILABLE`.
    Deny,
}

impl Keyword for StoreFallback {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("local", Self::Local),
        ("allow", Self::Allow),
        ("deny", Self::Deny),
    ];
    const EXPECTED: &'static str = "local, allow or deny";
}

/// The lowest TLS version a listener accepts (`min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl Keyword for MinVersion {
    const WORDS: &'static [(&'static str, Self)] = &[("1.2", Self::Tls12), ("1.3", Self::Tls13)];
    const EXPECTED: &'static str = "1.2 or 1.3 (nothing lower is offered)";
}

/// The algorithms a key can be pinned to (`[[auth.keys]] algorithm`); no
/// default: a key names its own.
impl Keyword for Algorithm {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("HS256", Self::HS256),
        ("RS256", Self::RS256),
        ("ES256", Self::ES256),
        ("EdDSA", Self::EdDSA),
    ];
    const EXPECTED: &'static str = "HS256, RS256, ES256 or EdDSA";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        balancing: Word<Balancing>,
        algorithm: Word<Algorithm>,
    }

    #[test]
    fn words_parse_once_and_unknown_ones_wait_for_validation() {
        let doc: Doc = toml::from_str("balancing = 'consistent'\nalgorithm = 'EdDSA'").unwrap();
        assert_eq!(doc.balancing.get(), Balancing::Consistent);
        assert_eq!(doc.algorithm.known(), Some(Algorithm::EdDSA));
        assert_eq!(doc.algorithm.to_string(), "EdDSA");
        let doc: Doc = toml::from_str("algorithm = 'hs256'").unwrap();
        assert_eq!(doc.balancing.get(), Balancing::RoundRobin);
        assert_eq!(doc.algorithm.known(), None);
        assert_eq!(
            doc.algorithm.problem().as_deref(),
            Some("'hs256' is not HS256, RS256, ES256 or EdDSA")
        );
        assert!(toml::from_str::<Doc>("algorithm = 256").is_err());
    }

    #[test]
    fn every_value_has_its_word() {
        assert_eq!(StoreFallback::Deny.word(), "deny");
        assert_eq!(Balancing::LeastConnections.word(), "least_connections");
        assert_eq!(
            Word::<MinVersion>::Unknown("1.1".into())
                .problem()
                .as_deref(),
            Some("'1.1' is not 1.2 or 1.3 (nothing lower is offered)")
        );
        assert!(UpstreamProtocol::H2.is_tls() && !UpstreamProtocol::H2c.is_tls());
        for (word, value) in Balancing::WORDS {
            assert_eq!(value.word(), *word);
        }
        let doc: Doc = toml::from_str("balancing = 'random'\nalgorithm = 'none'").unwrap();
        assert_eq!(
            doc.balancing.problem().as_deref(),
            Some("'random' is not round_robin, least_connections or consistent")
        );
        assert_eq!(doc.algorithm.known(), None);
    }
}
