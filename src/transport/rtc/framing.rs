//! Messages larger than a data channel takes, split into `Partial` frames.
//!
//! A reply whose JSON envelope fits the peer's maximum message size goes as
//! one message. A larger one is sent as frames
//! `{"id", "response_type": "Partial", "seq": 0, 1, ..., "last": bool,
//! "done": false, "data": "<a piece of the envelope's JSON text>"}`; the
//! client joins the `data` strings of one id in `seq` order up to `last: true`
//! and parses the result as the reply. A client may send a large request the
//! same way with `"request_type": "Partial"`; the whole is limited to the
//! session's maximum message size. Frames of one message are never
//! interleaved with other messages on the same channel in a way that matters:
//! each id is joined on its own.

use std::collections::HashMap;

use serde::Deserialize;

use crate::api::{Reply, RequestId};
use crate::error::ApiError;

/// The smallest frame this module makes, whatever the peer announces.
pub const MIN_FRAME: usize = 1024;
/// Messages of one request being joined at once, per session.
const MAX_PENDING: usize = 8;

/// A reply as the data channel messages that carry it, each at most `limit` bytes.
pub fn encode(reply: &Reply, limit: usize) -> Vec<Vec<u8>> {
    let json = reply.to_json();
    if json.len() <= limit {
        return vec![json];
    }
    // to_json() is serde_json output, always UTF-8.
    let text = String::from_utf8(json).expect("JSON is UTF-8");
    split(&reply.id, &text, limit)
}

/// `text` as Partial frames of at most `limit` bytes each.
pub fn split(id: &RequestId, text: &str, limit: usize) -> Vec<Vec<u8>> {
    // serde_json serializes a RequestId (a string, number or null) infallibly.
    let id_json = serde_json::to_string(id).expect("id serializes");
    // The frame around the data, with the widest seq and `last` values.
    let overhead = format!(
        r#"{{"id":{id_json},"response_type":"Partial","seq":{},"last":false,"done":false,"data":""}}"#,
        u64::MAX
    )
    .len();
    let budget = limit.max(MIN_FRAME).saturating_sub(overhead).max(64);
    let mut frames = Vec::new();
    let mut rest = text;
    let mut seq = 0u64;
    while !rest.is_empty() || seq == 0 {
        let cut = piece_len(rest, budget);
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        let frame = format!(
            r#"{{"id":{id_json},"response_type":"Partial","seq":{seq},"last":{},"done":false,"data":{}}}"#,
            rest.is_empty(),
            // A &str always serializes.
            serde_json::to_string(piece).expect("string serializes")
        );
        frames.push(frame.into_bytes());
        seq += 1;
    }
    frames
}

/// The longest prefix of `text`, cut at a char boundary, whose JSON string
/// form (without quotes) takes at most `budget` bytes.
fn piece_len(text: &str, budget: usize) -> usize {
    let mut cost = 0;
    for (at, c) in text.char_indices() {
        cost += match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if cost > budget {
            // Always make progress, even with a tiny budget.
            return if at == 0 { c.len_utf8() } else { at };
        }
    }
    text.len()
}

/// One incoming Partial frame.
#[derive(Deserialize)]
struct Frame {
    #[serde(default)]
    id: RequestId,
    request_type: String,
    seq: u64,
    #[serde(default)]
    last: bool,
    data: String,
}

/// Whether `message` contains the bytes `Partial`. A byte loop rather than
/// `windows(7)`, which compared seven bytes at every offset and cost more
/// than the rest of serving a 64 KiB request.
fn names_partial(message: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"Partial";
    message
        .iter()
        .enumerate()
        .any(|(at, &byte)| byte == b'P' && message[at..].starts_with(NEEDLE))
}

/// What an incoming message amounts to.
pub enum Incoming {
    /// The message itself is a whole request (no copy is made).
    Plain,
    /// A whole request joined from frames.
    Whole(Vec<u8>),
    /// A frame was kept; more are to come.
    Pending,
    /// The frames were wrong; the error goes to the client.
    Failed(RequestId, ApiError),
}

/// Joins incoming Partial frames per request id, within a size limit.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: HashMap<String, (u64, String)>,
}

