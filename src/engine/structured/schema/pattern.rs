//! Whether llama.cpp's converter can turn a `pattern` into grammar that
//! matches it: this walks the regex exactly as its `_pattern_to_rule` does
//! (anchored `^...$`, groups, `(?:`, classes, `|`, `* + ?`, `{m,n}`, escapes
//! its grammar knows) and fails where it would give up. It also refuses what
//! the converter translates but gets wrong: the grammar matches the raw JSON
//! text between the quotes, so anything that can emit `"`, `\` or a control
//! character (`.`, most negated classes, such literals) would produce output
//! that is not valid JSON.

/// The converter's limit on nested groups.
const MAX_DEPTH: usize = 100;

/// Characters that end a run of literal characters in the converter.
const NON_LITERAL: &[u8] = b"|.()[]{}*+?^$";

/// Escapes the converter turns back into the plain character.
const ESCAPED_LITERALS: &[u8] = b"^$.[](){}|*+?";

/// Checks a pattern; the error says why it cannot be enforced.
pub fn check(pattern: &str) -> Result<(), String> {
    let p = pattern.as_bytes();
    if p.len() < 2 || p[0] != b'^' || p[p.len() - 1] != b'$' {
        return Err("it must be anchored with `^` and `$`".into());
    }
    let mut walk = Walk {
        p: &p[1..p.len() - 1],
        i: 0,
        depth: 0,
    };
    walk.sequence()?;
    if walk.depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    Ok(())
}

struct Walk<'a> {
    p: &'a [u8],
    i: usize,
    depth: usize,
}

/// What the last item of a sequence was, for quantifiers.
#[derive(PartialEq)]
enum Last {
    Nothing,
    Alternation,
    Item,
    Quantified,
}

