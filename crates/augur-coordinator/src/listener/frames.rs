//! Which HTTP/2 streams of a connection are open, from the frame headers seen
//! going each way, without decoding anything else (no HPACK, no payloads).
//! It is what tells an idle connection (no request in flight, only keep-alive
//! pings) from one that carries a long-lived stream, such as a worker's
//! `Attach`.

use std::collections::HashMap;

/// The client connection preface (RFC 9113 §3.4) that precedes its frames.
const CLIENT_PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;

/// More streams than any server setting allows at once: past this the
/// connection counts as busy for good rather than being tracked further.
const MAX_TRACKED_STREAMS: usize = 4096;

/// Who sent a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// A frame parser for one direction: finds frame headers in a byte stream
/// that arrives in arbitrary pieces.
#[derive(Debug)]
struct Direction {
    /// Bytes of the client preface still to skip.
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
}

impl Direction {
    fn new(side: Side) -> Self {
        Direction {
            preface_left: if side == Side::Client {
                CLIENT_PREFACE_LEN
            } else {
                0
            },
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// Calls `frame(kind, flags, stream)` for each frame header completed by `bytes`.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8, u32)) {
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
                let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == FRAME_HEADER_LEN {
                    self.header_len = 0;
                    let h = self.header;
                    self.payload_left =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    frame(h[3], h[4], stream);
                }
            }
        }
    }
}

/// Half-closed flags of one stream: (client done, server done).
type Halves = (bool, bool);

/// The streams of one connection, as its frames show them.
#[derive(Debug)]
pub(crate) struct Streams {
    client: Direction,
    server: Direction,
    open: HashMap<u32, Halves>,
    /// A request (a client HEADERS frame) has been seen.
    requested: bool,
    /// Too many streams to track: the connection counts as busy from now on.
    overflowed: bool,
    /// The client's first bytes, until they tell HTTP/2 (its preface starts
    /// `PRI`) from HTTP/1.1 (a method: a browser on the console).
    first: Vec<u8>,
    /// `Some(true)`: an HTTP/1.1 connection, which has no streams to track.
    http1: Option<bool>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            client: Direction::new(Side::Client),
            server: Direction::new(Side::Server),
            open: HashMap::new(),
            requested: false,
            overflowed: false,
            first: Vec::new(),
            http1: None,
        }
    }
}

/// Bytes that tell the HTTP/2 preface from an HTTP/1.1 method.
const SNIFF: usize = 3;

impl Streams {
    /// Whether this is an HTTP/1.1 connection (known after its first bytes).
    pub(crate) fn http1(&self) -> bool {
        self.http1 == Some(true)
    }

    /// Takes bytes that went `side`'s way (decrypted, in order).
    pub(crate) fn feed(&mut self, side: Side, bytes: &[u8]) {
        if side == Side::Client && self.http1.is_none() {
            let take = (SNIFF - self.first.len()).min(bytes.len());
            self.first.extend_from_slice(&bytes[..take]);
            let decided =
                self.first.len() >= SNIFF || self.first.first().is_some_and(|b| *b != b'P');
            if !decided {
                return;
            }
            let http1 = !b"PRI".starts_with(&self.first);
            self.http1 = Some(http1);
            if http1 {
                self.requested = true;
                return;
            }
            let mut all = std::mem::take(&mut self.first);
            all.extend_from_slice(&bytes[take..]);
            self.feed_frames(side, &all);
            return;
        }
        if self.http1() {
            self.requested = true;
            return;
        }
        self.feed_frames(side, bytes);
    }

    fn feed_frames(&mut self, side: Side, bytes: &[u8]) {
        let Streams {
            client,
            server,
            open,
            requested,
            overflowed,
            ..
        } = self;
        let direction = match side {
            Side::Client => client,
            Side::Server => server,
        };
        direction.feed(bytes, |kind, flags, stream| {
            if stream == 0 {
                return;
            }
            match kind {
                HEADERS | DATA => {
                    if kind == HEADERS && side == Side::Client && !open.contains_key(&stream) {
                        *requested = true;
                        if open.len() >= MAX_TRACKED_STREAMS {
                            *overflowed = true;
                            return;
                        }
                        open.insert(stream, (false, false));
                    }
                    if flags & END_STREAM != 0 {
                        if let Some(halves) = open.get_mut(&stream) {
                            match side {
                                Side::Client => halves.0 = true,
                                Side::Server => halves.1 = true,
                            }
                            if halves.0 && halves.1 {
                                open.remove(&stream);
                            }
                        }
                    }
                }
                RST_STREAM => {
                    open.remove(&stream);
                }
                _ => {}
            }
        });
    }