impl Joiner {
    /// Takes one data channel message.
    pub fn push(&mut self, message: &[u8], max_bytes: usize) -> Incoming {
        // Cheap test first: only a message naming Partial can be a frame.
        let frame = match names_partial(message).then(|| serde_json::from_slice::<Frame>(message)) {
            Some(Ok(frame)) if frame.request_type == "Partial" => frame,
            _ => return Incoming::Plain,
        };
        let key = frame.id.key();
        if frame.seq == 0 {
            if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&key) {
                let detail = format!("more than {MAX_PENDING} Partial messages at once");
                return Incoming::Failed(frame.id, ApiError::too_large(detail));
            }
            self.pending.insert(key.clone(), (0, String::new()));
        }
        let Some((next, text)) = self.pending.get_mut(&key) else {
            let detail = format!("Partial frame {} without frame 0 before it", frame.seq);
            return Incoming::Failed(frame.id, ApiError::bad_request(detail));
        };
        if frame.seq != *next {
            let detail = format!("Partial frame {} where {} was expected", frame.seq, next);
            self.pending.remove(&key);
            return Incoming::Failed(frame.id, ApiError::bad_request(detail));
        }
        if text.len() + frame.data.len() > max_bytes {
            self.pending.remove(&key);
            let detail = format!(
                "the message is larger than the {max_bytes} bytes a WebRTC session accepts"
            );
            return Incoming::Failed(frame.id, ApiError::too_large(detail));
        }
        text.push_str(&frame.data);
        *next += 1;
        if !frame.last {
            return Incoming::Pending;
        }
        // The entry exists: it was found just above.
        let (_, whole) = self.pending.remove(&key).expect("pending entry");
        Incoming::Whole(whole.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChatChunk, Response};
    use serde_json::Value;

