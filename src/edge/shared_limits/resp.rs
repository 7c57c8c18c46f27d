//! The few RESP2 messages the limiter's own connections speak
//! ([`super::direct`]): commands written as arrays of bulk strings, and
//! the replies those commands can get read back (a status, an error, an
//! integer array). Anything else is a bad reply, not a guess.
//!
//! Written here rather than through redis-rs's codec: its general
//! `combine` parser cost 3,400 instructions to read a three-integer
//! answer, and the shapes read here are fixed by the script.

/// Appends one command, each part a bulk string.
pub fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    array_header(out, parts.len());
    for part in parts {
        bulk(out, part);
    }
}

/// Appends `<verb> <body> 1`, the head of the GCRA script's call for
/// one decision (`EVALSHA` with the script's hash, or `EVAL` with its
/// text); [`script_arguments`] completes it.
pub fn script_call_head(out: &mut Vec<u8>, verb: &[u8], body: &[u8]) {
    array_header(out, 6);
    bulk(out, verb);
    bulk(out, body);
    bulk(out, b"1");
}

/// Appends `<key> <interval> <tolerance>` after [`script_call_head`].
pub fn script_arguments(out: &mut Vec<u8>, key: &[u8], interval: u64, tolerance: u64) {
    bulk(out, key);
    let mut digits = itoa::Buffer::new();
    bulk(out, digits.format(interval).as_bytes());
    bulk(out, digits.format(tolerance).as_bytes());
}

fn array_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Most integers in one reply read here (the script answers three).
pub const MAX_INTEGERS: usize = 3;

/// One complete reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK` and the like.
    Status(&'a [u8]),
    /// `-ERR ...`, `-NOSCRIPT ...`: Redis refused the command.
    Error(&'a [u8]),
    /// An array of at most [`MAX_INTEGERS`] non-negative integers.
    Integers([u64; MAX_INTEGERS], usize),
}

/// A reply of a shape the limiter never asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct BadReply(pub &'static str);

/// The first reply in `buf` and the bytes it took, or `None` while it is
/// incomplete.
pub fn reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, BadReply> {
    let Some((first, mut used)) = line(buf)? else {
        return Ok(None);
    };
    let (&kind, rest) = first.split_first().ok_or(BadReply("an empty line"))?;
    match kind {
        b'+' => Ok(Some((Reply::Status(rest), used))),
        b'-' => Ok(Some((Reply::Error(rest), used))),
        b'*' => {
            let len = number(rest)? as usize;
            if len > MAX_INTEGERS {
                return Err(BadReply("an array longer than an answer"));
            }
            let mut integers = [0; MAX_INTEGERS];
            for slot in integers.iter_mut().take(len) {
                let Some((element, took)) = line(&buf[used..])? else {
                    return Ok(None);
                };
                used += took;
                match element.split_first() {
                    Some((b':', digits)) => *slot = number(digits)?,
                    _ => return Err(BadReply("an array element that is not an integer")),
                }
            }
            Ok(Some((Reply::Integers(integers, len), used)))
        }
        _ => Err(BadReply(
            "a reply that is not a status, an error or an array",
        )),
    }
}

/// The line at the start of `buf` without its CRLF, and its length with.
/// No line read here holds CR or LF (RESP2 simple strings, errors and
/// integers cannot), so the first LF ends it; a bare LF is a bad reply.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, BadReply> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    match lf.checked_sub(1) {
        Some(cr) if buf[cr] == b'\r' => Ok(Some((&buf[..cr], lf + 1))),
        _ => Err(BadReply("a line not ended by CRLF")),
    }
}

/// A non-negative decimal that fits in a u64.
fn number(digits: &[u8]) -> Result<u64, BadReply> {
    if digits.is_empty() || digits.len() > 19 {
        return Err(BadReply("not a non-negative integer"));
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            Ok(n * 10 + u64::from(d - b'0'))
        } else {
            Err(BadReply("not a non-negative integer"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_packed_as_redis_rs_packs_them() {
        let mut ours = Vec::new();
        script_call_head(&mut ours, b"EVALSHA", b"abc");
        script_arguments(&mut ours, b"rgw:rl:0:u:1", 6_000_000, 0);
        let theirs = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(1)
            .arg("rgw:rl:0:u:1")
            .arg(6_000_000u64)
            .arg(0u64)
            .get_packed_command();
        assert_eq!(ours, theirs);
        let mut auth = Vec::new();
        command(&mut auth, &[b"AUTH", b"user", b"secret"]);
        let theirs = redis::cmd("AUTH")
            .arg("user")
            .arg("secret")
            .get_packed_command();
        assert_eq!(auth, theirs);
    }

    #[test]
    fn replies_are_read_whole_or_not_at_all() {
        let answer = b"*3\r\n:1\r\n:6000000\r\n:0\r\n";
        for cut in 0..answer.len() {
            assert_eq!(reply(&answer[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            reply(answer),
            Ok(Some((Reply::Integers([1, 6_000_000, 0], 3), answer.len())))
        );
        let two = b"+OK\r\n-NOSCRIPT No matching script\r\n";
        assert_eq!(reply(two), Ok(Some((Reply::Status(b"OK"), 5))));
        assert_eq!(
            reply(&two[5..]),
            Ok(Some((Reply::Error(b"NOSCRIPT No matching script"), 30)))
        );
    }

    #[test]
    fn other_shapes_are_bad_replies() {
        for bad in [
            &b"$3\r\nabc\r\n"[..],
            b":5\r\n",
            b"*4\r\n",
            b"*1\r\n$1\r\n",
            b"*1\r\n:-1\r\n",
            b"*1\r\n:99999999999999999999\r\n",
            b"*x\r\n",
            b"\r\n",
            b"+OK\n",
        ] {
            assert!(reply(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
