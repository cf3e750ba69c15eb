//! Reasoning blocks (`<think>...</think>` and the like) split from a model's
//! output into `reasoning_content`, while it streams. As llama-server does, a
//! block is taken only at the start of the output (after whitespace), the
//! whitespace after its closing tag is dropped, and an unclosed block (cut by
//! `max_tokens`) is all reasoning. Templates of reasoning models often open
//! the block in the generation prompt, so the output starts inside it.

/// Reasoning markers known from chat templates, open and close.
const KNOWN: &[(&str, &str)] = &[
    ("<think>", "</think>"),
    ("[THINK]", "[/THINK]"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("<seed:think>", "</seed:think>"),
];

/// The reasoning markers a template uses, if any: `(open, close,
/// starts_inside)`. Whether the template opens the block itself is read from
/// its generation-prompt part: an open marker there whose string literal does
/// not close it again (DeepSeek-R1, QwQ and Qwen 3.5 end the prompt with
/// `<think>\n`; Qwen3 writes `<think>\n\n</think>` only to turn thinking
/// off). It assumes `enable_thinking` is true, as llama-server always passes
/// it (true unless thinking is turned off); many templates open the block
/// only then. [`prompt_opens_block`] on the rendered prompt is the sure
/// answer.
pub fn markers(template_source: &str) -> Option<(String, String, bool)> {
    let &(open, close) = KNOWN
        .iter()
        .find(|(_, close)| template_source.contains(close))?;
    let tail = template_source
        .rfind("add_generation_prompt")
        .map_or("", |at| &template_source[at..]);
    let starts_inside = tail.match_indices(open).any(|(at, _)| {
        let rest = &tail[at + open.len()..];
        // The literal ends at the next quote.
        let literal = rest.find(['\'', '"']).map_or(rest, |end| &rest[..end]);
        !literal.contains(close)
    });
    Some((open.into(), close.into(), starts_inside))
}

/// Whether a rendered prompt ends inside an open block (its last `open`
/// comes after its last `close`, followed only by whitespace).
pub fn prompt_opens_block(prompt: &str, open: &str, close: &str) -> bool {
    match prompt.rfind(open) {
        Some(at) => {
            prompt[at + open.len()..].trim().is_empty()
                && prompt.rfind(close).is_none_or(|c| c < at)
        }
        None => false,
    }
}

/// Where the splitter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but whitespace yet: a block may open.
    Start,
    /// Inside a block the prompt opened, nothing written yet: a model that
    /// opens it again has its marker dropped.
    Opened,
    /// Inside the block.
    Inside,
    /// Just after the block: whitespace is dropped.
    AfterClose,
    /// Content; no block any more.
    Content,
}

/// Splits streamed output into reasoning and content.
#[derive(Debug, Clone)]
pub struct ThinkSplitter {
    open: String,
    close: String,
    phase: Phase,
    /// Text held back: it may be (the start of) a marker.
    buf: String,
}

impl ThinkSplitter {
    /// A splitter for `open`/`close` blocks; `starts_inside` when the prompt
    /// opened the block.
    pub fn new(open: &str, close: &str, starts_inside: bool) -> ThinkSplitter {
        ThinkSplitter {
            open: open.into(),
            close: close.into(),
            phase: if starts_inside {
                Phase::Opened
            } else {
                Phase::Start
            },
            buf: String::new(),
        }
    }

    /// A splitter for output that follows `prompt` (rendered): inside a
    /// block when the prompt ends in an open one.
    pub fn after_prompt(open: &str, close: &str, prompt: &str) -> ThinkSplitter {
        ThinkSplitter::new(open, close, prompt_opens_block(prompt, open, close))
    }

    /// Takes the next piece of output: the reasoning and the content it
    /// completes.
    pub fn push(&mut self, delta: &str) -> (String, String) {
        self.buf.push_str(delta);
        let (mut reasoning, mut content) = (String::new(), String::new());
        loop {
            match self.phase {
                Phase::Start | Phase::Opened => {
                    let rest = self.buf.trim_start();
                    if rest.starts_with(self.open.as_str()) {
                        let skip = self.buf.len() - rest.len() + self.open.len();
                        self.buf.drain(..skip);
                        self.phase = Phase::Inside;
                    } else if self.open.starts_with(rest) {
                        // Whitespace, or part of the open marker: wait.
                        break;
                    } else if self.phase == Phase::Opened {
                        self.phase = Phase::Inside;
                    } else {
                        self.phase = Phase::Content;
                    }
                }
                Phase::Inside => {
                    if let Some(at) = self.buf.find(self.close.as_str()) {
                        reasoning.push_str(&self.buf[..at]);
                        self.buf.drain(..at + self.close.len());
                        self.phase = Phase::AfterClose;
                    } else {
                        let keep = partial_suffix(&self.buf, &self.close);
                        let cut = self.buf.len() - keep;
                        reasoning.push_str(&self.buf[..cut]);
                        self.buf.drain(..cut);
                        break;
                    }
                }
                Phase::AfterClose => {
                    let rest = self.buf.trim_start();
                    if rest.is_empty() {
                        self.buf.clear();
                        break;
                    }
                    self.buf = rest.to_string();
                    self.phase = Phase::Content;
                }
                Phase::Content => {
                    content.push_str(&self.buf);
                    self.buf.clear();
                    break;
                }
            }
        }
        (reasoning, content)
    }

    /// The output ended: releases what was held back.
    pub fn finish(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.buf);
        match self.phase {
            Phase::Inside | Phase::Opened => (rest, String::new()),
            Phase::Start | Phase::Content => (String::new(), rest),
            Phase::AfterClose => (String::new(), String::new()),
        }
    }
}

