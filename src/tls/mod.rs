//! TLS at the edge (`[[server.tls]]`): rustls through Pingora's `rustls`
//! feature, on the aws-lc-rs provider of [`crypto`] (the same library the
//! JWT verification and every TLS client of the gateway use).
//!
//! Each TLS listener's certificate resolver ([`GatewayCerts`]) serves the
//! certificate the running configuration holds for it: a SIGHUP that read
//! new files changes what new handshakes get, and connections already open
//! keep theirs. Pingora's listener offers TLS 1.2 and 1.3 only
//! (1.0 and 1.1 are never negotiated); `min_version = "1.3"` is enforced by
//! the resolver, which refuses a ClientHello offering no TLS 1.3 suite. One
//! certificate per listener: a client asking for another name (SNI) gets
//! it all the same, and its own name check decides.

pub mod crypto;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::ALPN;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::TlsListenerConfig;
use crate::live::Live;

use crate::config::MinVersion;

/// What the running configuration serves on one TLS listener; rebuilt
/// with the rest of the state on every SIGHUP.
#[derive(Debug)]
pub struct TlsListener {
    pub addr: SocketAddr,
    pub key: Arc<CertifiedKey>,
    /// `Strict-Transport-Security` for its responses.
    pub hsts: Option<HeaderValue>,
}

/// The certificate resolver of one listener: whatever the running
/// configuration holds for its address, so a SIGHUP that read new files
/// changes what new handshakes get, and open connections keep theirs.
pub struct GatewayCerts {
    /// The running configuration's listeners.
    listeners: Live<Arc<[TlsListener]>>,
    addr: SocketAddr,
    min_version: MinVersion,
}

impl std::fmt::Debug for GatewayCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCerts")
            .field("addr", &self.addr)
            .finish()
    }
}

impl GatewayCerts {
    pub fn new(
        listeners: Live<Arc<[TlsListener]>>,
        config: &TlsListenerConfig,
    ) -> Result<Self, String> {
        Ok(Self {
            listeners,
            addr: config
                .listen
                .parse()
                .map_err(|e| format!("'{}': {e}", config.listen))?,
            min_version: config.min_version.get(),
        })
    }
}

impl ResolvesServerCert for GatewayCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.min_version == MinVersion::Tls13 && !offers_tls13(&hello) {
            // No certificate: the handshake fails with a TLS alert.
            return None;
        }
        self.listeners
            .get()
            .iter()
            .find(|l| l.addr == self.addr)
            .map(|l| l.key.clone())
    }
}

/// TLS 1.3 suites are the only ones named TLS13_*.
fn offers_tls13(hello: &ClientHello<'_>) -> bool {
    hello
        .cipher_suites()
        .iter()
        .any(|suite| format!("{suite:?}").starts_with("TLS13_"))
}

/// The certificate chain and key of a listener, read and matched now.
/// Errors name the file.
/// Trust anchors from a PEM file (`sslrootcert` of the directory's
/// connection string, `rate_limit.redis_ca_file`).
pub fn read_root_store(path: &Path) -> Result<pingora::tls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    root_store_from_pem(&pem, path)
}

/// Trust anchors from PEM text read from `path`: each certificate must be
/// one rustls can use, and there must be one.
pub fn root_store_from_pem(pem: &[u8], path: &Path) -> Result<pingora::tls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let shown = path.display();
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut store = pingora::tls::RootCertStore::empty();
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| format!("{shown}: not a usable certificate: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("{shown} holds no PEM certificate"));
    }
    Ok(store)
}

/// A listener's certificate chain and key, each file read and parsed on
/// its own so that a problem names the key it comes from (`cert_file` or
/// `key_file`), then matched.
pub fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, (&'static str, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crypto::install();
    let (cert, key) = (cert_file.display(), key_file.display());
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| ("cert_file", format!("cannot read {cert}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("cert_file", format!("{cert}: {e}")))?;
    if chain.is_empty() {
        return Err(("cert_file", format!("{cert} holds no PEM certificate")));
    }
    let private_key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(e) => ("key_file", format!("cannot read {key}: {e}")),
        e => (
            "key_file",
            format!("{key} holds no usable PEM private key: {e}"),
        ),
    })?;
    let provider =
        CryptoProvider::get_default().ok_or(("cert_file", "no TLS crypto provider".into()))?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|e| {
        (
            "key_file",
            format!("the key in {key} does not fit the certificate in {cert}: {e}"),
        )
    })
}

/// Pingora's settings for one listener: the running configuration's
/// certificate, ALPN h2 and http/1.1 (or http/1.1 only).
pub fn listener_settings(
    config: &TlsListenerConfig,
    certs: GatewayCerts,
) -> pingora::Result<TlsSettings> {
    // No files here: the resolver replaces them.
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(Arc::new(certs));
    settings.set_alpn(if config.http2 { ALPN::H2H1 } else { ALPN::H1 });
    Ok(settings)
}

/// The serving state of each `[[server.tls]]` listener: its certificate
/// read and matched now (problems name `server.tls[i]`); a listener the new
/// file no longer names keeps `previous`'s until the next handoff.
pub fn listeners(
    configs: &[TlsListenerConfig],
    previous: &[TlsListener],
) -> Result<Vec<TlsListener>, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut built = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let Ok(addr) = config.listen.parse::<SocketAddr>() else {
            continue; // named by validation already
        };
        match load_certified_key(&config.cert_file, &config.key_file) {
            Ok(key) => built.push(TlsListener {
                addr,
                key: Arc::new(key),
                hsts: config
                    .hsts_max_age_seconds
                    .and_then(|age| HeaderValue::try_from(format!("max-age={age}")).ok()),
            }),
            Err((file_key, m)) => problems.push((format!("server.tls[{i}].{file_key}"), m)),
        }
    }
    for old in previous {
        if !built.iter().any(|l| l.addr == old.addr) {
            built.push(TlsListener {
                addr: old.addr,
                key: old.key.clone(),
                hsts: old.hsts.clone(),
            });
        }
    }
    if problems.is_empty() {
        Ok(built)
    } else {
        Err(problems)
    }
}

/// The `Strict-Transport-Security` value of the TLS listener at `local`
/// (the address a TLS connection came in on), when it sets one.
pub fn hsts_of(listeners: &[TlsListener], local: std::net::SocketAddr) -> Option<HeaderValue> {
    listeners
        .iter()
        .find(|l| l.addr == local)
        .and_then(|l| l.hsts.clone())
}