impl Walk<'_> {
    /// One (group's) sequence, up to its `)` or the end.
    fn sequence(&mut self) -> Result<(), String> {
        let mut last = Last::Nothing;
        while self.i < self.p.len() {
            let c = self.p[self.i];
            match c {
                b'.' => return Err("`.` can produce characters a JSON string must escape".into()),
                b'(' => {
                    self.i += 1;
                    if self.p.get(self.i) == Some(&b'?') {
                        if self.p.get(self.i + 1) == Some(&b':') {
                            self.i += 2;
                        } else {
                            return Err("unsupported group syntax".into());
                        }
                    }
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err("pattern nesting too deep".into());
                    }
                    self.sequence()?;
                    last = Last::Item;
                }
                b')' => {
                    self.i += 1;
                    if self.depth == 0 {
                        return Err("unbalanced parentheses".into());
                    }
                    self.depth -= 1;
                    return Ok(());
                }
                b'^' | b'$' => return Err("anchor inside the pattern".into()),
                b'[' => {
                    self.class()?;
                    last = Last::Item;
                }
                b'|' => {
                    self.i += 1;
                    last = Last::Alternation;
                }
                b'*' | b'+' | b'?' => {
                    self.i += 1;
                    last = self.quantify(last, c == b'?')?;
                }
                b'{' => {
                    let close = self.p[self.i..]
                        .iter()
                        .position(|&b| b == b'}')
                        .ok_or("unterminated curly brackets")?;
                    let inner = String::from_utf8_lossy(&self.p[self.i + 1..self.i + close]);
                    self.i += close + 1;
                    let nums: Vec<&str> = inner.split(',').collect();
                    let parse = |s: &str| {
                        s.parse::<i32>()
                            .map_err(|_| "invalid number in curly brackets")
                    };
                    match nums.as_slice() {
                        [n] => {
                            parse(n)?;
                        }
                        [a, b] => {
                            if !a.is_empty() {
                                parse(a)?;
                            }
                            if !b.is_empty() {
                                parse(b)?;
                            }
                        }
                        _ => return Err("wrong number of values in curly brackets".into()),
                    }
                    last = self.quantify(last, false)?;
                }
                _ => {
                    self.literal()?;
                    last = Last::Item;
                }
            }
        }
        Ok(())
    }

    /// A quantifier after `last`. Only `?` may follow another quantifier
    /// (a lazy one); `**` and the like repeat a repetition, which llama.cpp's
    /// grammar cannot match without looping.
    fn quantify(&self, last: Last, lazy: bool) -> Result<Last, String> {
        match last {
            Last::Nothing | Last::Alternation => Err("nothing to repeat".into()),
            Last::Quantified if !lazy => Err("a repeated repetition".into()),
            _ => Ok(Last::Quantified),
        }
    }

    /// A `[...]` class, copied to the grammar as written up to the first `]`.
    fn class(&mut self) -> Result<(), String> {
        self.i += 1;
        let negated = self.p.get(self.i) == Some(&b'^');
        if negated {
            self.i += 1;
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        let mut pending: Option<u32> = None;
        let mut dash = false;
        loop {
            let Some(&b) = self.p.get(self.i) else {
                return Err("unterminated character class".into());
            };
            if b == b']' {
                self.i += 1;
                break;
            }
            let c = if b == b'\\' {
                let (c, len) = escape(self.p, self.i).ok_or_else(|| {
                    format!("unsupported escape in character class: {}", self.shown(2))
                })?;
                self.i += len;
                c
            } else if b == b'-'
                && pending.is_some()
                && !dash
                && self.p.get(self.i + 1) != Some(&b']')
            {
                self.i += 1;
                dash = true;
                continue;
            } else {
                self.next_char()
            };
            match (pending, dash) {
                (Some(lo), true) => {
                    ranges.push((lo, c));
                    pending = None;
                    dash = false;
                }
                (Some(lo), false) => {
                    ranges.push((lo, lo));
                    pending = Some(c);
                }
                (None, _) => pending = Some(c),
            }
        }
        if let Some(lo) = pending {
            ranges.push((lo, lo));
        }
        let matches = |c: u32| negated != ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        if let Some(bad) = (0..0x20)
            .chain([u32::from(b'"'), u32::from(b'\\')])
            .find(|&c| matches(c))
        {
            return Err(format!(
                "the class can match {}, which a JSON string must escape",
                shown_char(bad)
            ));
        }
        Ok(())
    }

    /// A run of literal characters.
    fn literal(&mut self) -> Result<(), String> {
        let start = self.i;
        let len = self.p.len();
        while self.i < len {
            let b = self.p[self.i];
            if b == b'\\' {
                if self.i == len - 1 {
                    return Err("trailing backslash".into());
                }
                let next = self.p[self.i + 1];
                let c = if ESCAPED_LITERALS.contains(&next) {
                    self.i += 2;
                    u32::from(next)
                } else {
                    let (c, n) = escape(self.p, self.i)
                        .ok_or_else(|| format!("unsupported escape: {}", self.shown(2)))?;
                    self.i += n;
                    c
                };
                refuse_in_json(c)?;
            } else if b == b'"' {
                refuse_in_json(u32::from(b))?;
            } else if !NON_LITERAL.contains(&b)
                && (self.i == len - 1
                    || self.i == start
                    || self.p[self.i + 1] == b'.'
                    || !NON_LITERAL.contains(&self.p[self.i + 1]))
            {
                let c = self.next_char();
                refuse_in_json(c)?;
            } else {
                break;
            }
        }
        if self.i == start {
            return Err(format!("unsupported character: {}", self.shown(1)));
        }
        Ok(())
    }

    /// The (UTF-8) character at `i`, moving past it.
    fn next_char(&mut self) -> u32 {
        let rest = &self.p[self.i..];
        let width = match rest[0] {
            b if b < 0x80 => 1,
            b if b >= 0xF0 => 4,
            b if b >= 0xE0 => 3,
            _ => 2,
        }
        .min(rest.len());
        self.i += width;
        std::str::from_utf8(&rest[..width])
            .ok()
            .and_then(|s| s.chars().next())
            .map_or(0xFFFD, u32::from)
    }

    fn shown(&self, n: usize) -> String {
        let end = (self.i + n).min(self.p.len());
        String::from_utf8_lossy(&self.p[self.i..end]).into_owned()
    }
}

/// An escape llama.cpp's grammar parser knows (`\x..`, `\u....`, `\U........`,
/// `\t \r \n \\ \" \[ \] \-`): the character and the escape's length.
fn escape(p: &[u8], i: usize) -> Option<(u32, usize)> {
    let kind = *p.get(i + 1)?;
    let hex = match kind {
        b'x' => 2,
        b'u' => 4,
        b'U' => 8,
        b't' => return Some((0x09, 2)),
        b'r' => return Some((0x0D, 2)),
        b'n' => return Some((0x0A, 2)),
        b'\\' | b'"' | b'[' | b']' | b'-' => return Some((u32::from(kind), 2)),
        _ => return None,
    };
    let digits = p.get(i + 2..i + 2 + hex)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u32::from_str_radix(text, 16).ok()?, 2 + hex))
}

fn refuse_in_json(c: u32) -> Result<(), String> {
    if c < 0x20 || c == u32::from(b'"') || c == u32::from(b'\\') {
        return Err(format!(
            "it matches {}, which a JSON string must escape",
            shown_char(c)
        ));
    }
    Ok(())
}

fn shown_char(c: u32) -> String {
    match char::from_u32(c) {
        Some(ch) if !ch.is_control() => format!("`{ch}`"),
        _ => format!("U+{c:04X}"),
    }
}