/// The length of the longest tail of `text` that is a proper prefix of
/// `marker` (held back in case the marker completes).
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(s: &mut ThinkSplitter, pieces: &[&str]) -> (String, String) {
        let (mut r, mut c) = (String::new(), String::new());
        for piece in pieces {
            let (a, b) = s.push(piece);
            r += &a;
            c += &b;
        }
        let (a, b) = s.finish();
        (r + &a, c + &b)
    }

    #[test]
    fn splits_a_block_across_pieces() {
        let mut s = ThinkSplitter::new("<think>", "</think>", false);
        assert_eq!(s.push("\n<th"), (String::new(), String::new()));
        assert_eq!(s.push("ink>Let me"), ("Let me".into(), String::new()));
        assert_eq!(s.push(" see</thi"), (" see".into(), String::new()));
        assert_eq!(s.push("nk>\n\n"), (String::new(), String::new()));
        assert_eq!(s.push("Paris."), (String::new(), "Paris.".into()));
        assert_eq!(s.finish(), (String::new(), String::new()));
    }

    #[test]
    fn starts_inside_when_the_prompt_opened_it() {
        let mut s = ThinkSplitter::new("<think>", "</think>", true);
        assert_eq!(
            split(&mut s, &["hmm", "</think>", " ok <think>x</think>"]),
            ("hmm".into(), "ok <think>x</think>".into())
        );
    }

    #[test]
    fn a_block_opened_twice_is_one_block() {
        let mut s = ThinkSplitter::new("<think>", "</think>", true);
        assert_eq!(
            split(&mut s, &["\n<th", "ink>\nhmm</think>ok"]),
            ("\nhmm".into(), "ok".into())
        );
        let mut s =
            ThinkSplitter::after_prompt("<think>", "</think>", "<|im_start|>assistant\n<think>\n");
        assert_eq!(split(&mut s, &["a</think>b"]), ("a".into(), "b".into()));
        let mut s = ThinkSplitter::after_prompt("<think>", "</think>", "<|im_start|>assistant\n");
        assert_eq!(
            split(&mut s, &["a</think>b"]),
            (String::new(), "a</think>b".into())
        );
    }

    #[test]
    fn no_block_is_all_content_and_an_open_one_all_reasoning() {
        let mut s = ThinkSplitter::new("<think>", "</think>", false);
        assert_eq!(
            split(&mut s, &["Hi <think>", "no</think>"]),
            (String::new(), "Hi <think>no</think>".into())
        );
        let mut s = ThinkSplitter::new("<think>", "</think>", false);
        assert_eq!(
            split(&mut s, &["<think>cut off </thi"]),
            ("cut off </thi".into(), String::new())
        );
        let mut s = ThinkSplitter::new("<think>", "</think>", false);
        assert_eq!(split(&mut s, &["<thi"]), (String::new(), "<thi".into()));
    }

    #[test]
    fn reads_markers_from_templates() {
        // The generation-prompt parts of templates in llama.cpp's models/templates.
        let r1 = "{%- if add_generation_prompt and not ns.is_tool -%}{{'<｜Assistant｜><think>\\n'}}{% if not enable_thinking %}{{- '</think>' -}}{% endif %}";
        let qwen3 = "{%- if '</think>' in message.content %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";
        let qwen35 = "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- else %}{{- '<think>\\n' }}{%- endif %}{%- endif %}";
        let magistral =
            "{{- '[THINK]' + reasoning + '[/THINK]' }}{%- if add_generation_prompt %}{%- endif %}";
        let think = |open: &str, close: &str, inside| Some((open.into(), close.into(), inside));
        assert_eq!(markers(r1), think("<think>", "</think>", true));
        assert_eq!(markers(qwen3), think("<think>", "</think>", false));
        assert_eq!(markers(qwen35), think("<think>", "</think>", true));
        assert_eq!(markers(magistral), think("[THINK]", "[/THINK]", false));
        assert_eq!(markers("{{ '<|im_start|>assistant\\n' }}"), None);
    }

    #[test]
    fn reads_an_open_block_from_the_prompt() {
        assert!(prompt_opens_block(
            "<|im_start|>assistant\n<think>\n",
            "<think>",
            "</think>"
        ));
        assert!(!prompt_opens_block(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n",
            "<think>",
            "</think>"
        ));
        assert!(!prompt_opens_block(
            "user: what is <think>? assistant:",
            "<think>",
            "</think>"
        ));
        assert!(!prompt_opens_block("plain", "<think>", "</think>"));
    }

    proptest! {
        #[test]
        fn any_text_in_any_pieces_splits_the_same(
            text in "(<think>|</think>|<th|nk>|[a-z \n]{0,3}|\\PC){0,12}",
            cuts in prop::collection::vec(0usize..40, 0..6),
            inside in any::<bool>(),
        ) {
            let whole = split(&mut ThinkSplitter::new("<think>", "</think>", inside), &[&text]);
            let chars: Vec<char> = text.chars().collect();
            let mut pieces = Vec::new();
            let mut last = 0;
            let mut cuts = cuts.clone();
            cuts.sort();
            for cut in cuts {
                let cut = cut.min(chars.len());
                pieces.push(chars[last..cut.max(last)].iter().collect::<String>());
                last = cut.max(last);
            }
            pieces.push(chars[last..].iter().collect());
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let streamed = split(&mut ThinkSplitter::new("<think>", "</think>", inside), &refs);
            prop_assert_eq!(&streamed, &whole);
            // Every character is accounted for, apart from the markers and
            // the whitespace around them.
            let strip = |s: &str| s.replace("<think>", "").replace("</think>", "").split_whitespace().collect::<String>();
            prop_assert_eq!(strip(&format!("{}{}", whole.0, whole.1)), strip(&text));
        }
    }
}
