//! A JSON scanner for text that is still arriving: it says where a value
//! ends, that more text is needed, or where the text stops being JSON. The
//! tool-call parsers use it to find a call's name and the span of its
//! arguments while the model is still writing them.

/// How far a value reaches in the text scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The value ends just before this byte offset.
    Done(usize),
    /// The text ends inside the value (which is valid so far).
    Partial,
    /// The text is not JSON at this byte offset.
    Invalid(usize),
}

/// Nesting deeper than this is taken as not JSON (it bounds the recursion).
const MAX_DEPTH: usize = 128;

/// The offset of the first non-whitespace byte at or after `i`.
pub fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Scans one value starting at `i` (after any whitespace).
pub fn value(s: &[u8], i: usize) -> Scan {
    value_at(s, skip_ws(s, i), 0)
}

fn value_at(s: &[u8], i: usize, depth: usize) -> Scan {
    if depth > MAX_DEPTH {
        return Scan::Invalid(i);
    }
    match s.get(i) {
        None => Scan::Partial,
        Some(b'"') => string(s, i),
        Some(b'{') => container(s, i, b'}', depth, true),
        Some(b'[') => container(s, i, b']', depth, false),
        Some(b't') => word(s, i, b"true"),
        Some(b'f') => word(s, i, b"false"),
        Some(b'n') => word(s, i, b"null"),
        Some(b'-' | b'0'..=b'9') => number(s, i),
        Some(_) => Scan::Invalid(i),
    }
}

/// A string starting at its opening quote `s[i]`.
pub fn string(s: &[u8], i: usize) -> Scan {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Scan::Done(j + 1),
            b'\\' => match s.get(j + 1) {
                None => return Scan::Partial,
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                Some(b'u') => {
                    for k in j + 2..j + 6 {
                        match s.get(k) {
                            None => return Scan::Partial,
                            Some(h) if h.is_ascii_hexdigit() => {}
                            Some(_) => return Scan::Invalid(k),
                        }
                    }
                    j += 6;
                }
                Some(_) => return Scan::Invalid(j + 1),
            },
            c if c < 0x20 => return Scan::Invalid(j),
            _ => j += 1,
        }
    }
    Scan::Partial
}

fn container(s: &[u8], i: usize, close: u8, depth: usize, keyed: bool) -> Scan {
    let mut j = skip_ws(s, i + 1);
    if s.get(j) == Some(&close) {
        return Scan::Done(j + 1);
    }
    loop {
        if keyed {
            match s.get(j) {
                None => return Scan::Partial,
                Some(b'"') => {}
                Some(_) => return Scan::Invalid(j),
            }
            j = match string(s, j) {
                Scan::Done(e) => skip_ws(s, e),
                other => return other,
            };
            match s.get(j) {
                None => return Scan::Partial,
                Some(b':') => j = skip_ws(s, j + 1),
                Some(_) => return Scan::Invalid(j),
            }
        }
        j = match value_at(s, j, depth + 1) {
            Scan::Done(e) => skip_ws(s, e),
            other => return other,
        };
        match s.get(j) {
            None => return Scan::Partial,
            Some(b',') => j = skip_ws(s, j + 1),
            Some(&c) if c == close => return Scan::Done(j + 1),
            Some(_) => return Scan::Invalid(j),
        }
    }
}

