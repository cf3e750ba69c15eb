//! Python's text forms of template values, which Hugging Face templates rely
//! on: `json.dumps` (transformers' `tojson` filter: non-ASCII kept, keys in
//! their given order, `", "`/`": "` separators, `indent`), and `str()` (what
//! jinja2 prints for `{{ x }}` and `x|string`: `None`, `True`, `['a', 1]`).

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Nesting deeper than this is refused rather than recursed into (Python's
/// own recursion limit plays this part for `json.dumps`).
const MAX_DEPTH: usize = 128;

/// The `tojson` filter, as transformers defines it: `json.dumps(x,
/// ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, the
/// same parameters in the same order.
pub(super) fn tojson(
    value: Value,
    ensure_ascii: Option<bool>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let ensure_ascii = match kwargs.get::<Option<bool>>("ensure_ascii")? {
        Some(flag) => flag,
        None => ensure_ascii.unwrap_or(false),
    };
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        Some(v) => Some(v),
        None => indent,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            // Python: `' ' * indent`, so a negative indent is "".
            None => " ".repeat(usize::try_from(i64::try_from(v)?).unwrap_or(0)),
        }),
    };
    let (item, key) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(pair) if pair.len() == 2 => (pair[0].clone(), pair[1].clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be a pair of strings",
            ));
        }
        // json.dumps' defaults: no space before a newline when indenting.
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let dumper = Dumper {
        ensure_ascii,
        indent,
        item,
        key,
        sort_keys,
    };
    let mut out = String::new();
    dumper.value(&mut out, &value, 0)?;
    Ok(out)
}

/// One `json.dumps` call's settings.
struct Dumper {
    ensure_ascii: bool,
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
}

impl Dumper {
    fn value(&self, out: &mut String, value: &Value, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: value nested too deeply",
            ));
        }
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&number(value, true)),
            ValueKind::String => string(out, value.as_str().unwrap_or_default(), self.ensure_ascii),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container(out, '[', ']', &items, depth, |out, item| {
                    self.value(out, item, depth + 1)
                })?;
            }
            ValueKind::Map => {
                let mut pairs = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    pairs.push((self.key_text(&key)?, item));
                }
                if self.sort_keys {
                    pairs.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(out, '{', '}', &pairs, depth, |out, (key, item)| {
                    string(out, key, self.ensure_ascii);
                    out.push_str(&self.key);
                    self.value(out, item, depth + 1)
                })?;
            }
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of type {kind} is not JSON serializable"),
                ));
            }
        }
        Ok(())
    }

    /// Writes `[a, b]` or `{..}`, one item a line when indenting; empty
    /// containers stay `[]`/`{}` as in Python.
    fn container<T>(
        &self,
        out: &mut String,
        open: char,
        close: char,
        items: &[T],
        depth: usize,
        mut each: impl FnMut(&mut String, &T) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(indent) = &self.indent {
                out.push('\n');
                for _ in 0..level {
                    out.push_str(indent);
                }
            }
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item);
            }
            newline(out, depth + 1);
            each(out, item)?;
        }
        newline(out, depth);
        out.push(close);
        Ok(())
    }

    /// Python turns `None`, booleans and numbers used as keys into strings.
    fn key_text(&self, key: &Value) -> Result<String, Error> {
        Ok(match key.kind() {
            ValueKind::String => key.as_str().unwrap_or_default().to_string(),
            ValueKind::None => "null".into(),
            ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
            ValueKind::Number => number(key, true),
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
                ));
            }
        })
    }
}

/// A JSON string literal: `"`, `\` and control characters escaped as Python
/// does (`\n`, `\u001f`); everything else kept unless `ensure_ascii`.
fn string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python writes it: integers as they are, floats by `repr`
/// (`1.0`, `1e-05`, `1e+16`); `json` spells the non-finite ones `NaN` and
/// `Infinity`, `str` spells them `nan` and `inf`.
fn number(value: &Value, json: bool) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) => float(f, json),
        Err(_) => value.to_string(),
    }
}

fn float(f: f64, json: bool) -> String {
    if f.is_nan() {
        return (if json { "NaN" } else { "nan" }).into();
    }
    if f.is_infinite() {
        let sign = if f < 0.0 { "-" } else { "" };
        return format!("{sign}{}", if json { "Infinity" } else { "inf" });
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python's
    // repr; only the layout differs.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat(usize::try_from(-exp - 1).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    let point = usize::try_from(exp + 1).unwrap_or(0);
    if digits.len() <= point {
        let zeros = "0".repeat(point - digits.len());
        format!("{sign}{digits}{zeros}.0")
    } else {
        let (int, frac) = digits.split_at(point);
        format!("{sign}{int}.{frac}")
    }
}

/// jinja2's `is iterable` (`iter(value)` works): None, numbers and
/// namespaces are not, though minijinja iterates None as empty. Templates
/// test `tools is iterable and tools | length > 0` with `tools = None`.
pub(super) fn is_iterable(value: &Value) -> bool {
    !matches!(
        value.kind(),
        ValueKind::None
            | ValueKind::Bool
            | ValueKind::Number
            | ValueKind::Invalid
            | ValueKind::Plain
    )
}

/// jinja2's `is sequence` (has a length and items): strings and dicts are,
/// as is jinja2's Undefined.
pub(super) fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String
            | ValueKind::Bytes
            | ValueKind::Seq
            | ValueKind::Map
            | ValueKind::Undefined
    )
}

/// `str(value)` in Python: what jinja2 writes for `{{ value }}` and
/// `value|string`. Undefined is empty (jinja2's default `Undefined`).
pub(super) fn str_of(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        _ => repr(value, 0),
    }
}

/// `repr(value)`: strings quoted, containers shown item by item.
fn repr(value: &Value, depth: usize) -> String {
    if depth > MAX_DEPTH {
        return "...".into();
    }
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => (if value.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number => number(value, false),
        ValueKind::String => repr_str(value.as_str().unwrap_or_default()),
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => {
                let items: Vec<String> = items.map(|v| repr(&v, depth + 1)).collect();
                format!("[{}]", items.join(", "))
            }
            Err(_) => value.to_string(),
        },
        ValueKind::Map => match value.try_iter() {
            Ok(keys) => {
                let pairs: Vec<String> = keys
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        format!("{}: {}", repr(&k, depth + 1), repr(&v, depth + 1))
                    })
                    .collect();
                format!("{{{}}}", pairs.join(", "))
            }
            Err(_) => value.to_string(),
        },
        _ => value.to_string(),
    }
}

/// Python's string repr: single quotes unless the text has a `'` and no `"`.
fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_python_repr_writes_them() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-0.0, "-0.0"),
            (123456.789, "123456.789"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (2.5e-7, "2.5e-07"),
        ] {
            assert_eq!(float(f, true), want, "{f}");
        }
        assert_eq!(float(f64::NAN, true), "NaN");
        assert_eq!(float(f64::NEG_INFINITY, false), "-inf");
    }

    #[test]
    fn strings_are_repr_quoted_as_python_quotes_them() {
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("say \"hi\""), "'say \"hi\"'");
        assert_eq!(repr_str("both ' and \""), "'both \\' and \"'");
        assert_eq!(repr_str("a\nb\u{1}é"), "'a\\nb\\x01é'");
    }
}
