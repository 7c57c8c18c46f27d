//! Any set of request headers through identity stripping and the
//! forwarding headers: no header an upstream could read as X-User-Id or
//! X-Username survives, everything else does, and X-Forwarded-For ends with
//! the client address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;
use robeing_gateway::proxy::forwarding::{
    forwarded_for, is_identity_header, strip_identity_headers,
};

fuzz_target!(|data: &[u8]| {
    let mut req = RequestHeader::build("GET", b"/", None).expect("request");
    let mut kept = 0;
    // Lines of `name: value`, as a client would send them.
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if !is_identity_header(name.as_str(), &[]) {
            kept += 1;
        }
        let _ = req.append_header(name, value);
    }
    strip_identity_headers(&mut req, &[]);
    assert!(req.headers.keys().all(|n| !is_identity_header(n.as_str(), &[])));
    assert_eq!(req.headers.len(), kept);
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    if let Some(xff) = forwarded_for(&req.headers, Some(client)) {
        assert!(xff.to_str().is_ok_and(|v| v.ends_with("127.0.0.1")));
    }
});