fn word(s: &[u8], i: usize, w: &[u8]) -> Scan {
    for (k, &expected) in w.iter().enumerate() {
        match s.get(i + k) {
            None => return Scan::Partial,
            Some(&c) if c == expected => {}
            Some(_) => return Scan::Invalid(i + k),
        }
    }
    Scan::Done(i + w.len())
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; a number at the
/// very end of the text may go on, so it is partial there.
fn number(s: &[u8], i: usize) -> Scan {
    let digits = |mut j: usize| {
        while s.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = i + usize::from(s[i] == b'-');
    match s.get(j) {
        None => return Scan::Partial,
        Some(b'0') => j += 1,
        Some(b'1'..=b'9') => j = digits(j),
        Some(_) => return Scan::Invalid(j),
    }
    if s.get(j) == Some(&b'.') {
        let k = digits(j + 1);
        if k == j + 1 {
            return if k == s.len() {
                Scan::Partial
            } else {
                Scan::Invalid(k)
            };
        }
        j = k;
    }
    if matches!(s.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let k = digits(j);
        if k == j {
            return if k == s.len() {
                Scan::Partial
            } else {
                Scan::Invalid(k)
            };
        }
        j = k;
    }
    if j == s.len() {
        Scan::Partial
    } else {
        Scan::Done(j)
    }
}

/// JSON text without the whitespace between tokens. Applied to a prefix of a
/// value it gives a prefix of the whole value's result, so a stream can send
/// it piece by piece.
pub fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// How a decoded string prefix ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringEnd {
    /// At its closing quote.
    Closed,
    /// The text ran out (perhaps inside an escape).
    Open,
    /// At an invalid escape.
    Invalid,
}

/// Decodes the inside of a JSON string as far as it is complete: the text,
/// how many bytes it took, and how it ended.
pub fn decode_string_prefix(s: &str) -> (String, usize, StringEnd) {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return (out, i + 1, StringEnd::Closed),
            b'\\' => {
                let Some(&kind) = b.get(i + 1) else { break };
                let simple = match kind {
                    b'"' => Some('"'),
                    b'\\' => Some('\\'),
                    b'/' => Some('/'),
                    b'b' => Some('\u{8}'),
                    b'f' => Some('\u{c}'),
                    b'n' => Some('\n'),
                    b'r' => Some('\r'),
                    b't' => Some('\t'),
                    b'u' => None,
                    _ => return (out, i, StringEnd::Invalid),
                };
                if let Some(c) = simple {
                    out.push(c);
                    i += 2;
                    continue;
                }
                let Some(escape) = unicode_escape(s, i) else {
                    return (out, i, StringEnd::Invalid);
                };
                let Some((c, len)) = escape else { break };
                out.push(c);
                i += len;
            }
            _ => {
                // A whole character: `s` is a str, so `i` is on a boundary here.
                let Some(c) = s[i..].chars().next() else {
                    break;
                };
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    (out, i, StringEnd::Open)
}

/// A `\uXXXX` escape at `i` (with its low surrogate when it is a high one):
/// `Some(None)` when the text ends inside it, `None` when it is invalid.
fn unicode_escape(s: &str, i: usize) -> Option<Option<(char, usize)>> {
    let hex = |at: usize| -> Option<Option<u32>> {
        match s.get(at..at + 4) {
            None if s.len() < at + 4 => Some(None),
            None => None,
            Some(h) if h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u32::from_str_radix(h, 16).ok().map(Some)
            }
            Some(_) => None,
        }
    };
    let Some(first) = hex(i + 2)? else {
        return Some(None);
    };
    if !(0xD800..0xDC00).contains(&first) {
        return Some(Some((char::from_u32(first).unwrap_or('\u{FFFD}'), 6)));
    }
    let rest = &s[i + 6..];
    if rest.is_empty() || rest == "\\" {
        return Some(None);
    }
    if !rest.starts_with("\\u") {
        // A lone high surrogate: no character for it.
        return Some(Some(('\u{FFFD}', 6)));
    }
    let Some(second) = hex(i + 8)? else {
        return Some(None);
    };
    if !(0xDC00..0xE000).contains(&second) {
        return Some(Some(('\u{FFFD}', 6)));
    }
    let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
    Some(Some((char::from_u32(c).unwrap_or('\u{FFFD}'), 12)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_values_and_their_prefixes() {
        let text = r#"{"a": [1, -2.5e3, true, null, "x\"\u00e9"], "b": {}}"#;
        assert_eq!(value(text.as_bytes(), 0), Scan::Done(text.len()));
        for cut in 0..text.len() {
            assert_eq!(value(&text.as_bytes()[..cut], 0), Scan::Partial, "at {cut}");
        }
        assert_eq!(value(b"{\"a\" 1}", 0), Scan::Invalid(5));
        assert_eq!(value(b"[1,]", 0), Scan::Invalid(3));
        assert_eq!(value(b"tru]", 0), Scan::Invalid(3));
        assert_eq!(value(b"01", 0), Scan::Done(1));
        assert_eq!(value(b"\"a\nb\"", 0), Scan::Invalid(2));
        assert_eq!(value(b"1.}", 0), Scan::Invalid(2));
        let deep = "[".repeat(200);
        assert!(matches!(value(deep.as_bytes(), 0), Scan::Invalid(_)));
    }

    #[test]
    fn compacts_outside_strings_only() {
        assert_eq!(
            compact("{ \"a b\" : [1, 2],\n \"c\\\" d\": 3 }"),
            "{\"a b\":[1,2],\"c\\\" d\":3}"
        );
        let full = compact("{ \"k\": \"v w\" }");
        for cut in 0..14 {
            assert!(full.starts_with(&compact(&"{ \"k\": \"v w\" }"[..cut])));
        }
    }

    #[test]
    fn decodes_string_prefixes() {
        use StringEnd::*;
        assert_eq!(
            decode_string_prefix(r#"a\nb" tail"#),
            ("a\nb".into(), 5, Closed)
        );
        assert_eq!(decode_string_prefix(r"ab\u00"), ("ab".into(), 2, Open));
        assert_eq!(
            decode_string_prefix(r"\ud83d\ude00!"),
            ("😀!".into(), 13, Open)
        );
        assert_eq!(decode_string_prefix(r"\ud83d"), (String::new(), 0, Open));
        assert_eq!(decode_string_prefix(r"\ud83d\"), (String::new(), 0, Open));
        assert_eq!(
            decode_string_prefix(r"\ud83dx"),
            ("\u{FFFD}x".into(), 7, Open)
        );
        assert_eq!(decode_string_prefix(r"a\q"), ("a".into(), 1, Invalid));
        assert_eq!(decode_string_prefix(r"\u12G4"), (String::new(), 0, Invalid));
    }
}
