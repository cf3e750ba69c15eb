//! The keywords of JSON Schema as this check sorts them (annotations, and
//! constraints by the type they apply to), and the checks of leaf schemas:
//! constants, strings and integers, whose keywords the converter reads in a
//! fixed order of precedence.

use serde_json::{Map, Value};

use super::pattern;

/// Keywords that describe a schema without constraining a value.
pub(super) const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "example",
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "$vocabulary",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "discriminator",
    "nullable",
    // Containers of definitions: walked only where a `$ref` points into them,
    // as the converter does.
    "$defs",
    "definitions",
];

/// Keywords that constrain numbers only.
pub(super) const NUMBER_KEYWORDS: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];
/// Keywords that constrain strings only.
pub(super) const STRING_KEYWORDS: &[&str] = &["minLength", "maxLength", "pattern", "format"];
/// Keywords that constrain arrays only.
pub(super) const ARRAY_KEYWORDS: &[&str] = &[
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
];
/// Keywords that constrain objects only.
pub(super) const OBJECT_KEYWORDS: &[&str] = &[
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "unevaluatedProperties",
];
/// Keywords that apply to any value.
pub(super) const GENERAL_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
    "$dynamicAnchor",
    "$recursiveAnchor",
];

/// String formats the converter has a grammar for.
pub(super) const FORMATS: &[&str] = &["date", "time", "date-time", "uuid"];

/// A repetition bound above this would make llama.cpp's grammar parser
/// expand that many rules (memory and time), so it is refused.
pub(super) const MAX_COUNT: u64 = 100_000;

/// Integer bounds beyond this lose precision in the converter's arithmetic.
pub(super) const MAX_BOUND: f64 = 9_007_199_254_740_991.0;

/// The JSON pointer of a path, for messages.
pub(super) fn at(path: &str) -> String {
    if path.is_empty() {
        "the top level".into()
    } else {
        path.into()
    }
}

pub(super) fn child(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

pub(super) fn is_annotation(key: &str) -> bool {
    ANNOTATIONS.contains(&key) || key.starts_with("x-")
}

pub(super) fn is_known(key: &str) -> bool {
    is_annotation(key)
        || [
            NUMBER_KEYWORDS,
            STRING_KEYWORDS,
            ARRAY_KEYWORDS,
            OBJECT_KEYWORDS,
            GENERAL_KEYWORDS,
        ]
        .iter()
        .any(|list| list.contains(&key))
}

pub(super) fn unsupported(key: &str, path: &str) -> String {
    format!("keyword `{key}` at {} is not supported", at(path))
}

/// Whether a JSON value is of a JSON-schema type.
pub(super) fn value_is(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// Refuses any constraint beside `key` (which makes the converter ignore the
/// rest), allowing annotations and `also`.
pub(super) fn only_next_to(
    s: &Map<String, Value>,
    key: &str,
    also: &[&str],
    path: &str,
) -> Result<(), String> {
    match s
        .keys()
        .find(|k| *k != key && !is_annotation(k) && !also.contains(&k.as_str()))
    {
        Some(other) => Err(format!(
            "keyword `{other}` at {} is not supported next to `{key}`",
            at(path)
        )),
        None => Ok(()),
    }
}

pub(super) fn non_empty_array<'v>(
    v: &'v Value,
    key: &str,
    path: &str,
) -> Result<&'v Vec<Value>, String> {
    match v.as_array() {
        Some(items) if !items.is_empty() => Ok(items),
        _ => Err(format!("`{key}` at {} must be a non-empty list", at(path))),
    }
}

/// `const` or `enum`: the grammar admits exactly the values, so any other
/// constraint but `type` would go unchecked; the values must have the type.
pub(super) fn check_constant(s: &Map<String, Value>, path: &str) -> Result<(), String> {
    let (key, values) = match (s.get("const"), s.get("enum")) {
        (Some(c), _) => ("const", std::slice::from_ref(c)),
        (None, Some(e)) => ("enum", non_empty_array(e, "enum", path)?.as_slice()),
        (None, None) => return Ok(()),
    };
    only_next_to(s, key, &["type"], path)?;
    let types: Vec<&str> = match s.get("type") {
        None => return Ok(()),
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        Some(_) => vec![],
    };
    if let Some(v) = values
        .iter()
        .find(|v| !types.iter().any(|t| value_is(v, t)))
    {
        return Err(format!(
            "`{key}` at {} holds {v}, which is not of its `type`",
            at(path)
        ));
    }
    Ok(())
}

