//! [`TextStream`]: token bytes into UTF-8 text deltas, cut at a stop
//! sequence without ever streaming part of one.

/// Turns token bytes into text deltas: holds back an incomplete UTF-8
/// character and any tail that may be the start of a stop sequence.
#[derive(Debug, Default)]
pub struct TextStream {
    stop: Vec<String>,
    pending: Vec<u8>,
    text: String,
    sent: usize,
    stopped: bool,
}

impl TextStream {
    /// A stream that ends at the first of `stop`.
    pub fn new(stop: &[String]) -> TextStream {
        TextStream {
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..TextStream::default()
        }
    }

    /// Adds one token's bytes; returns the text that may be shown now.
    pub fn push(&mut self, bytes: &[u8]) -> &str {
        if self.stopped {
            return "";
        }
        self.pending.extend_from_slice(bytes);
        self.decode_pending(false);
        let from = self.sent;
        let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
        let mut search = from.saturating_sub(longest);
        while !self.text.is_char_boundary(search) {
            search -= 1;
        }
        let found = self
            .stop
            .iter()
            .filter_map(|s| self.text[search..].find(s.as_str()).map(|at| search + at))
            .min();
        if let Some(at) = found {
            self.text.truncate(at.max(from));
            self.stopped = true;
            self.pending.clear();
            self.sent = self.text.len();
            return &self.text[from.min(self.sent)..];
        }
        let hold = self.held_back();
        let until = (self.text.len() - hold).max(from);
        self.sent = until;
        &self.text[from..until]
    }

    /// Whether a stop sequence was seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text still held back, at the end of the generation.
    pub fn finish(&mut self) -> &str {
        if !self.stopped {
            self.decode_pending(true);
        }
        let from = self.sent;
        self.sent = self.text.len();
        &self.text[from..]
    }

    /// Everything generated so far (up to a stop sequence).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The whole text, consuming the stream.
    pub fn into_text(self) -> String {
        self.text
    }

    fn decode_pending(&mut self, at_end: bool) {
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    self.text.push_str(text);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // valid_up_to is a char boundary by definition.
                    self.text
                        .push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or(""));
                    match e.error_len() {
                        Some(bad) => {
                            self.text.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None if at_end => {
                            self.text.push('\u{FFFD}');
                            self.pending.clear();
                            return;
                        }
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Bytes at the end of the text that begin some stop sequence.
    fn held_back(&self) -> usize {
        let text = self.text.as_bytes();
        self.stop
            .iter()
            .flat_map(|stop| {
                let stop = stop.as_bytes();
                (1..stop.len().min(text.len() + 1))
                    .rev()
                    .find(|&k| text.ends_with(&stop[..k]))
            })
            .max()
            .map(|k| {
                let mut at = self.text.len() - k;
                while !self.text.is_char_boundary(at) {
                    at -= 1;
                }
                self.text.len() - at
            })
            .unwrap_or(0)
            .min(self.text.len() - self.sent.min(self.text.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], pieces: &[&[u8]]) -> (Vec<String>, String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut stream = TextStream::new(&stop);
        let mut deltas = Vec::new();
        for piece in pieces {
            deltas.push(stream.push(piece).to_string());
        }
        deltas.push(stream.finish().to_string());
        let stopped = stream.stopped();
        (deltas, stream.into_text(), stopped)
    }

    #[test]
    fn streams_whole_characters_only() {
        let euro = "€".as_bytes();
        let (deltas, text, _) = run(&[], &[b"a", &euro[..1], &euro[1..], b"b"]);
        assert_eq!(deltas, ["a", "", "€", "b", ""]);
        assert_eq!(text, "a€b");
        let (_, text, _) = run(&[], &[b"x\xff", &euro[..2]]);
        assert_eq!(text, "x\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn stops_without_showing_the_stop_sequence() {
        let (deltas, text, stopped) = run(&["END"], &[b"hello E", b"N", b"D more"]);
        assert_eq!(deltas.concat(), "hello ");
        assert_eq!(deltas[0], "hello ", "the E is held back");
        assert_eq!((text.as_str(), stopped), ("hello ", true));
        let (deltas, text, stopped) = run(&["END"], &[b"an E", b"xit"]);
        assert_eq!(deltas, ["an ", "Exit", ""]);
        assert_eq!((text.as_str(), stopped), ("an Exit", false));
        let (deltas, _, _) = run(&["\n\n"], &[b"a\n", b"\nb"]);
        assert_eq!(deltas.concat(), "a");
    }
}
