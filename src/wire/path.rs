//! Request-path normalization: the one path on which the route decision is
//! made and which the upstream receives.
//!
//! Rules (README, "Path normalization"), applied per segment:
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded; every other escape is kept, with upper-case hex;
//! - an escape that decodes to `/`, `\` or NUL is refused (`%2F`, `%5C`,
//!   `%00`), as are raw `\`, control characters, `#` and bad escapes;
//! - raw bytes above 0x7F are percent-encoded;
//! - empty segments (`//`) collapse, `.` segments vanish and `..` removes the
//!   previous segment; `..` above the root is refused;
//! - a segment that is a dot segment followed by parameters (`..;x`, `.;`,
//!   also with `;` encoded as `%3B`) is
//!   refused, because some upstream frameworks strip `;` parameters and would
//!   then see a dot segment the gateway did not.
//!
//! A path that is already normal is returned borrowed, without allocating.

use std::borrow::Cow;

/// Why a path was refused; the text is safe to show to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum PathError {
    NotAbsolute,
    EncodedSeparator,
    BadEscape,
    ForbiddenCharacter,
    AboveRoot,
    DotSegmentWithParameters,
    NotUtf8,
}

impl PathError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAbsolute => "request path must start with '/'",
            Self::EncodedSeparator => "request path contains an encoded '/', '\\' or NUL",
            Self::BadEscape => "request path contains a malformed percent-escape",
            Self::ForbiddenCharacter => "request path contains a forbidden character",
            Self::AboveRoot => "request path climbs above the root",
            Self::DotSegmentWithParameters => "request path contains a dot segment with parameters",
            Self::NotUtf8 => "request path is not UTF-8 once percent-decoded",
        }
    }
}

/// True when a normalized path carries `;` parameters in a segment, raw
/// or encoded (`%3B`; normalization upper-cases escapes). Tomcat, Jetty and
/// Spring strip them (`/admin;x/y` serves `/admin/y`), so the route decided
/// on the segment `admin;x` and the upstream's would differ.
pub fn has_path_parameters(normalized: &str) -> bool {
    // Byte scans first: most paths hold neither byte, and a substring
    // search sets up a searcher on every call.
    let bytes = normalized.as_bytes();
    bytes.contains(&b';') || (bytes.contains(&b'%') && normalized.contains("%3B"))
}

/// Normalizes `raw` (the path part of the request target, without query).
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_already_normal(raw)? {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_slow(raw).map(Cow::Owned)
}

fn is_forbidden_byte(b: u8) -> bool {
    b < 0x21 || b == 0x7f || b == b'\\' || b == b'#'
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// True when a segment is `.`/`..`, possibly followed by `;parameters`.
fn dot_segment_kind(segment: &str) -> Option<(bool, bool)> {
    // `%3B` counts too: a framework that decodes before stripping
    // parameters turns `..%3B` into `..;` and then into `..`.
    let cut = [segment.find(';'), segment.find("%3B")]
        .into_iter()
        .flatten()
        .min();
    let (name, has_params) = match cut {
        Some(i) => (&segment[..i], true),
        None => (segment, false),
    };
    match name {
        "." => Some((false, has_params)),
        ".." => Some((true, has_params)),
        _ => None,
    }
}

/// Fast check: no escapes, no odd bytes, no empty or dot segments (a single
/// trailing slash is fine). Errors on bytes that are refused anyway.
fn is_already_normal(raw: &str) -> Result<bool, PathError> {
    for &b in raw.as_bytes() {
        if is_forbidden_byte(b) {
            return Err(PathError::ForbiddenCharacter);
        }
        if b == b'%' || b >= 0x80 {
            return Ok(false);
        }
    }
    let body = &raw[1..];
    if body.is_empty() {
        return Ok(true);
    }
    // "//" is an empty segment and a trailing slash: not normal (found by
    // the path_route fuzz target).
    let body = body.strip_suffix('/').unwrap_or(body);
    Ok(!body.is_empty()
        && body
            .as_bytes()
            .split(|&b| b == b'/')
            .all(|seg| !seg.is_empty() && !is_plain_dot_segment(seg)))
}

/// [`dot_segment_kind`] for a segment known to hold no `%`: `.` or `..`,
/// alone or before `;parameters`. A byte scan, where the general case
/// searches for `%3B` too (most of the fast path's cost when it did).
fn is_plain_dot_segment(segment: &[u8]) -> bool {
    let name = segment.split(|&b| b == b';').next().unwrap_or(segment);
    name == b"." || name == b".."
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

/// Decodes one raw segment into `out` following the module rules.
/// Decodes one segment into `out`; `bytes` is scratch space for the UTF-8
/// check of the fully decoded segment.
fn decode_segment(raw: &[u8], out: &mut String, bytes: &mut Vec<u8>) -> Result<(), PathError> {
    bytes.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_value);
            let lo = raw.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            let decoded = hi << 4 | lo;
            if matches!(decoded, b'/' | b'\\' | 0) {
                return Err(PathError::EncodedSeparator);
            }
            bytes.push(decoded);
            if is_unreserved(decoded) {
                out.push(decoded as char);
            } else {
                push_escaped(out, decoded);
            }
            i += 3;
        } else if is_forbidden_byte(b) {
            return Err(PathError::ForbiddenCharacter);
        } else if b >= 0x80 {
            bytes.push(b);
            push_escaped(out, b);
            i += 1;
        } else {
            bytes.push(b);
            out.push(b as char);
            i += 1;
        }
    }
    // Invalid or overlong UTF-8 (`%C0%AE` is an overlong '.') means
    // different things to different decoders: refused.
    std::str::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?;
    Ok(())
}

