//! Response compression policy, on top of Pingora's compression module
//! (gzip, brotli, zstd; it adds `Vary: Accept-Encoding` and leaves
//! already-encoded responses alone).
//!
//! What this adds: q-values (Pingora takes the first listed encoding, even
//! `gzip;q=0`), and no compression for server-sent events, bodies below a
//! minimum size, or routes marked `raw` (Slack webhooks: bytes as sent).
//!
//! Brotli is withheld: Pingora 0.9's brotli encoder never finishes its
//! stream (cloudflare/pingora#1013), and strict decoders (Node's `fetch`,
//! the brotli CLI) reject every such body. Clients asking for `br` get zstd
//! or gzip when they accept them, else identity.

use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::modules::http::compression::ResponseCompression;
use pingora::modules::http::HttpModuleCtx;

/// Whether Pingora's module may produce `coding` (see the module docs).
fn offered(coding: &str) -> bool {
    !coding.eq_ignore_ascii_case("br")
}

/// The encodings of `Accept-Encoding`, best first, without those refused
/// with `q=0` or withheld: what Pingora's module should see. `None` when the
/// header can be used as it is.
pub fn preferred_encodings(accept: &HeaderValue) -> Option<HeaderValue> {
    let text = accept.to_str().ok()?;
    if !text.contains(';') && text.split(',').all(|c| offered(c.trim())) {
        return None;
    }
    let mut ranked: Vec<(f32, &str)> = text
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next()?.trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (!coding.is_empty() && q > 0.0 && offered(coding)).then_some((q, coding))
        })
        .collect();
    // Stable: equal weights keep the client's order.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let list: Vec<&str> = ranked.into_iter().map(|(_, c)| c).collect();
    let joined = if list.is_empty() {
        "identity".to_owned()
    } else {
        list.join(", ")
    };
    HeaderValue::from_str(&joined).ok()
}

/// Sets the compression level of this response (0: none), if the module
/// has not started on the body yet.
pub fn set_level(modules: &mut HttpModuleCtx, level: u32) {
    if let Some(compression) = modules.get_mut::<ResponseCompression>() {
        if compression.is_header_phase() {
            compression.adjust_level(level);
        }
    }
}

/// Whether a response must go out as the upstream sent it.
pub fn keep_uncompressed(resp: &ResponseHeader, raw_route: bool, min_size: u64) -> bool {
    if raw_route {
        return true;
    }
    let header = |name| {
        resp.headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if header(http::header::CONTENT_TYPE).is_some_and(|ct| {
        ct.trim_start()
            .get(..17)
            .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
    }) {
        return true;
    }
    header(http::header::CONTENT_LENGTH)
        .and_then(|len| len.trim().parse::<u64>().ok())
        .is_some_and(|len| len < min_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pref(text: &str) -> Option<String> {
        preferred_encodings(&HeaderValue::from_str(text).unwrap())
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn q_values_order_and_exclude() {
        assert_eq!(pref("gzip, zstd"), None);
        assert_eq!(
            pref("gzip;q=0.5, zstd;q=1, deflate;q=0.8").unwrap(),
            "zstd, deflate, gzip"
        );
        assert_eq!(pref("gzip;q=0, zstd").unwrap(), "zstd");
        assert_eq!(pref("gzip;q=0").unwrap(), "identity");
        assert_eq!(pref("zstd;q=0.5, gzip;q=0.5").unwrap(), "zstd, gzip");
        // Brotli is withheld (cloudflare/pingora#1013).
        assert_eq!(pref("br, gzip").unwrap(), "gzip");
        assert_eq!(pref("br").unwrap(), "identity");
        assert_eq!(
            pref("gzip;q=0.5, br;q=1, zstd;q=0.8").unwrap(),
            "zstd, gzip"
        );
    }

    #[test]
    fn what_stays_uncompressed() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("content-type", "application/json")
            .unwrap();
        resp.insert_header("content-length", "5000").unwrap();
        assert!(!keep_uncompressed(&resp, false, 256));
        assert!(keep_uncompressed(&resp, true, 256));
        resp.insert_header("content-length", "100").unwrap();
        assert!(keep_uncompressed(&resp, false, 256));
        resp.remove_header("content-length");
        resp.insert_header("content-type", "text/event-stream; charset=utf-8")
            .unwrap();
        assert!(keep_uncompressed(&resp, false, 256));
    }
}
