//! The protocol a route speaks to its peers (`protocol` in `[[routes]]`):
//! HTTP/1.1; HTTP/2 in clear text with prior knowledge (`h2c`), as gRPC
//! servers without TLS expect; or HTTP/2 over TLS (`h2`), the peer's
//! certificate checked against `tls_ca_file` (else the system's roots) for
//! `tls_server_name` (else the peer's host). The downstream protocol is
//! independent: an HTTP/1.1 client may reach an h2 peer and an HTTP/2
//! client an HTTP/1.1 one.

use std::sync::Arc;

use pingora::tls::RootCertStore;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Streams Pingora opens on one HTTP/2 connection to a peer before it
/// opens another connection.
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

use crate::config::UpstreamProtocol;

/// The TLS side of a route's `h2` peers: the trusted roots (none: the
/// system's) and the name to ask for and check (none: the peer's host).
#[derive(Clone, Default)]
pub struct UpstreamTls {
    pub ca: Option<Arc<[WrappedX509]>>,
    /// A hash of the roots: Pingora pools connections by address and name
    /// but not by CA, so a connection verified against one route's roots
    /// must not serve a route that trusts others (`HttpPeer::group_key`).
    pub ca_group: u64,
    pub server_name: Option<String>,
}

impl UpstreamTls {
    /// Reads `tls_ca_file`: PEM certificates, each one a usable trust anchor.
    pub fn new(ca_file: Option<&str>, server_name: Option<&str>) -> Result<Self, String> {
        let ca = match ca_file {
            None => None,
            Some(path) => Some(read_roots(path)?),
        };
        let ca_group = ca.as_deref().map_or(0, |roots| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for root in roots {
                root.borrow_raw_cert().hash(&mut hasher);
            }
            hasher.finish()
        });
        Ok(Self {
            ca,
            ca_group,
            server_name: server_name.map(str::to_owned),
        })
    }
}

fn read_roots(path: &str) -> Result<Arc<[WrappedX509]>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    let mut roots = RootCertStore::empty();
    let mut wrapped = Vec::with_capacity(certs.len());
    for cert in certs {
        // rustls's own parser first: what it accepts the X.509 parser
        // behind `WrappedX509` reads too.
        roots
            .add(cert.clone())
            .map_err(|e| format!("{path}: not a usable certificate: {e}"))?;
        wrapped.push(WrappedX509::new(cert.to_vec(), parse_x509));
    }
    Ok(wrapped.into())
}

/// The peer template for `protocol` at `addr` (named `host` in the
/// configuration): its HTTP versions and, for `h2`, TLS.
pub fn peer_for(
    protocol: UpstreamProtocol,
    addr: std::net::SocketAddr,
    host: &str,
    tls: &UpstreamTls,
) -> HttpPeer {
    // A name only where TLS needs one: the peer is cloned per try, and an
    // empty name costs no allocation.
    let sni = if protocol.is_tls() {
        tls.server_name.as_deref().unwrap_or(host).to_owned()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, protocol.is_tls(), sni);
    if protocol != UpstreamProtocol::Http1 {
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    if protocol.is_tls() {
        peer.options.ca = tls.ca.clone();
        peer.group_key = tls.ca_group;
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> std::net::SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn peers_speak_what_their_protocol_says() {
        let none = UpstreamTls::default();
        let h2c = peer_for(UpstreamProtocol::H2c, addr(), "127.0.0.1", &none);
        assert_eq!(h2c.options.alpn.get_min_http_version(), 2);
        assert!(!pingora::upstreams::peer::Peer::tls(&h2c));
        assert!(h2c.sni.is_empty(), "no name without TLS");
        let plain = peer_for(UpstreamProtocol::Http1, addr(), "127.0.0.1", &none);
        assert_eq!(plain.options.alpn.get_max_http_version(), 1);
        let named = UpstreamTls {
            server_name: Some("api.internal".into()),
            ..UpstreamTls::default()
        };
        let h2 = peer_for(UpstreamProtocol::H2, addr(), "10.0.0.1", &named);
        assert!(pingora::upstreams::peer::Peer::tls(&h2));
        assert_eq!(h2.sni, "api.internal");
        assert_eq!(h2.options.alpn.get_min_http_version(), 2);
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("rgw-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let err = UpstreamTls::new(empty.to_str(), None).err().unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = UpstreamTls::new(Some("/nonexistent/ca.pem"), None)
            .err()
            .unwrap();
        assert!(err.contains("cannot read /nonexistent/ca.pem"), "{err}");
    }
}