fn normalize_slow(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len() + 8);
    // Start offsets in `out` of the segments kept so far, for `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing_slash = false;
    let mut segment = String::new();
    let mut scratch = Vec::new();
    for raw_segment in raw.as_bytes()[1..].split(|&b| b == b'/') {
        segment.clear();
        decode_segment(raw_segment, &mut segment, &mut scratch)?;
        trailing_slash = false;
        match dot_segment_kind(&segment) {
            Some((_, true)) => return Err(PathError::DotSegmentWithParameters),
            Some((false, false)) => trailing_slash = true,
            Some((true, false)) => {
                let start = starts.pop().ok_or(PathError::AboveRoot)?;
                out.truncate(start);
                trailing_slash = true;
            }
            None if segment.is_empty() => trailing_slash = true,
            None => {
                starts.push(out.len());
                out.push('/');
                out.push_str(&segment);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_dot_check_agrees_with_the_general_one() {
        for segment in [
            ".", "..", "...", ".;", "..;", ".;a", "..;a=b", ".a", "a.", "..a", ";", ";..", "a;b",
            "a", "", ". .",
        ] {
            assert_eq!(
                is_plain_dot_segment(segment.as_bytes()),
                dot_segment_kind(segment).is_some(),
                "{segment:?}"
            );
        }
    }

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(|c| c.into_owned())
    }

    /// Each path normalizes to its pair.
    fn assert_normal(cases: &[(&str, &str)]) {
        for (path, want) in cases {
            assert_eq!(norm(path).as_deref(), Ok(*want), "{path}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/api/auth", "/api/auth/", "/api/a.b/c~d-e_f", "/a;b=c"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_normal(&[
            ("/api/auth/../robeing/x", "/api/robeing/x"),
            ("/api/./auth/./x", "/api/auth/x"),
            ("/api/auth/..", "/api/"),
            ("/api/auth/.", "/api/auth/"),
        ]);
        assert_eq!(norm("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(norm("/a/../../b").unwrap_err(), PathError::AboveRoot);
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(
            norm("/api/auth/%2e%2e/robeing/x").unwrap(),
            "/api/robeing/x"
        );
        assert_normal(&[
            ("/api/auth/%2E./robeing/x", "/api/robeing/x"),
            ("/api/auth/.%2e/robeing", "/api/robeing"),
        ]);
    }

    #[test]
    fn separators_in_escapes_are_refused() {
        for p in ["/api/auth/..%2frobeing", "/a%2Fb", "/a%5cb", "/a%00b"] {
            assert_eq!(norm(p).unwrap_err(), PathError::EncodedSeparator, "{p}");
        }
        assert_eq!(norm("/a\\b").unwrap_err(), PathError::ForbiddenCharacter);
        assert_eq!(norm("/a#b").unwrap_err(), PathError::ForbiddenCharacter);
        assert_eq!(norm("/a%zzb").unwrap_err(), PathError::BadEscape);
        assert_eq!(norm("/a%4").unwrap_err(), PathError::BadEscape);
    }

    #[test]
    fn empty_segments_collapse() {
        assert_normal(&[
            ("//api//robeing/x", "/api/robeing/x"),
            ("/api/auth//..//robeing/x", "/api/robeing/x"),
            ("/api/x//", "/api/x/"),
        ]);
    }

    #[test]
    fn escapes_are_canonical() {
        assert_normal(&[
            ("/a%41%7e%20b", "/aA~%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ]);
    }

    #[test]
    fn empty_segments_collapse_even_at_the_root() {
        assert_normal(&[("//", "/"), ("///", "/"), ("//a", "/a"), ("/a//", "/a/")]);
    }

    #[test]
    fn decoded_paths_must_be_utf8() {
        for p in [
            "/a/%c0%ae%c0%ae/b",
            "/a/%C0%AF",
            "/a/%e9",
            "/a/%ff%fe",
            "/a/%c3",
        ] {
            assert_eq!(norm(p).unwrap_err(), PathError::NotUtf8, "{p}");
        }
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        for p in [
            "/api/auth/..;/robeing",
            "/a/.;x/b",
            "/a/%2e%2e;/b",
            "/a/..%3b/b",
            "/a/.%3Bx/b",
        ] {
            assert_eq!(
                norm(p).unwrap_err(),
                PathError::DotSegmentWithParameters,
                "{p}"
            );
        }
    }

    #[test]
    fn normalizing_is_idempotent() {
        for p in ["/a/./b/../c//d/", "/%7euser/%2e/x", "/caf\u{e9}/%41"] {
            let once = norm(p).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{p}");
        }
    }

    #[test]
    fn path_parameters_are_seen_raw_and_encoded() {
        for p in ["/api/admin;x/y", "/a;", "/a/b%3Bc", "/a/b%3bc"] {
            let normalized = normalize_path(p).unwrap();
            assert!(has_path_parameters(&normalized), "{p}");
        }
        for p in ["/api/admin/y", "/a/b%3Ac", "/a/b%253B"] {
            assert!(!has_path_parameters(&normalize_path(p).unwrap()), "{p}");
        }
    }
}
