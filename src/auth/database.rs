//! The user directory's PostgreSQL connection settings: the connection
//! string from the environment (`users.database_url_env`), with libpq's TLS
//! options honoured through rustls (the gateway's one TLS stack), for the
//! pool and the LISTEN connection alike.
//!
//! | `sslmode` | link | the server's certificate |
//! |---|---|---|
//! | absent, `disable`, `allow`, `prefer` | plain | – |
//! | `require` | TLS | not checked, unless `sslrootcert` is given (then as `verify-ca`), as libpq does |
//! | `verify-ca` | TLS | chains to `sslrootcert` |
//! | `verify-full` | TLS | chains to `sslrootcert` and names the host |
//!
//! tokio-postgres knows neither `verify-*` nor `sslrootcert`, so both are
//! taken out of the string here ([`split_tls_options`]) and the rest is
//! parsed by tokio-postgres as before. A TLS link that cannot be verified
//! fails closed: the lookup fails, and the request gets 503.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the link to PostgreSQL is secured (`sslmode` and `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    Plain,
    /// Encrypted, the certificate not checked (`require` without a root).
    EncryptOnly,
    /// Encrypted, the chain checked against these roots; the name too when
    /// `check_name`.
    Verify {
        roots: String,
        check_name: bool,
    },
}

/// A parsed connection string and its TLS connector (none: plain).
#[derive(Clone)]
pub struct Database {
    pub config: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
}

impl Database {
    /// Parses `url` (a URL or `key=value` pairs); the messages are safe to
    /// show (they never repeat the string, which may hold a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (rest, mode) = split_tls_options(url)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| format!("not a valid PostgreSQL connection string: {e}"))?;
        let tls = match mode {
            TlsMode::Plain => None,
            mode => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(&mode)?))
            }
        };
        Ok(Self { config, tls })
    }
}

/// The string without `sslmode` and `sslrootcert`, and what they asked for.
pub fn split_tls_options(url: &str) -> Result<(String, TlsMode), String> {
    let (rest, sslmode, rootcert) =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            split_url(url)
        } else {
            split_pairs(url)
        };
    let mode = match (sslmode.as_deref(), rootcert) {
        (None | Some("disable" | "allow" | "prefer"), _) => TlsMode::Plain,
        (Some("require"), None) => TlsMode::EncryptOnly,
        (Some("require" | "verify-ca"), Some(roots)) => TlsMode::Verify {
            roots,
            check_name: false,
        },
        (Some("verify-full"), Some(roots)) => TlsMode::Verify {
            roots,
            check_name: true,
        },
        (Some(mode @ ("verify-ca" | "verify-full")), None) => {
            return Err(format!(
                "sslmode={mode} needs sslrootcert (the PEM file of the roots to check against)"
            ))
        }
        (Some(other), _) => {
            return Err(format!(
            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ))
        }
    };
    Ok((rest, mode))
}

