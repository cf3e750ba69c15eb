//! Chrome native messaging: frames of a 32-bit native-endian length followed by
//! UTF-8 JSON.
//!
//! [`FrameDecoder`] is pure: feed it whatever a non-blocking read returned and
//! take whole frames out. Chrome sends at most 64 MiB per message; a header
//! announcing more cannot be skipped (the stream would be out of step), so it
//! is a fatal [`FrameError`]. A host may send at most 1 MiB per message:
//! [`encode_reply`] turns a larger reply into an error that tells the client
//! to stream.

use crate::api::{Reply, Response};
use crate::error::ApiError;

/// The largest message Chrome sends to a host.
pub const MAX_INCOMING: usize = 64 << 20;
/// The largest message a host may send to Chrome.
pub const MAX_OUTGOING: usize = 1 << 20;

/// A frame header that ends the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header announced more than [`MAX_INCOMING`] bytes.
    TooLarge(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(len) => {
                write!(
                    f,
                    "a message of {len} bytes is larger than the {MAX_INCOMING} bytes native messaging allows"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Reassembles frames from partial reads.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out as frames.
    consumed: usize,
}

impl FrameDecoder {
    /// Appends bytes just read.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame's body, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buffer[self.consumed..];
        let Some(header) = pending.get(..4) else {
            return Ok(None);
        };
        // The slice is exactly four bytes long.
        let len = u32::from_ne_bytes(header.try_into().expect("four bytes")) as usize;
        if len > MAX_INCOMING {
            return Err(FrameError::TooLarge(len));
        }
        let Some(body) = pending.get(4..4 + len) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.consumed += 4 + len;
        // Compact once the consumed prefix dominates, so memory stays bounded.
        if self.consumed > 64 << 10 && self.consumed * 2 > self.buffer.len() {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        Ok(Some(body))
    }

    /// Whether bytes of an unfinished frame are waiting (a truncated frame at EOF).
    pub fn has_partial(&self) -> bool {
        self.consumed < self.buffer.len()
    }
}

/// One frame (header + body) for a reply, never over [`MAX_OUTGOING`].
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let body = reply.to_json();
    if body.len() + 4 <= MAX_OUTGOING {
        return frame(&body);
    }
    let error = ApiError::too_large(format!(
        "the reply is {} bytes, over the 1 MiB native messaging allows a host to send; request it with \"stream\": true or in smaller pages",
        body.len()
    ));
    frame(&Reply::new(reply.id.clone(), Response::error(error)).to_json())
}

/// Prefixes `body` with its native-endian length.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    // Bodies are bounded by MAX_OUTGOING (or by tests), far below u32::MAX.
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("frame fits u32")
            .to_ne_bytes(),
    );
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChatChunk, RequestId};

    #[test]
    fn frames_survive_any_split() {
        let stream: Vec<u8> = [frame(b"{\"a\":1}"), frame(b""), frame(&[b'x'; 300])].concat();
        for split in 1..stream.len() {
            let mut decoder = FrameDecoder::default();
            let mut frames = Vec::new();
            for piece in stream.chunks(split) {
                decoder.push(piece);
                while let Some(f) = decoder.next_frame().unwrap() {
                    frames.push(f);
                }
            }
            assert_eq!(frames.len(), 3, "split {split}");
            assert_eq!(frames[2].len(), 300);
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn oversize_header_is_fatal_and_truncation_is_visible() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&((MAX_INCOMING + 1) as u32).to_ne_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge(MAX_INCOMING + 1))
        );
        let mut decoder = FrameDecoder::default();
        decoder.push(&frame(b"12345")[..6]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert!(decoder.has_partial());
    }

    #[test]
    fn replies_over_one_mebibyte_become_errors() {
        let big = Reply::new(
            RequestId::text("b"),
            Response::ChatChunk(ChatChunk::text("x".repeat(MAX_OUTGOING))),
        );
        let out = encode_reply(&big);
        assert!(out.len() <= MAX_OUTGOING);
        let body: serde_json::Value = serde_json::from_slice(&out[4..]).unwrap();
        assert_eq!(body["response_type"], "Error");
        assert_eq!(body["error"]["status"], 413);
        assert_eq!(body["id"], "b");
    }

    use proptest::prelude::*;

    /// Pushes `stream` in pieces of the given sizes (cycled), taking every
    /// whole frame out after each push.
    fn decode(stream: &[u8], pieces: &[usize]) -> (Vec<Vec<u8>>, FrameDecoder) {
        let mut decoder = FrameDecoder::default();
        let mut frames = Vec::new();
        let mut rest = stream;
        for size in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).clamp(1, rest.len()));
            rest = tail;
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        (frames, decoder)
    }

    /// Characters whose JSON forms are one to six bytes long.
    fn wide_char() -> impl Strategy<Value = char> {
        prop::sample::select(vec!['a', '"', '\\', '\n', '\u{1}', 'é', '€', '😀'])
    }

    proptest! {
        #[test]
        fn any_split_of_a_stream_gives_the_same_frames_back(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
            pieces in prop::collection::vec(1usize..700, 1..16),
        ) {
            let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
            let (frames, decoder) = decode(&stream, &pieces);
            prop_assert_eq!(frames, bodies);
            prop_assert!(!decoder.has_partial());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            pieces in prop::collection::vec(1usize..300, 1..8),
        ) {
            let mut decoder = FrameDecoder::default();
            let mut rest = &bytes[..];
            let mut taken = 0;
            'feed: for size in pieces.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*size).min(rest.len()));
                rest = tail;
                decoder.push(piece);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => taken += 4 + frame.len(),
                        Ok(None) => break,
                        Err(FrameError::TooLarge(len)) => {
                            prop_assert!(len > MAX_INCOMING);
                            break 'feed;
                        }
                    }
                }
            }
            // Frames never take more bytes than were pushed.
            prop_assert!(taken <= bytes.len());
        }
    }

    proptest! {
        // Each case serializes up to a few MiB.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn replies_never_exceed_one_mebibyte_and_keep_their_id(
            c in wide_char(),
            len in 0usize..(2 << 20),
            id in "[ -~]{0,1024}",
        ) {
            let delta = c.to_string().repeat(len / c.len_utf8());
            let reply = Reply::new(
                RequestId::text(id.clone()),
                Response::ChatChunk(ChatChunk::text(delta)),
            );
            let out = encode_reply(&reply);
            prop_assert!(out.len() <= MAX_OUTGOING);
            let stated = u32::from_ne_bytes(out[..4].try_into().unwrap()) as usize;
            prop_assert_eq!(stated, out.len() - 4);
            let body: serde_json::Value = serde_json::from_slice(&out[4..]).unwrap();
            prop_assert_eq!(body["id"].as_str(), Some(id.as_str()));
            let whole = reply.to_json();
            if whole.len() + 4 <= MAX_OUTGOING {
                prop_assert_eq!(&out[4..], &whole[..]);
            } else {
                prop_assert_eq!(&body["error"]["status"], 413);
            }
        }
    }
}
