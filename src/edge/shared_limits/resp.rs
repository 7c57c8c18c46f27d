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

/// One decision's part of a script call: its counter's key, and the
/// GCRA's interval and tolerance.
pub type Decision<'a> = (&'a [u8], u64, u64);

/// Appends the GCRA script's call for `decisions`: `<verb and body> <n>`,
/// the `n` keys, then each decision's interval and tolerance (KEYS, then
/// ARGV, as the script reads them). `verb_and_body`: [`verb_and_body`]'s
/// encoding of `EVALSHA <hash>` or `EVAL <text>`.
pub fn script_call<'a, I>(out: &mut Vec<u8>, verb_and_body: &[u8], decisions: I)
where
    I: ExactSizeIterator<Item = Decision<'a>> + Clone,
{
    let n = decisions.len();
    array_header(out, 3 + 3 * n);
    out.extend_from_slice(verb_and_body);
    let mut digits = itoa::Buffer::new();
    bulk(out, digits.format(n).as_bytes());
    for (key, _, _) in decisions.clone() {
        bulk(out, key);
    }
    for (_, interval, tolerance) in decisions {
        bulk(out, digits.format(interval).as_bytes());
        bulk(out, digits.format(tolerance).as_bytes());
    }
}

/// The first two parts of a script call (`EVALSHA <hash>`), encoded once.
pub fn verb_and_body(verb: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(verb.len() + body.len() + 16);
    bulk(&mut out, verb);
    bulk(&mut out, body);
    out
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

/// Most integers in one reply read here: the script's answer to a full
/// batch.
pub const MAX_INTEGERS: usize = 3 * super::MAX_BATCH;

/// One complete reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`, `+PONG` and the like.
    Status(&'a [u8]),
    /// `-ERR ...`, `-NOSCRIPT ...`: Redis refused the command.
    Error(&'a [u8]),
    /// An array of at most [`MAX_INTEGERS`] non-negative integers, now in
    /// the caller's `numbers`.
    Integers,
}

/// A reply of a shape the limiter never asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct BadReply(pub &'static str);

/// The first reply in `buf` and the bytes it took, or `None` while it is
/// incomplete. An integer array's numbers go to `numbers` (cleared first).
pub fn reply<'a>(
    buf: &'a [u8],
    numbers: &mut Vec<u64>,
) -> Result<Option<(Reply<'a>, usize)>, BadReply> {
    numbers.clear();
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
            for _ in 0..len {
                let Some((element, took)) = line(&buf[used..])? else {
                    return Ok(None);
                };
                used += took;
                match element.split_first() {
                    Some((b':', digits)) => numbers.push(number(digits)?),
                    _ => return Err(BadReply("an array element that is not an integer")),
                }
            }
            Ok(Some((Reply::Integers, used)))
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
    use proptest::prelude::*;

    proptest! {
        // Whatever the server sends, the reader answers (a reply, more to
        // read, or a bad reply) and never holds more than a batch's numbers.
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut numbers = Vec::new();
            if let Ok(Some((_, used))) = reply(&bytes, &mut numbers) {
                prop_assert!(used <= bytes.len());
            }
            prop_assert!(numbers.len() <= MAX_INTEGERS);
        }

        // Every integer array Redis can send for a batch reads back as sent.
        #[test]
        fn integer_arrays_read_back_as_sent(
            values in proptest::collection::vec(0..=i64::MAX as u64, 0..MAX_INTEGERS)
        ) {
            let body: String = values.iter().map(|v| format!(":{v}\r\n")).collect();
            let text = format!("*{}\r\n{body}", values.len());
            let mut numbers = Vec::new();
            prop_assert_eq!(
                reply(text.as_bytes(), &mut numbers),
                Ok(Some((Reply::Integers, text.len())))
            );
            prop_assert_eq!(numbers, values);
        }
    }

    #[test]
    fn commands_are_packed_as_redis_rs_packs_them() {
        let mut ours = Vec::new();
        let head = verb_and_body(b"EVALSHA", b"abc");
        let one: [Decision; 1] = [(b"rgw:rl:0:u:1", 6_000_000, 0)];
        script_call(&mut ours, &head, one.iter().copied());
        let theirs = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(1)
            .arg("rgw:rl:0:u:1")
            .arg(6_000_000u64)
            .arg(0u64)
            .get_packed_command();
        assert_eq!(ours, theirs);
        // A batch: every key, then every decision's two numbers.
        ours.clear();
        let two: [Decision; 2] = [(b"k1", 1, 2), (b"k2", 3, 4)];
        script_call(&mut ours, &head, two.iter().copied());
        let theirs = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("k1")
            .arg("k2")
            .arg(1)
            .arg(2)
            .arg(3)
            .arg(4)
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
        let mut numbers = Vec::new();
        let answer = b"*3\r\n:1\r\n:6000000\r\n:0\r\n";
        for cut in 0..answer.len() {
            assert_eq!(
                reply(&answer[..cut], &mut numbers),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(
            reply(answer, &mut numbers),
            Ok(Some((Reply::Integers, answer.len())))
        );
        assert_eq!(numbers, [1, 6_000_000, 0]);
        let two = b"+OK\r\n-NOSCRIPT No matching script\r\n";
        assert_eq!(
            reply(two, &mut numbers),
            Ok(Some((Reply::Status(b"OK"), 5)))
        );
        assert_eq!(
            reply(&two[5..], &mut numbers),
            Ok(Some((Reply::Error(b"NOSCRIPT No matching script"), 30)))
        );
        // A full batch's answer is read; one longer is not.
        let full = format!("*{MAX_INTEGERS}\r\n{}", ":7\r\n".repeat(MAX_INTEGERS));
        assert!(matches!(
            reply(full.as_bytes(), &mut numbers),
            Ok(Some((Reply::Integers, _)))
        ));
        assert_eq!(numbers.len(), MAX_INTEGERS);
        let longer = format!("*{}\r\n", MAX_INTEGERS + 1);
        assert!(reply(longer.as_bytes(), &mut numbers).is_err());
    }

    #[test]
    fn other_shapes_are_bad_replies() {
        for bad in [
            &b"$3\r\nabc\r\n"[..],
            b":5\r\n",
            b"*1\r\n$1\r\n",
            b"*1\r\n:-1\r\n",
            b"*1\r\n:99999999999999999999\r\n",
            b"*x\r\n",
            b"\r\n",
            b"+OK\n",
        ] {
            assert!(
                reply(bad, &mut Vec::new()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
