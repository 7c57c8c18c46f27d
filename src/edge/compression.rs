//! Response compression policy, on top of Pingora's compression module
//! (gzip, brotli, zstd; it adds `Vary: Accept-Encoding` and leaves
//! already-encoded responses alone).
//!
//! What this adds: q-values (Pingora takes the first listed encoding, even
//! `gzip;q=0`), and no compression for server-sent events, bodies below a
//! minimum size, or routes marked `raw` (Slack webhooks: bytes as sent).
//!
//! Brotli is encoded here, not by the module: Pingora 0.9's brotli encoder
//! never finishes its stream (cloudflare/pingora#1013), and strict decoders
//! (Node's `fetch`, the brotli CLI) reject every such body. When brotli is
//! the client's first choice and the response is compressible, the module is
//! switched off for that response and [`BrotliStream`] encodes the body,
//! finishing the stream properly. The module itself is never shown `br`.

use std::io::Write;

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::modules::http::compression::ResponseCompression;
use pingora::modules::http::HttpModuleCtx;

/// Whether Pingora's module may produce `coding` (see the module docs).
fn offered(coding: &str) -> bool {
    !coding.eq_ignore_ascii_case("br")
}

/// The client's codings with q > 0, best first (equal weights keep order).
fn ranked(text: &str) -> Vec<(f32, &str)> {
    let mut ranked: Vec<(f32, &str)> = text
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next()?.trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (!coding.is_empty() && q > 0.0).then_some((q, coding))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
}

/// Whether brotli is the client's first choice among the encodings the
/// gateway produces (zstd, gzip, br).
pub fn prefers_brotli(accept: &HeaderValue) -> bool {
    let Ok(text) = accept.to_str() else {
        return false;
    };
    ranked(text)
        .into_iter()
        .map(|(_, coding)| coding)
        .find(|c| {
            ["br", "gzip", "zstd"]
                .iter()
                .any(|k| c.eq_ignore_ascii_case(k))
        })
        .is_some_and(|c| c.eq_ignore_ascii_case("br"))
}

/// Whether a response may be compressed at all: a body that is not encoded
/// yet, of a compressible type (the module's own rule: text, application,
/// fonts, a few images; nothing whose type mentions zip).
pub fn is_compressible(resp: &ResponseHeader, head_request: bool) -> bool {
    let status = resp.status.as_u16();
    if head_request || status < 200 || status == 204 || status == 304 {
        return false;
    }
    if resp.headers.contains_key(http::header::CONTENT_ENCODING) {
        return false;
    }
    let Some(ct) = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let ct = ct.trim_start().to_ascii_lowercase();
    !ct.contains("zip")
        && (ct.starts_with("text/")
            || ct.starts_with("application/")
            || ct.starts_with("font/")
            || ct.starts_with("image/svg+xml")
            || ct.starts_with("image/x-icon")
            || ct.starts_with("binary/octet-stream"))
}

/// A response body being brotli-encoded.
pub struct BrotliStream {
    writer: brotli::CompressorWriter<Vec<u8>>,
}

impl BrotliStream {
    pub fn new(level: u32) -> Self {
        Self {
            writer: brotli::CompressorWriter::new(Vec::new(), 4096, level.min(11), 22),
        }
    }

    /// Encodes a chunk; returns what the encoder has produced so far.
    pub fn push(&mut self, chunk: &[u8]) -> std::io::Result<Bytes> {
        self.writer.write_all(chunk)?;
        Ok(Bytes::from(std::mem::take(self.writer.get_mut())))
    }

    /// Ends the stream (the final meta-block) and returns the rest.
    pub fn finish(self) -> Bytes {
        Bytes::from(self.writer.into_inner())
    }
}

/// Headers of a response that this gateway brotli-encodes.
pub fn mark_brotli(resp: &mut ResponseHeader) -> pingora::Result<()> {
    // Streamed: the length is not known ahead, and byte ranges of the
    // original no longer apply (as Pingora's module does for its codings).
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.remove_header(&http::header::ACCEPT_RANGES);
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    resp.insert_header(http::header::CONTENT_ENCODING, "br")?;
    resp.append_header(http::header::VARY, "Accept-Encoding")?;
    // The encoded bytes differ from what a strong ETag named.
    if let Some(etag) = resp.headers.get(http::header::ETAG).cloned() {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                resp.insert_header(http::header::ETAG, weak)?;
            }
        }
    }
    Ok(())
}

/// The encodings of `Accept-Encoding`, best first, without those refused
/// with `q=0` or withheld: what Pingora's module should see. `None` when the
/// header can be used as it is.
pub fn preferred_encodings(accept: &HeaderValue) -> Option<HeaderValue> {
    let text = accept.to_str().ok()?;
    if !text.contains(';') && text.split(',').all(|c| offered(c.trim())) {
        return None;
    }
    let list: Vec<&str> = ranked(text)
        .into_iter()
        .map(|(_, coding)| coding)
        .filter(|c| offered(c))
        .collect();
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
        // The module never sees brotli (cloudflare/pingora#1013).
        assert_eq!(pref("br, gzip").unwrap(), "gzip");
        assert_eq!(pref("br").unwrap(), "identity");
        assert_eq!(
            pref("gzip;q=0.5, br;q=1, zstd;q=0.8").unwrap(),
            "zstd, gzip"
        );
    }

    #[test]
    fn brotli_is_chosen_only_as_first_choice() {
        let p = |t: &str| prefers_brotli(&HeaderValue::from_str(t).unwrap());
        assert!(p("br"));
        assert!(p("br, gzip"));
        assert!(p("gzip;q=0.5, br"));
        assert!(p("deflate, br, gzip"));
        assert!(!p("gzip, deflate, br, zstd"));
        assert!(!p("br;q=0, gzip"));
        assert!(!p("identity"));
    }

    #[test]
    fn brotli_streams_are_finished() {
        use std::io::Read;
        let mut stream = BrotliStream::new(6);
        let mut encoded = Vec::new();
        for _ in 0..50 {
            encoded.extend_from_slice(
                &stream
                    .push(b"server-sent bytes, many times over. ")
                    .unwrap(),
            );
        }
        encoded.extend_from_slice(&stream.finish());
        let mut decoded = Vec::new();
        // The strict decoder fails on a stream without its final block.
        brotli::Decompressor::new(&encoded[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, b"server-sent bytes, many times over. ".repeat(50));
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
