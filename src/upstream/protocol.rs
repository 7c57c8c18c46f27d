//! The protocol a route speaks to its peers (`protocol` in `[[routes]]`):
//! HTTP/1.1, or HTTP/2 in clear text with prior knowledge (`h2c`), as gRPC
//! servers without TLS expect. The downstream protocol is independent: an
//! HTTP/1.1 client may reach an h2c peer and an HTTP/2 client an HTTP/1.1
//! one.

use pingora::upstreams::peer::HttpPeer;

/// Streams Pingora opens on one HTTP/2 connection to a peer before it
/// opens another connection.
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
}

impl UpstreamProtocol {
    pub fn from_config(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("http1") => Ok(Self::Http1),
            Some("h2c") => Ok(Self::H2c),
            Some(other) => Err(format!("'{other}' is not http1 or h2c")),
        }
    }

    /// Sets the peer's HTTP versions: h2c is HTTP/2 only, so Pingora
    /// speaks it without TLS and without an upgrade.
    pub fn apply(self, peer: &mut HttpPeer) {
        if self == Self::H2c {
            peer.options.set_http_version(2, 2);
            peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(
            UpstreamProtocol::from_config(None),
            Ok(UpstreamProtocol::Http1)
        );
        assert_eq!(
            UpstreamProtocol::from_config(Some("h2c")),
            Ok(UpstreamProtocol::H2c)
        );
        let err = UpstreamProtocol::from_config(Some("http3")).unwrap_err();
        assert!(err.contains("'http3'"), "{err}");
    }

    #[test]
    fn h2c_peers_speak_http2_only() {
        let mut peer = HttpPeer::new("127.0.0.1:1", false, String::new());
        UpstreamProtocol::H2c.apply(&mut peer);
        assert_eq!(peer.options.alpn.get_min_http_version(), 2);
        assert_eq!(peer.options.alpn.get_max_http_version(), 2);
        let mut plain = HttpPeer::new("127.0.0.1:1", false, String::new());
        UpstreamProtocol::Http1.apply(&mut plain);
        assert_eq!(plain.options.alpn.get_max_http_version(), 1);
    }
}
