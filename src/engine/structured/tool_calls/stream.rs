//! The streaming machine behind [`ToolCallStream`]: content is passed on
//! (trailing whitespace and a possible opener held back), an opener starts a
//! call, and a call is sent as soon as its name and the start of its
//! arguments are known, then its arguments piece by piece. Each step looks
//! at the text not yet decided on and either moves on or waits for more.

use super::{Args, IdGen, StreamEvent, ToolFormat, scan_call};
use crate::api::ToolCallDelta;
use crate::engine::structured::json_scan::{self, Scan, StringEnd};

/// Where the stream stands.
enum State {
    /// Content, watching for an opener.
    Text,
    /// After `[TOOL_CALLS]`: waiting for the `[` of its list.
    ListOpen { release: String },
    /// A call object at the start of the buffer.
    Call(Call),
    /// Between the calls of a list: `,` or `]` next.
    List { generic: bool },
    /// After a call: its closer (`</tool_call>`) may follow.
    AfterCall,
    /// Generic: the output has not shown its shape yet.
    GenericStart,
    /// Generic: inside the `response` string.
    GenericResponse,
    /// Generic: after the value, the closing `}`.
    GenericTail,
    /// Everything from here on is content.
    Plain,
}

/// A call being read.
struct Call {
    /// Text already taken from the buffer that is content after all if this
    /// turns out not to be a call (only before the call is sent).
    release: String,
    /// Its first piece (id and name) has been sent.
    sent: bool,
    /// Bytes of compact arguments sent.
    args_sent: usize,
    /// It is an element of a list (Mistral, generic).
    in_list: bool,
    /// The generic form: a failure makes the rest plain content.
    generic: bool,
}

impl Call {
    fn new(release: String, in_list: bool, generic: bool) -> Call {
        Call {
            release,
            sent: false,
            args_sent: 0,
            in_list,
            generic,
        }
    }
}

/// Splits streamed output into content and tool-call deltas.
pub struct ToolCallStream {
    format: ToolFormat,
    ids: IdGen,
    /// Text received and not yet decided on.
    buf: String,
    state: State,
    /// Calls sent so far (the next call's index).
    calls: u32,
    /// Trailing whitespace of the content, sent only when more content follows.
    pending_ws: String,
    /// A call just ended: whitespace before the next content is dropped.
    after_call: bool,
    events: Vec<StreamEvent>,
}

/// What a step of the machine did.
enum Step {
    /// It moved on; step again.
    Again,
    /// It needs more text.
    Wait,
}

impl ToolCallStream {
    /// A stream of output in `format`; `ids` names each call.
    pub fn new(format: ToolFormat, ids: IdGen) -> ToolCallStream {
        let state = match format {
            ToolFormat::Generic => State::GenericStart,
            _ => State::Text,
        };
        ToolCallStream {
            format,
            ids,
            buf: String::new(),
            state,
            calls: 0,
            pending_ws: String::new(),
            after_call: false,
            events: Vec::new(),
        }
    }

    /// Takes the next piece of output; returns what it decided.
    pub fn push(&mut self, delta: &str) -> Vec<StreamEvent> {
        self.buf.push_str(delta);
        while let Step::Again = self.step() {}
        std::mem::take(&mut self.events)
    }

