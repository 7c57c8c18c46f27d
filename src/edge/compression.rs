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
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::modules::http::HttpModuleCtx;
use pingora::prelude::Session;
use pingora::{ErrorType, OrErr};

use crate::config::CompressionConfig;

/// One response's compression, across the phases that decide and do it.
#[derive(Default)]
pub struct Compression {
    /// Brotli is the client's first choice (encoded here, not by the module).
    wants_brotli: bool,
    /// The brotli encoder of this body, when used. Boxed: the encoder is
    /// 5.6 KB and the request context is moved with every request.
    brotli: Option<Box<BrotliStream>>,
    /// The client's `Accept-Encoding`, when the module was shown a
    /// q-value-ordered one instead; restored before forwarding.
    original_accept_encoding: Option<HeaderValue>,
    /// The client accepts an encoding and the route compresses: without
    /// that, neither the module nor brotli ever encodes this response, and
    /// the module is not even looked up (a hash-map look-up each time).
    negotiated: bool,
}

impl Compression {
    /// `early_request_filter`, before Pingora's modules see the request:
    /// the module's level, and `Accept-Encoding` ordered by q-value.
    pub fn on_request(
        &mut self,
        session: &mut Session,
        policy: &CompressionConfig,
    ) -> pingora::Result<()> {
        // No `Accept-Encoding`: the module leaves the response alone
        // whatever its level.
        let Some(accept) = session
            .req_header()
            .headers
            .get(http::header::ACCEPT_ENCODING)
        else {
            return Ok(());
        };
        let preferred = (policy.level > 0)
            .then(|| preferred_encodings(accept).map(|p| (p, accept.clone())))
            .flatten();
        self.wants_brotli = policy.level > 0 && prefers_brotli(accept);
        self.negotiated = policy.level > 0;
        set_level(&mut session.downstream_modules_ctx, policy.level);
        if let Some((preferred, original)) = preferred {
            self.original_accept_encoding = Some(original);
            session
                .req_header_mut()
                .insert_header(http::header::ACCEPT_ENCODING, preferred)?;
        }
        Ok(())
    }

    /// `upstream_request_filter`: the upstream sees the client's own
    /// `Accept-Encoding`.
    pub fn on_upstream_request(&mut self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        if let Some(accept) = self.original_accept_encoding.take() {
            upstream.insert_header(http::header::ACCEPT_ENCODING, accept)?;
        }
        Ok(())
    }

    /// `response_filter`: no compression, the module's, or brotli here.
    pub fn on_response(
        &mut self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        raw_route: bool,
        policy: &CompressionConfig,
    ) -> pingora::Result<()> {
        if !self.negotiated {
            return Ok(());
        }
        let head = session.req_header().method == http::Method::HEAD;
        if keep_uncompressed(resp, raw_route, policy.min_size_bytes) {
            set_level(&mut session.downstream_modules_ctx, 0);
        } else if self.wants_brotli && policy.level > 0 && is_compressible(resp, head) {
            set_level(&mut session.downstream_modules_ctx, 0);
            mark_brotli(resp)?;
            self.brotli = Some(Box::new(BrotliStream::new(policy.level)));
        }
        Ok(())
    }

    /// `response_body_filter`: the brotli stream, finished at the end.
    pub fn on_body(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        let Some(stream) = self.brotli.as_mut() else {
            return Ok(());
        };
        let mut out = match body.take() {
            Some(chunk) => stream
                .push(&chunk)
                .or_err(ErrorType::InternalError, "brotli encoding")?,
            None => Bytes::new(),
        };
        if end_of_stream {
            if let Some(stream) = self.brotli.take() {
                let tail = stream.finish();
                out = if out.is_empty() {
                    tail
                } else {
                    [out, tail].concat().into()
                };
            }
        }
        *body = Some(out);
        Ok(())
    }
}

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
fn prefers_brotli(accept: &HeaderValue) -> bool {
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
fn is_compressible(resp: &ResponseHeader, head_request: bool) -> bool {
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
struct BrotliStream {
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
fn mark_brotli(resp: &mut ResponseHeader) -> pingora::Result<()> {
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
fn preferred_encodings(accept: &HeaderValue) -> Option<HeaderValue> {
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
fn set_level(modules: &mut HttpModuleCtx, level: u32) {
    if let Some(compression) = modules.get_mut::<ResponseCompression>() {
        if compression.is_header_phase() {
            compression.adjust_level(level);
        }
    }
}

/// Whether a response must go out as the upstream sent it.
fn keep_uncompressed(resp: &ResponseHeader, raw_route: bool, min_size: u64) -> bool {
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