    fn join(frames: &[Vec<u8>]) -> Value {
        let mut text = String::new();
        for (seq, frame) in frames.iter().enumerate() {
            let frame: Value = serde_json::from_slice(frame).unwrap();
            assert_eq!(frame["response_type"], "Partial");
            assert_eq!(frame["seq"], seq as u64);
            assert_eq!(frame["last"], seq + 1 == frames.len());
            text.push_str(frame["data"].as_str().unwrap());
        }
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn small_replies_go_whole_and_large_ones_in_frames_under_the_limit() {
        let reply = |delta: String| {
            Reply::new(
                RequestId::text("r"),
                Response::ChatChunk(ChatChunk::text(delta)),
            )
        };
        assert_eq!(encode(&reply("hi".into()), 1024).len(), 1);
        // Quotes, backslashes, newlines and multi-byte chars all cost more than one byte.
        let tricky = "ab\"c\\d\né€😀".repeat(5000);
        let frames = encode(&reply(tricky.clone()), 4096);
        assert!(frames.len() > 10);
        assert!(frames.iter().all(|f| f.len() <= 4096));
        let whole = join(&frames);
        assert_eq!(whole["delta"], tricky);
        assert_eq!(whole["id"], "r");
    }

    #[test]
    fn incoming_frames_join_and_are_checked() {
        let text = r#"{"id":7,"request_type":"Health","pad":"Partial"}"#;
        let frames = split(&RequestId::text("7"), text, MIN_FRAME);
        let mut joiner = Joiner::default();
        let frames: Vec<Vec<u8>> = frames
            .into_iter()
            .map(|f| {
                String::from_utf8(f)
                    .unwrap()
                    .replace("response_type", "request_type")
            })
            .map(String::into_bytes)
            .collect();
        match joiner.push(&frames[0], 1 << 20) {
            Incoming::Whole(bytes) => assert_eq!(bytes, text.as_bytes()),
            _ => panic!("one frame is the whole message"),
        }
        // A plain message that mentions Partial is still a plain message.
        assert!(matches!(
            joiner.push(text.as_bytes(), 1 << 20),
            Incoming::Plain
        ));
        assert!(matches!(
            joiner.push(br#"{"id":1,"request_type":"Health"}"#, 1 << 20),
            Incoming::Plain
        ));
        assert!(names_partial(b"xxPartial") && !names_partial(b"Partia") && !names_partial(b""));

        let frame = |seq: u64, last: bool, data: &str| {
            format!(
                r#"{{"id":"x","request_type":"Partial","seq":{seq},"last":{last},"data":"{data}"}}"#
            )
        };
        assert!(matches!(
            joiner.push(frame(0, false, "ab").as_bytes(), 10),
            Incoming::Pending
        ));
        assert!(
            matches!(joiner.push(frame(2, true, "c").as_bytes(), 10), Incoming::Failed(_, e) if e.status == 400)
        );
        assert!(matches!(
            joiner.push(frame(0, false, "abcdef").as_bytes(), 10),
            Incoming::Pending
        ));
        assert!(
            matches!(joiner.push(frame(1, true, "abcdef").as_bytes(), 10), Incoming::Failed(_, e) if e.status == 413)
        );
        assert!(
            matches!(joiner.push(frame(1, true, "x").as_bytes(), 10), Incoming::Failed(_, e) if e.status == 400)
        );
    }

    use proptest::prelude::*;

    /// `text` as the Partial frames a client sends (`request_type`).
    fn request_frames(id: &str, text: &str, limit: usize) -> Vec<Vec<u8>> {
        split(&RequestId::text(id), text, limit)
            .into_iter()
            .map(|f| {
                // The frame's own member comes before `data`, and a quote
                // inside `data` is escaped: the first match is the member.
                String::from_utf8(f)
                    .unwrap()
                    .replacen(
                        r#""response_type":"Partial""#,
                        r#""request_type":"Partial""#,
                        1,
                    )
                    .into_bytes()
            })
            .collect()
    }

    /// One arbitrary incoming message: a Partial frame with arbitrary
    /// fields, or arbitrary bytes.
    fn any_message() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0u8..4, 0u64..4, any::<bool>(), ".{0,48}").prop_map(|(id, seq, last, data)| {
                serde_json::json!({
                    "id": id, "request_type": "Partial", "seq": seq, "last": last, "data": data
                })
                .to_string()
                .into_bytes()
            }),
            (0u8..12, ".{0,8}").prop_map(|(id, data)| {
                serde_json::json!({"id": id, "request_type": "Partial", "seq": 0, "data": data})
                    .to_string()
                    .into_bytes()
            }),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_join_in_any_interleaving_gives_each_message_back(
            texts in prop::collection::vec(".{0,3000}", 1..=MAX_PENDING),
            limit in MIN_FRAME..4096,
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..400),
        ) {
            let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> = texts
                .iter()
                .enumerate()
                .map(|(i, text)| request_frames(&format!("m{i}"), text, limit).into())
                .collect();
            for queue in &queues {
                prop_assert!(queue.iter().all(|f| f.len() <= limit));
            }
            // Frames of one message keep their order; messages interleave
            // as `order` picks, then whatever is left goes in turn.
            let mut picks = order.into_iter();
            let mut joiner = Joiner::default();
            let mut joined = vec![None; texts.len()];
            loop {
                let live: Vec<usize> =
                    (0..queues.len()).filter(|i| !queues[*i].is_empty()).collect();
                if live.is_empty() {
                    break;
                }
                let pick = picks.next().map_or(live[0], |p| live[p.index(live.len())]);
                let frame = queues[pick].pop_front().unwrap();
                match joiner.push(&frame, 1 << 20) {
                    Incoming::Whole(bytes) => {
                        prop_assert!(joined[pick].is_none());
                        joined[pick] = Some(String::from_utf8(bytes).unwrap());
                    }
                    Incoming::Pending => prop_assert!(!queues[pick].is_empty()),
                    Incoming::Plain => prop_assert!(false, "a frame taken as a plain message"),
                    Incoming::Failed(_, e) => prop_assert!(false, "{}", e),
                }
            }
            let expected: Vec<Option<String>> = texts.into_iter().map(Some).collect();
            prop_assert_eq!(joined, expected);
            prop_assert!(joiner.pending.is_empty());
        }

        #[test]
        fn arbitrary_frames_never_panic_and_memory_stays_within_the_limit(
            messages in prop::collection::vec(any_message(), 0..64),
            max_bytes in 0usize..128,
        ) {
            let mut joiner = Joiner::default();
            for message in &messages {
                if let Incoming::Whole(bytes) = joiner.push(message, max_bytes) {
                    prop_assert!(bytes.len() <= max_bytes);
                }
                prop_assert!(joiner.pending.len() <= MAX_PENDING);
                prop_assert!(joiner.pending.values().all(|(_, text)| text.len() <= max_bytes));
            }
        }
    }
}
