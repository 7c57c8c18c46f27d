//! W3C Trace Context, level 1: the `traceparent` a request arrives with,
//! checked strictly, and the one the gateway sends on (the same trace, its
//! own span as the parent). An invalid or missing one starts a fresh trace;
//! `tracestate` goes on only beside a valid parent and within
//! [`MAX_TRACESTATE_BYTES`].

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on: what the specification asks every
/// participant to propagate (its 32 list members fit).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_BYTES: usize = 55;

/// The sampled bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// A valid `traceparent`: the caller's trace, its span and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// The header as level 1 defines it: lower-case hex, version `ff`
    /// refused, version `00` exactly 55 bytes, a later version at least 55
    /// with its extra fields after a `-`, neither id all zeros.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < TRACEPARENT_BYTES {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        let longer_ok = version != 0 && value.get(TRACEPARENT_BYTES).is_none_or(|&b| b == b'-');
        if version == 0xff || (value.len() > TRACEPARENT_BYTES && !longer_ok) {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        hex_into(&value[3..35], &mut trace_id)?;
        hex_into(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The request's one `traceparent`; several are not one trace.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(first.as_bytes())
    }
}

/// Where a request sits in its trace: the trace, the gateway's own span,
/// the caller's span (none for a fresh trace) and the flags sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub flags: u8,
}

impl TraceContext {
    /// The context of a request with these headers: the caller's trace and
    /// flags when its `traceparent` is valid, else a fresh trace whose
    /// sampled bit `sample` decides from the new trace id.
    pub fn of_request(headers: &HeaderMap, sample: impl FnOnce(&[u8; 16]) -> bool) -> Self {
        let span_id = random_span_id();
        match TraceParent::of(headers) {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id,
                parent_id: Some(parent.parent_id),
                flags: parent.flags,
            },
            None => {
                let trace_id = random_trace_id();
                let flags = if sample(&trace_id) { SAMPLED } else { 0 };
                Self {
                    trace_id,
                    span_id,
                    parent_id: None,
                    flags,
                }
            }
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// `00-<trace id>-<this gateway's span id>-<flags>`: what the upstream
    /// and a gateway-written response carry.
    pub fn traceparent(&self) -> HeaderValue {
        let mut out = [0u8; TRACEPARENT_BYTES];
        out[..3].copy_from_slice(b"00-");
        crate::text::hex_lower(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        crate::text::hex_lower(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        crate::text::hex_lower(&[self.flags], &mut out[53..55]);
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Whether the client's `tracestate` may go on: only beside a valid
/// parent, and within [`MAX_TRACESTATE_BYTES`] (all its lines together).
pub fn keeps_tracestate(headers: &HeaderMap, context: &TraceContext) -> bool {
    context.parent_id.is_some()
        && headers
            .get_all(TRACESTATE)
            .iter()
            .map(|v| v.len() + 1)
            .sum::<usize>()
            <= MAX_TRACESTATE_BYTES + 1
}

/// A trace id that is not all zeros (fastrand's wyrand: unique enough, and
/// no secret rides on it).
pub fn random_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&fastrand::u64(..).max(1).to_le_bytes());
    id[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    id
}

fn random_span_id() -> [u8; 8] {
    fastrand::u64(..).max(1).to_le_bytes()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRACEPARENT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_parent_is_kept() {
        let p = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(p.flags, 1);
        assert_eq!(
            p.parent_id,
            [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
        );
        let c = TraceContext::of_request(&headers(&[VALID]), |_| false);
        assert_eq!(c.trace_id, p.trace_id);
        assert_eq!(c.parent_id, Some(p.parent_id));
        assert!(c.sampled());
        let sent = c.traceparent();
        let sent = sent.to_str().unwrap();
        assert_eq!(&sent[..36], &VALID[..36]);
        assert_ne!(&sent[36..52], &VALID[36..52], "the gateway's own span");
        assert_eq!(&sent[52..], "-01");
        assert_eq!(
            TraceParent::parse(sent.as_bytes()).unwrap().trace_id,
            p.trace_id
        );
        // A later version may append fields after a dash.
        let v1 = format!("01{}-future", &VALID[2..]);
        assert!(TraceParent::parse(v1.as_bytes()).is_some());
    }

    #[test]
    fn every_invalid_form_is_refused() {
        for bad in [
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
            let c = TraceContext::of_request(&headers(&[bad]), |_| true);
            assert_eq!(c.parent_id, None, "{bad}");
            assert!(c.sampled());
            assert!(TraceParent::parse(c.traceparent().as_bytes()).is_some());
        }
        // Two headers are not one trace.
        assert_eq!(TraceParent::of(&headers(&[VALID, VALID])), None);
    }

    #[test]
    fn tracestate_goes_on_only_beside_a_valid_parent_and_bounded() {
        let mut h = headers(&[VALID]);
        h.append(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let c = TraceContext::of_request(&h, |_| false);
        assert!(keeps_tracestate(&h, &c));
        let fresh = TraceContext::of_request(&HeaderMap::new(), |_| false);
        assert!(!keeps_tracestate(&h, &fresh));
        assert!(!fresh.sampled());
        h.append(
            TRACESTATE,
            HeaderValue::from_str(&"a=b,".repeat(130)).unwrap(),
        );
        assert!(!keeps_tracestate(&h, &c));
    }
}