    /// The output ended: releases what was held back.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let rest = std::mem::take(&mut self.buf);
        match std::mem::replace(&mut self.state, State::Plain) {
            State::Text | State::GenericStart | State::Plain => self.content(&rest),
            State::ListOpen { release } => self.content(&format!("{release}{rest}")),
            State::Call(call) if !call.sent => self.content(&format!("{}{rest}", call.release)),
            // A call cut off keeps the arguments sent; an unfinished closer
            // or list end is markup.
            State::Call(_)
            | State::List { .. }
            | State::AfterCall
            | State::GenericResponse
            | State::GenericTail => {}
        }
        self.pending_ws.clear();
        std::mem::take(&mut self.events)
    }

    /// Sends content, holding trailing whitespace back.
    fn content(&mut self, text: &str) {
        let mut text = text;
        if self.after_call {
            text = text.trim_start();
            if text.is_empty() {
                return;
            }
            self.after_call = false;
        }
        let body = text.trim_end();
        if body.is_empty() {
            self.pending_ws.push_str(text);
            return;
        }
        let mut out = std::mem::take(&mut self.pending_ws);
        out.push_str(body);
        self.pending_ws = text[body.len()..].to_string();
        self.events.push(StreamEvent::Content(out));
    }

    /// Takes `n` bytes off the front of the buffer.
    fn take(&mut self, n: usize) -> String {
        let mut n = n.min(self.buf.len());
        while !self.buf.is_char_boundary(n) {
            n += 1;
        }
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    fn step(&mut self) -> Step {
        match std::mem::replace(&mut self.state, State::Plain) {
            State::Text => self.step_text(),
            State::ListOpen { release } => self.step_list_open(release),
            State::Call(call) => self.step_call(call),
            State::List { generic } => self.step_list(generic),
            State::AfterCall => self.step_after_call(),
            State::GenericStart => self.step_generic_start(),
            State::GenericResponse => self.step_generic_response(),
            State::GenericTail => self.step_generic_tail(),
            State::Plain => {
                let rest = std::mem::take(&mut self.buf);
                self.content(&rest);
                Step::Wait
            }
        }
    }

    fn wait(&mut self, state: State) -> Step {
        self.state = state;
        Step::Wait
    }

    fn again(&mut self, state: State) -> Step {
        self.state = state;
        Step::Again
    }

    /// Openers of the format; `true` for those that are the start of the
    /// call object itself (Llama 3's bare JSON).
    fn openers(&self) -> &'static [(&'static str, bool)] {
        match self.format {
            ToolFormat::Hermes => &[("<tool_call>", false)],
            ToolFormat::Llama3Json => &[
                ("<|python_tag|>", false),
                ("{\"name\"", true),
                ("{\"type\"", true),
            ],
            ToolFormat::Mistral => &[("[TOOL_CALLS]", false)],
            ToolFormat::Generic => &[],
        }
    }

    fn step_text(&mut self) -> Step {
        let openers = self.openers();
        let found = openers
            .iter()
            .filter_map(|&(o, in_object)| self.buf.find(o).map(|at| (at, o, in_object)))
            .min_by_key(|&(at, ..)| at);
        let Some((at, opener, in_object)) = found else {
            // Hold back a tail that may be the start of an opener.
            let longest = openers.iter().map(|(o, _)| o.len()).max().unwrap_or(0);
            let keep = (1..=self.buf.len().min(longest))
                .rev()
                .find(|&n| {
                    self.buf.is_char_boundary(self.buf.len() - n)
                        && openers.iter().any(|(o, _)| {
                            o.len() > n && o.starts_with(&self.buf[self.buf.len() - n..])
                        })
                })
                .unwrap_or(0);
            let text = self.take(self.buf.len() - keep);
            self.content(&text);
            return self.wait(State::Text);
        };
        let before = self.take(at);
        self.content(&before);
        if in_object {
            return self.again(State::Call(Call::new(String::new(), false, false)));
        }
        let release = self.take(opener.len());
        if self.format == ToolFormat::Mistral {
            self.again(State::ListOpen { release })
        } else {
            self.again(State::Call(Call::new(release, false, false)))
        }
    }

    fn step_list_open(&mut self, mut release: String) -> Step {
        let i = json_scan::skip_ws(self.buf.as_bytes(), 0);
        match self.buf.as_bytes().get(i) {
            None => self.wait(State::ListOpen { release }),
            Some(b'[') => {
                release.push_str(&self.take(i + 1));
                self.again(State::Call(Call::new(release, true, false)))
            }
            Some(_) => {
                self.content(&release);
                self.again(State::Text)
            }
        }
    }

    fn step_call(&mut self, mut call: Call) -> Step {
        let mut scan = scan_call(&self.buf);
        let broken = scan.invalid;
        let mut limit = self.buf.len();
        if let Some(at) = broken {
            // What a stream that stopped just before the break would have
            // seen (and sent): so pieces and a whole text agree.
            let mut cut = at.min(self.buf.len());
            while !self.buf.is_char_boundary(cut) {
                cut -= 1;
            }
            scan = scan_call(&self.buf[..cut]);
            limit = cut;
        }
        let args_text = scan.args.as_ref().and_then(|args| match args {
            Args::Raw { start, end } => {
                Some(json_scan::compact(&self.buf[*start..end.unwrap_or(limit)]))
            }
            Args::Text(text) => text.clone(),
        });
        // A call needs both: `{"name": ..}` alone is JSON, not a call.
        if scan.name.is_some() && args_text.is_some() && !call.sent {
            self.pending_ws.clear();
            self.after_call = false;
            let id = (self.ids)();
            self.events.push(StreamEvent::Call(ToolCallDelta {
                index: self.calls,
                id: Some(id),
                name: scan.name.clone(),
                arguments: String::new(),
            }));
            call.sent = true;
        }
        if call.sent {
            let args = args_text.unwrap_or_default();
            if args.len() > call.args_sent {
                self.events.push(StreamEvent::Call(ToolCallDelta {
                    index: self.calls,
                    id: None,
                    name: None,
                    arguments: args[call.args_sent..].to_string(),
                }));
                call.args_sent = args.len();
            }
        }
        if let Some(at) = broken {
            return self.call_failed(call, at);
        }
        let Some(end) = scan.end else {
            return self.wait(State::Call(call));
        };
        if !call.sent {
            // A whole object without a name or arguments: not a call.
            return self.call_failed(call, end);
        }
        self.take(end);
        self.calls += 1;
        self.after_call = true;
        let next = match (call.in_list, call.generic) {
            (true, generic) => State::List { generic },
            (false, true) => State::GenericTail,
            (false, false) => State::AfterCall,
        };
        self.again(next)
    }

    /// The text at the buffer's start is not a call (it stops being one at
    /// byte `at`).
    fn call_failed(&mut self, call: Call, at: usize) -> Step {
        if call.generic {
            // The generic form failed: all of the output is content.
            if !call.sent {
                self.buf.insert_str(0, &call.release);
            } else {
                self.take(at);
            }
            return self.again(State::Plain);
        }
        if call.sent {
            // Already sent: the call ends with what was sent; the rest of
            // its text was not JSON and is dropped up to where it broke.
            self.take(at);
            self.calls += 1;
            self.after_call = true;
            return self.again(State::Text);
        }
        if call.release.is_empty() {
            // A bare-JSON opener: its first byte is content, so the next
            // scan starts past it.
            let first = self.take(1);
            self.content(&first);
        } else {
            self.content(&call.release);
        }
        self.again(State::Text)
    }

    fn step_list(&mut self, generic: bool) -> Step {
        let i = json_scan::skip_ws(self.buf.as_bytes(), 0);
        match self.buf.as_bytes().get(i) {
            None => self.wait(State::List { generic }),
            Some(b',') => {
                self.take(i + 1);
                self.again(State::Call(Call::new(String::new(), true, generic)))
            }
            Some(b']') => {
                self.take(i + 1);
                self.again(if generic {
                    State::GenericTail
                } else {
                    State::Text
                })
            }
            Some(_) => self.again(if generic { State::Plain } else { State::Text }),
        }
    }

    fn step_after_call(&mut self) -> Step {
        const CLOSER: &str = "</tool_call>";
        if self.format != ToolFormat::Hermes {
            return self.again(State::Text);
        }
        let i = json_scan::skip_ws(self.buf.as_bytes(), 0);
        let rest = &self.buf[i..];
        if rest.starts_with(CLOSER) {
            self.take(i + CLOSER.len());
            self.again(State::Text)
        } else if CLOSER.starts_with(rest) {
            self.wait(State::AfterCall)
        } else {
            self.again(State::Text)
        }
    }

    fn step_generic_start(&mut self) -> Step {
        let b = self.buf.as_bytes();
        let i = json_scan::skip_ws(b, 0);
        match b.get(i) {
            None => return self.wait(State::GenericStart),
            Some(b'{') => {}
            Some(_) => return self.again(State::Plain),
        }
        let k = json_scan::skip_ws(b, i + 1);
        if k == b.len() {
            return self.wait(State::GenericStart);
        }
        let key_end = match (b[k], json_scan::string(b, k)) {
            (b'"', Scan::Done(e)) => e,
            (b'"', Scan::Partial) => return self.wait(State::GenericStart),
            _ => return self.again(State::Plain),
        };
        let key: String = serde_json::from_str(&self.buf[k..key_end]).unwrap_or_default();
        let colon = json_scan::skip_ws(b, key_end);
        match b.get(colon) {
            None => return self.wait(State::GenericStart),
            Some(b':') => {}
            Some(_) => return self.again(State::Plain),
        }
        let v = json_scan::skip_ws(b, colon + 1);
        let Some(&first) = b.get(v) else {
            return self.wait(State::GenericStart);
        };
        match (key.as_str(), first) {
            ("response", b'"') => {
                self.take(v + 1);
                self.again(State::GenericResponse)
            }
            ("tool_calls", b'[') => {
                let release = self.take(v + 1);
                self.again(State::Call(Call::new(release, true, true)))
            }
            ("tool_call", b'{') => {
                let release = self.take(v);
                self.again(State::Call(Call::new(release, false, true)))
            }
            _ => self.again(State::Plain),
        }
    }

    fn step_generic_response(&mut self) -> Step {
        let (text, used, end) = json_scan::decode_string_prefix(&self.buf);
        self.take(used);
        self.content(&text);
        match end {
            StringEnd::Closed => {
                self.after_call = true;
                self.again(State::GenericTail)
            }
            StringEnd::Open => self.wait(State::GenericResponse),
            // Not JSON after all: the rest is content as written.
            StringEnd::Invalid => self.again(State::Plain),
        }
    }

    fn step_generic_tail(&mut self) -> Step {
        let i = json_scan::skip_ws(self.buf.as_bytes(), 0);
        match self.buf.as_bytes().get(i) {
            None => self.wait(State::GenericTail),
            Some(b'}') => {
                self.take(i + 1);
                self.after_call = true;
                self.again(State::Plain)
            }
            Some(_) => self.again(State::Plain),
        }
    }
}