pub(super) fn format_error(format: &Value, path: &str) -> String {
    match format.as_str() {
        Some(f) => format!(
            "format `{f}` at {} is not supported (date, time, date-time, uuid are)",
            at(path)
        ),
        None => format!("`format` at {} must be a string", at(path)),
    }
}

pub(super) fn check_string(s: &Map<String, Value>, path: &str) -> Result<(), String> {
    let min = count(s, "minLength", path)?;
    let max = count(s, "maxLength", path)?;
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(format!("`minLength` at {} is above `maxLength`", at(path)));
    }
    if let Some(format) = s.get("format")
        && !format.as_str().is_some_and(|f| FORMATS.contains(&f))
    {
        return Err(format_error(format, path));
    }
    // The converter takes the first of pattern, format, lengths and ignores the rest.
    let lead = ["pattern", "format"]
        .into_iter()
        .find(|k| s.contains_key(*k));
    if let Some(lead) = lead {
        let ignored = ["format", "minLength", "maxLength"]
            .into_iter()
            .find(|k| *k != lead && s.contains_key(*k));
        if let Some(ignored) = ignored {
            return Err(format!(
                "keyword `{ignored}` at {} is not supported next to `{lead}`",
                at(path)
            ));
        }
    }
    match s.get("pattern") {
        None => Ok(()),
        Some(Value::String(p)) => pattern::check(p)
            .map_err(|why| format!("pattern `{p}` at {} is not supported ({why})", at(path))),
        Some(_) => Err(format!("`pattern` at {} must be a string", at(path))),
    }
}

pub(super) fn check_integer(s: &Map<String, Value>, path: &str) -> Result<(), String> {
    if let Some(m) = s.get("multipleOf") {
        // Every integer is a multiple of 1; nothing else is enforced.
        if m.as_f64() != Some(1.0) {
            return Err(unsupported("multipleOf", path));
        }
    }
    let bound = |key: &str| -> Result<Option<f64>, String> {
        match s.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.abs() <= MAX_BOUND => Ok(Some(f)),
                Some(_) => Err(format!("`{key}` at {} is out of range", at(path))),
                None => Err(format!("`{key}` at {} must be a number", at(path))),
            },
        }
    };
    let mut low = None;
    let mut high = None;
    for (inclusive, exclusive, is_low) in [
        ("minimum", "exclusiveMinimum", true),
        ("maximum", "exclusiveMaximum", false),
    ] {
        let (a, b) = (bound(inclusive)?, bound(exclusive)?);
        if a.is_some() && b.is_some() {
            return Err(format!(
                "keyword `{exclusive}` at {} is not supported next to `{inclusive}`",
                at(path)
            ));
        }
        // Rounded inwards, as the converter does.
        let value = match (a, b, is_low) {
            (Some(a), _, true) => Some(a.ceil()),
            (_, Some(b), true) => Some(b.floor() + 1.0),
            (Some(a), _, false) => Some(a.floor()),
            (_, Some(b), false) => Some(b.ceil() - 1.0),
            _ => None,
        };
        if is_low {
            low = value;
        } else {
            high = value;
        }
    }
    if let (Some(low), Some(high)) = (low, high)
        && low > high
    {
        return Err(format!("no integer at {} is within its bounds", at(path)));
    }
    Ok(())
}

/// A non-negative count (`minItems`, `maxLength`, ...), bounded.
pub(super) fn count(s: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>, String> {
    match s.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_COUNT => Ok(Some(n)),
            Some(_) => Err(format!(
                "`{key}` at {} is above {MAX_COUNT}, which is not supported",
                at(path)
            )),
            None => Err(format!(
                "`{key}` at {} must be a non-negative integer",
                at(path)
            )),
        },
    }
}