/// URL form: the options are query parameters.
fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None, None);
    };
    let (mut sslmode, mut rootcert) = (None, None);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|param| {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "sslmode" => sslmode = Some(percent_decode(value)),
                "sslrootcert" => rootcert = Some(percent_decode(value)),
                _ => return true,
            }
            false
        })
        .collect();
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, sslmode, rootcert)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` form: pairs separated by spaces, values optionally in
/// single quotes with `\` escapes (libpq's rules). The other pairs are
/// kept exactly as written.
fn split_pairs(text: &str) -> (String, Option<String>, Option<String>) {
    let (mut sslmode, mut rootcert) = (None, None);
    let mut kept = String::with_capacity(text.len());
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (pair, key, value, after) = next_pair(rest);
        match key {
            "sslmode" => sslmode = Some(value),
            "sslrootcert" => rootcert = Some(value),
            _ => {
                if !kept.is_empty() {
                    kept.push(' ');
                }
                kept.push_str(pair);
            }
        }
        rest = after.trim_start();
    }
    (kept, sslmode, rootcert)
}

/// The first pair of `text`: its raw text, key, unquoted value, and what
/// follows it.
fn next_pair(text: &str) -> (&str, &str, String, &str) {
    let eq = text.find('=').unwrap_or(text.len());
    let key = text[..eq].trim();
    let after_eq = text[eq..].strip_prefix('=').unwrap_or("").trim_start();
    let value_start = text.len() - after_eq.len();
    let mut value = String::new();
    let mut end = value_start;
    if let Some(quoted) = after_eq.strip_prefix('\'') {
        let mut chars = quoted.char_indices();
        end += 1;
        while let Some((i, c)) = chars.next() {
            end = value_start + 1 + i + c.len_utf8();
            match c {
                '\\' => {
                    if let Some((j, escaped)) = chars.next() {
                        value.push(escaped);
                        end = value_start + 1 + j + escaped.len_utf8();
                    }
                }
                '\'' => break,
                c => value.push(c),
            }
        }
    } else {
        let len = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
        value.push_str(&after_eq[..len]);
        end = value_start + len;
    }
    (&text[..end], key, value, &text[end..])
}

/// The rustls client for `mode` (not `Plain`), on the gateway's one
/// crypto provider.
fn client_config(mode: &TlsMode) -> Result<ClientConfig, String> {
    let provider = crate::tls::crypto::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        TlsMode::Verify {
            roots,
            check_name: true,
        } => WebPkiServerVerifier::builder_with_provider(Arc::new(read_roots(roots)?), provider)
            .build()
            .map_err(|e| format!("sslrootcert {roots}: {e}"))?,
        TlsMode::Verify { roots, .. } => {
            let chain = WebPkiServerVerifier::builder_with_provider(
                Arc::new(read_roots(roots)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("sslrootcert {roots}: {e}"))?;
            Arc::new(LibpqVerifier {
                chain: Some(chain),
                provider,
            })
        }
        TlsMode::Plain | TlsMode::EncryptOnly => Arc::new(LibpqVerifier {
            chain: None,
            provider,
        }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn read_roots(path: &str) -> Result<RootCertStore, String> {
    crate::tls::read_root_store(std::path::Path::new(path)).map_err(|m| format!("sslrootcert {m}"))
}

/// libpq's weaker checks: `verify-ca` (`chain`: it must verify, the name
/// is not checked, the roots being private to this database) and `require`
/// without roots (no `chain`: the certificate taken as it comes). The
/// handshake signature is checked either way.
#[derive(Debug)]
struct LibpqVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsMode) {
        split_tls_options(url).unwrap()
    }

    #[test]
    fn url_options_are_taken_out() {
        assert_eq!(
            split("postgres://u:p@127.0.0.1:5432/db"),
            ("postgres://u:p@127.0.0.1:5432/db".into(), TlsMode::Plain)
        );
        assert_eq!(
            split("postgres://u@127.0.0.1/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=gw"),
            (
                "postgres://u@127.0.0.1/db?application_name=gw".into(),
                TlsMode::Verify { roots: "/etc/ca.pem".into(), check_name: true }
            )
        );
        assert_eq!(
            split("postgresql://h/db?sslmode=require").1,
            TlsMode::EncryptOnly
        );
        assert_eq!(
            split("postgresql://h/db?sslmode=require&sslrootcert=/ca.pem").1,
            TlsMode::Verify {
                roots: "/ca.pem".into(),
                check_name: false
            }
        );
        assert_eq!(split("postgresql://h/db?sslmode=prefer").1, TlsMode::Plain);
    }

    #[test]
    fn pair_options_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            split("host=127.0.0.1 port=5 sslmode=verify-ca sslrootcert='/my ca\\'s.pem' user=x password='a b'"),
            (
                "host=127.0.0.1 port=5 user=x password='a b'".into(),
                TlsMode::Verify { roots: "/my ca's.pem".into(), check_name: false }
            )
        );
        assert_eq!(
            split("host = 127.0.0.1 sslmode = require dbname=d"),
            ("host = 127.0.0.1 dbname=d".into(), TlsMode::EncryptOnly)
        );
    }

    #[test]
    fn bad_options_are_explained_without_the_string() {
        let e = split_tls_options("host=h password=secret sslmode=verify-full").unwrap_err();
        assert!(
            e.contains("needs sslrootcert") && !e.contains("secret"),
            "{e}"
        );
        let e = split_tls_options("host=h sslmode=sometimes").unwrap_err();
        assert!(e.contains("sslmode=sometimes"), "{e}");
        let e = Database::parse("host=h sslmode=verify-ca sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(
            e.contains("sslrootcert /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
    }
}
