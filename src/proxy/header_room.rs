//! Pingora's headers made over once, before the gateway adds its own to
//! them: without the header-case map, and with room for what is added.
//!
//! Pingora hands `upstream_request_filter` a copy of the client's header
//! and `response_filter` the upstream's, each sized for exactly the headers
//! it arrived with and each with a second map that keeps every name's case.
//! The headers the gateway and Pingora add then grew both maps, twice each
//! way: 8 grows, about 6,000 of the cached path's instructions
//! (`docs/benchmarks.md`). Made over here, names leave lower-case (the
//! common ones title-cased by Pingora), as HAProxy and Envoy send them and
//! as HTTP/2 always does; field names are case-insensitive (RFC 9110 §5.1).
//! An upstream's own reason phrase gives way to the standard one, which is
//! all HTTP/2 clients ever see.

use http::Uri;
use pingora::http::{RequestHeader, ResponseHeader};

/// The headers the gateway sets upstream (identity, request id, forwarding,
/// trace, `Accept-Encoding`), and `Host` when Pingora adds it.
const ADDED_UPSTREAM: usize = 8;
/// The headers the gateway and Pingora set on a response (request id,
/// HSTS, CORS, rate limit, encoding, `Date`, `Connection`).
const ADDED_DOWNSTREAM: usize = 8;

/// The request that leaves for the upstream, on every try: caseless, with
/// room for the gateway's headers and `claim_headers` more, `add` writing
/// them straight into its map, and with `target` (the normalized
/// origin-form target) when it differs from the client's. Without one, the
/// client's target is sent from its URI, which admission has checked is
/// exactly the bytes received.
pub fn upstream_request(
    upstream: &mut RequestHeader,
    target: Option<&Uri>,
    claim_headers: usize,
    add: impl FnOnce(&mut http::HeaderMap) -> pingora::Result<()>,
) -> pingora::Result<()> {
    let send_end_stream = upstream.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(upstream, placeholder));
    // Best effort: a map too large to grow keeps growing header by header.
    let _ = parts.headers.try_reserve(ADDED_UPSTREAM + claim_headers);
    if let Some(target) = target {
        parts.uri = target.clone();
    }
    let added = add(&mut parts.headers);
    *upstream = RequestHeader::from(parts);
    if let Some(send_end_stream) = send_end_stream {
        upstream.set_send_end_stream(send_end_stream);
    }
    added
}

/// The upstream's response as the client will get it: caseless, with room
/// for the headers the gateway and Pingora add.
pub fn downstream_response(response: &mut ResponseHeader) {
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(response, placeholder));
    let _ = parts.headers.try_reserve(ADDED_DOWNSTREAM);
    *response = ResponseHeader::from(parts);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_keeps_its_headers_target_and_values() {
        let mut req = RequestHeader::build("POST", b"/a/../b?q=1", Some(2)).unwrap();
        req.append_header("X-Custom", "1").unwrap();
        req.append_header("X-Custom", "2").unwrap();
        req.append_header("Host", "example.test").unwrap();
        let target: Uri = "/b?q=1".parse().unwrap();
        upstream_request(&mut req, Some(&target), 0, |_| Ok(())).unwrap();
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.raw_path(), b"/b?q=1");
        let values: Vec<_> = req.headers.get_all("x-custom").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(!req.has_case());
        // Room for the added headers without a grow.
        let room = req.headers.capacity() - req.headers.len();
        assert!(room >= ADDED_UPSTREAM, "{room}");
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("x-custom: 1\r\nx-custom: 2\r\n"), "{wire}");
        assert!(wire.contains("Host: example.test\r\n"), "{wire}");
    }

    #[test]
    fn without_a_target_the_clients_uri_is_sent() {
        let mut req = RequestHeader::build("GET", b"/x/y?z=%20", None).unwrap();
        upstream_request(&mut req, None, 0, |_| Ok(())).unwrap();
        assert_eq!(req.raw_path(), b"/x/y?z=%20");
    }

    #[test]
    fn the_response_keeps_status_and_headers() {
        let mut resp = ResponseHeader::build(503, Some(1)).unwrap();
        resp.append_header("Retry-After", "3").unwrap();
        downstream_response(&mut resp);
        assert_eq!(resp.status, 503);
        assert_eq!(resp.headers["retry-after"], "3");
        assert!(resp.headers.capacity() - resp.headers.len() >= ADDED_DOWNSTREAM);
    }
}
