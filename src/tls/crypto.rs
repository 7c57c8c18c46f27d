//! The one crypto library of the binary: aws-lc-rs.
//!
//! jsonwebtoken verifies tokens with it (its `aws_lc_rs` feature), and every
//! rustls configuration runs on its provider: the listeners and upstream
//! TLS built by Pingora (which use the process default installed here), and
//! the clients the gateway builds itself (PostgreSQL, JWKS and OTLP). Pingora
//! would install ring as the default on its first TLS use; installing first
//! is what keeps one library. Why aws-lc-rs: docs/benchmarks.md, "One crypto
//! library".

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The rustls provider every client and listener uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            // Whoever installs first wins; an earlier install of this same
            // function's provider is the only one the gateway makes.
            let _ = CryptoProvider::install_default(provider.as_ref().clone());
            provider
        })
        .clone()
}

/// Makes aws-lc-rs the process default before Pingora or a client asks for
/// one (called first thing by `main`, and by every builder here).
pub fn install() {
    let _ = provider();
}

/// The TLS settings of the gateway's ureq clients (JWKS and OTLP): this
/// provider, not the ring one ureq would otherwise pick.
pub fn ureq_tls() -> ureq::tls::TlsConfig {
    ureq::tls::TlsConfig::builder()
        .unversioned_rustls_crypto_provider(provider())
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_default_is_aws_lc_rs() {
        super::install();
        let default = rustls::crypto::CryptoProvider::get_default().expect("installed");
        // The key provider's type names its library.
        assert!(
            format!("{:?}", default.key_provider).contains("AwsLcRs"),
            "{:?}",
            default.key_provider
        );
        // Pingora's own install, after ours, changes nothing.
        pingora::tls::install_default_crypto_provider();
        let after = rustls::crypto::CryptoProvider::get_default().expect("installed");
        assert!(std::ptr::eq(default.as_ref(), after.as_ref()));
    }
}