    /// Whether the client has sent a request yet.
    pub(crate) fn requested(&self) -> bool {
        self.requested
    }

    /// Whether any stream is open (a call in flight, or a long-lived stream).
    pub(crate) fn busy(&self) -> bool {
        self.overflowed || !self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xAB, payload));
        f
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;

    #[test]
    fn a_unary_call_opens_and_closes_a_stream_whatever_the_byte_split() {
        let mut client = PREFACE.to_vec();
        client.extend(frame(SETTINGS, 0, 0, 18));
        client.extend(frame(HEADERS, 0x4, 1, 40));
        client.extend(frame(DATA, END_STREAM, 1, 7));
        let mut server = frame(SETTINGS, 0, 0, 6);
        server.extend(frame(HEADERS, 0x4, 1, 12));
        server.extend(frame(DATA, 0, 1, 30));
        server.extend(frame(HEADERS, 0x4 | END_STREAM, 1, 10));
        for split in [1, 2, 5, 9, 1000] {
            let mut s = Streams::default();
            assert!(!s.requested() && !s.busy());
            for piece in client.chunks(split) {
                s.feed(Side::Client, piece);
            }
            assert!(s.requested() && s.busy(), "split {split}");
            for piece in server.chunks(split) {
                s.feed(Side::Server, piece);
            }
            assert!(!s.busy(), "split {split}: {s:?}");
        }
    }

    #[test]
    fn http1_is_told_from_http2_by_its_first_bytes() {
        for (first, http1) in [
            (&b"GET / HTTP/1.1\r\n"[..], true),
            (b"POST /jobs HTTP/1.1\r\n", true),
            (b"PUT /x HTTP/1.1\r\n", true),
            (PREFACE, false),
        ] {
            for split in [1, 2, 3, 100] {
                let mut s = Streams::default();
                for piece in first.chunks(split) {
                    s.feed(Side::Client, piece);
                }
                assert_eq!(s.http1(), http1, "{first:?} split {split}");
                assert_eq!(s.requested(), http1, "{first:?}");
                assert!(!s.busy());
            }
        }
        // The HTTP/2 bytes held back while sniffing still reach the parser.
        let mut s = Streams::default();
        let mut client = PREFACE.to_vec();
        client.extend(frame(HEADERS, 0x4, 1, 3));
        for piece in client.chunks(2) {
            s.feed(Side::Client, piece);
        }
        assert!(!s.http1() && s.requested() && s.busy());
    }

    #[test]
    fn pings_and_settings_alone_are_no_request() {
        let mut s = Streams::default();
        let mut client = PREFACE.to_vec();
        client.extend(frame(SETTINGS, 0, 0, 0));
        client.extend(frame(PING, 0, 0, 8));
        s.feed(Side::Client, &client);
        s.feed(Side::Server, &frame(PING, 0x1, 0, 8));
        assert!(!s.requested() && !s.busy());
    }

    #[test]
    fn a_long_lived_stream_stays_open_until_reset_or_both_ends() {
        let mut s = Streams::default();
        s.feed(Side::Client, PREFACE);
        s.feed(Side::Client, &frame(HEADERS, 0x4, 1, 20));
        s.feed(Side::Client, &frame(DATA, 0, 1, 50));
        s.feed(Side::Server, &frame(DATA, 0, 1, 50));
        assert!(s.busy());
        // The client half-closes (a server-streaming call): still open.
        s.feed(Side::Client, &frame(DATA, END_STREAM, 1, 0));
        assert!(s.busy());
        s.feed(Side::Client, &frame(HEADERS, 0x4, 3, 20));
        s.feed(Side::Server, &frame(RST_STREAM, 0, 3, 4));
        assert!(s.busy(), "stream 1 is still open");
        s.feed(Side::Client, &frame(RST_STREAM, 0, 1, 4));
        assert!(!s.busy());
    }
}
