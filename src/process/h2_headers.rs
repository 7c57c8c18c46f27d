//! Where an HTTP/2 connection's header blocks start and end, read from the
//! plaintext bytes the client sends, so the header deadline
//! (`server.header_timeout_ms`) applies to HTTP/2 too.
//!
//! The `h2` crate takes a stream only once its header block is complete:
//! a HEADERS frame without END_HEADERS, followed by CONTINUATION frames that
//! trickle (or never come), is invisible above it and would hold the
//! connection forever. RFC 9113 §6.10 forbids any other frame in between,
//! so while a block is open the whole connection is stuck on it: past the
//! deadline the connection is closed (resetting one stream mid-block is a
//! connection error anyway).
//!
//! [`HeaderBlockWatch`] only counts frame lengths and reads three fields of
//! each 9-byte frame header; payloads are skipped, never copied.

/// The client connection preface (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows the frames of one HTTP/2 connection, client to server.
#[derive(Debug)]
pub struct HeaderBlockWatch {
    preface_left: usize,
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    /// Payload bytes of the current frame not read yet.
    payload_left: usize,
    /// The current frame belongs to a header block.
    in_header_frame: bool,
    /// A block was started without END_HEADERS and not ended yet.
    block_open: bool,
}

impl Default for HeaderBlockWatch {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            payload_left: 0,
            in_header_frame: false,
            block_open: false,
        }
    }
}

impl HeaderBlockWatch {
    /// Takes the next bytes the client sent; true while a header block is
    /// incomplete after them (a header frame not read whole, or a block
    /// still waiting for its END_HEADERS).
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = (FRAME_HEADER_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len == FRAME_HEADER_LEN {
                    self.frame_started();
                }
            }
        }
        if self.payload_left == 0 {
            self.in_header_frame = false;
        }
        self.is_open()
    }

    fn frame_started(&mut self) {
        let [l0, l1, l2, kind, flags, ..] = self.head;
        self.head_len = 0;
        self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let ends_block = flags & END_HEADERS != 0;
        match kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                self.in_header_frame = self.payload_left > 0;
                self.block_open = !ends_block;
            }
            _ => self.in_header_frame = false,
        }
    }

    fn is_open(&self) -> bool {
        self.block_open || self.in_header_frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload_len: usize) -> Vec<u8> {
        let len = (payload_len as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.resize(FRAME_HEADER_LEN + payload_len, 0xab);
        f
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn a_complete_header_block_closes_at_once() {
        let mut w = HeaderBlockWatch::default();
        assert!(!w.feed(&preface()));
        assert!(!w.feed(&frame(0x4, 0, 0)), "SETTINGS");
        assert!(!w.feed(&frame(HEADERS, END_HEADERS, 40)));
        assert!(!w.feed(&frame(0x0, 0x1, 1000)), "DATA");
    }

    #[test]
    fn a_block_stays_open_until_end_headers() {
        let mut w = HeaderBlockWatch::default();
        w.feed(&preface());
        assert!(w.feed(&frame(HEADERS, 0, 40)));
        assert!(w.feed(&frame(CONTINUATION, 0, 10)));
        assert!(!w.feed(&frame(CONTINUATION, END_HEADERS, 10)));
    }

    #[test]
    fn a_header_frame_read_in_pieces_is_open_until_whole() {
        let mut w = HeaderBlockWatch::default();
        w.feed(&preface());
        let f = frame(HEADERS, END_HEADERS, 100);
        for b in &f[..f.len() - 1] {
            assert!(
                w.feed(std::slice::from_ref(b)) || w.head_len > 0,
                "byte by byte"
            );
        }
        assert!(!w.feed(&f[f.len() - 1..]));
        // A body trickling byte by byte is not a header.
        let data = frame(0x0, 0, 50);
        for b in &data {
            assert!(!w.feed(std::slice::from_ref(b)));
        }
    }
}
