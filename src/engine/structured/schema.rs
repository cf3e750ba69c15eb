//! Checks a JSON schema before llama.cpp's converter (`json_schema_to_grammar`,
//! `common/json-schema.cpp` and `common/json-schema-to-grammar.cpp` of the
//! llama.cpp that llama-cpp-sys-2 builds) turns it into a grammar. That
//! converter never refuses a keyword: it ignores what it cannot enforce and
//! falls back to "any string" for patterns it cannot translate, so a request
//! would get output that does not validate. This walk follows the converter's
//! own reading of the schema (which keyword wins when several are present) and
//! names the first keyword it would not enforce, with its JSON-pointer path.
//!
//! What the converter enforces: `$ref` to `#/...` in the same document (its
//! siblings are ignored); `anyOf`/`oneOf` (siblings ignored; `oneOf` is read as
//! `anyOf`); `type` as a string or a list; `const` and `enum`; objects with
//! `properties`, `required` and `additionalProperties` (no extra keys when
//! `properties` is given and `additionalProperties` is not); `allOf` over
//! objects (all their properties become required) or over enums; arrays with
//! `items` (or `prefixItems`), `minItems`, `maxItems`; strings with one of
//! `pattern` (anchored, a regex subset), `format` (date, time, date-time, uuid)
//! or `minLength`/`maxLength`; integers with `minimum`/`maximum` or their
//! exclusive forms; numbers, booleans and null without bounds.

use serde_json::{Map, Value};
use std::collections::HashSet;

mod all_of;
mod keywords;
mod pattern;

use keywords::{
    FORMATS, NUMBER_KEYWORDS, OBJECT_KEYWORDS, at, check_constant, check_integer, check_string,
    child, count, format_error, is_annotation, is_known, non_empty_array, only_next_to,
    unsupported,
};

/// Deeper than this (through `$ref` chains too) is refused rather than
/// risking the converter's (and this walk's) recursion.
const MAX_DEPTH: usize = 64;

/// Checks that llama.cpp's converter enforces every constraint of `schema`;
/// the error names the first keyword it would not, and where.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    Checker {
        root: schema,
        checked_refs: HashSet::new(),
    }
    .check(schema, "", 0)
}

struct Checker<'a> {
    root: &'a Value,
    /// `$ref` targets already walked (or being walked: cycles are fine, the
    /// converter makes recursive rules).
    checked_refs: HashSet<String>,
}

/// The converter's reading of an untyped, structural schema.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Object,
    AllOf,
    Array,
    String,
    Any,
}

fn has_properties(s: &Map<String, Value>) -> bool {
    s.contains_key("properties")
        || s.get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(true))
}

fn untyped_shape(s: &Map<String, Value>) -> Shape {
    if has_properties(s) {
        Shape::Object
    } else if s.contains_key("allOf") {
        Shape::AllOf
    } else if s.contains_key("items") || s.contains_key("prefixItems") {
        Shape::Array
    } else if ["pattern", "minLength", "maxLength"]
        .iter()
        .any(|k| s.contains_key(*k))
        || s.get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| FORMATS.contains(&f) || is_uuid_version(f))
    {
        Shape::String
    } else {
        Shape::Any
    }
}

/// `uuid1`..`uuid5`: the converter reads them as `uuid` without checking the
/// version digit, so they are refused like other formats.
fn is_uuid_version(f: &str) -> bool {
    f.len() == 5 && f.starts_with("uuid") && (b'1'..=b'5').contains(&f.as_bytes()[4])
}

impl<'a> Checker<'a> {
    fn check(&mut self, schema: &'a Value, path: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the schema at {} nests too deeply", at(path)));
        }
        let Some(s) = schema.as_object() else {
            return Err(format!("the schema at {} must be an object", at(path)));
        };
        if let Some(key) = s.keys().find(|k| !is_known(k)) {
            return Err(unsupported(key, path));
        }
        if let Some(r) = s.get("$ref") {
            return self.check_ref(s, r, path, depth);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = s.get(key) {
                only_next_to(s, key, &[], path)?;
                let alts = non_empty_array(alts, key, path)?;
                for (i, alt) in alts.iter().enumerate() {
                    self.check(alt, &child(&child(path, key), &i.to_string()), depth + 1)?;
                }
                return Ok(());
            }
        }
        if s.contains_key("const") || s.contains_key("enum") {
            return check_constant(s, path);
        }
        match s.get("type") {
            None => self.check_shape(s, untyped_shape(s), path, depth),
            Some(Value::String(ty)) => self.check_typed(s, ty, path, depth),
            Some(Value::Array(types)) if !types.is_empty() => {
                for ty in types {
                    let Some(ty) = ty.as_str() else {
                        return Err(format!("`type` at {} must list strings", at(path)));
                    };
                    self.check_typed(s, ty, path, depth)?;
                }
                Ok(())
            }
            Some(_) => Err(format!(
                "`type` at {} must be a string or a non-empty list",
                at(path)
            )),
        }
    }

    fn check_ref(
        &mut self,
        s: &'a Map<String, Value>,
        r: &'a Value,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        only_next_to(s, "$ref", &[], path)?;
        let Some(r) = r.as_str() else {
            return Err(format!("`$ref` at {} must be a string", at(path)));
        };
        let target = resolve(self.root, r, path)?;
        if self.checked_refs.insert(r.to_string()) {
            // The target's own path, where its keywords are.
            self.check(target, r.trim_start_matches('#'), depth + 1)?;
        }
        Ok(())
    }

    fn check_typed(
        &mut self,
        s: &'a Map<String, Value>,
        ty: &str,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let shape = match ty {
            "object" if !has_properties(s) && s.contains_key("allOf") => Shape::AllOf,
            "object" => Shape::Object,
            "array" => Shape::Array,
            "string" => Shape::String,
            "integer" => {
                only_general(s, path)?;
                return check_integer(s, path);
            }
            "number" => {
                only_general(s, path)?;
                if let Some(key) = s.keys().find(|k| NUMBER_KEYWORDS.contains(&k.as_str())) {
                    return Err(format!(
                        "keyword `{key}` at {} is not supported for numbers (it is for integers)",
                        at(path)
                    ));
                }
                return Ok(());
            }
            "boolean" | "null" => return only_general(s, path),
            _ => return Err(format!("type `{ty}` at {} is not supported", at(path))),
        };
        self.check_shape(s, shape, path, depth)
    }

    fn check_shape(
        &mut self,
        s: &'a Map<String, Value>,
        shape: Shape,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        match shape {
            Shape::Object => {
                only_general(s, path)?;
                self.check_object(s, path, depth, None).map(drop)
            }
            Shape::AllOf => self.check_all_of(s, path, depth),
            Shape::Array => {
                only_general(s, path)?;
                self.check_array(s, path, depth)
            }
            Shape::String => {
                only_general(s, path)?;
                check_string(s, path)
            }
            Shape::Any => {
                for (key, value) in s {
                    if is_annotation(key) || (key == "additionalProperties" && value == true) {
                        continue;
                    }
                    if key == "format" {
                        return Err(format_error(value, path));
                    }
                    return Err(format!(
                        "keyword `{key}` at {} is not supported without a `type`",
                        at(path)
                    ));
                }
                Ok(())
            }
        }
    }

    /// Checks an object schema; `extra_names` (for `allOf`) are properties
    /// that other parts supply. Returns its property names.
    fn check_object(
        &mut self,
        s: &'a Map<String, Value>,
        path: &str,
        depth: usize,
        extra_names: Option<&HashSet<String>>,
    ) -> Result<Vec<String>, String> {
        for key in s.keys() {
            let own = ["properties", "required", "additionalProperties"].contains(&key.as_str());
            if OBJECT_KEYWORDS.contains(&key.as_str()) && !own {
                return Err(unsupported(key, path));
            }
        }
        let mut names = Vec::new();
        if let Some(props) = s.get("properties") {
            let Some(props) = props.as_object() else {
                return Err(format!("`properties` at {} must be an object", at(path)));
            };
            let props_path = child(path, "properties");
            for (name, prop) in props {
                self.check(prop, &child(&props_path, name), depth + 1)?;
                names.push(name.clone());
            }
        }
        if let Some(required) = s.get("required") {
            let Some(required) = required.as_array() else {
                return Err(format!("`required` at {} must be a list", at(path)));
            };
            for name in required {
                let Some(name) = name.as_str() else {
                    return Err(format!("`required` at {} must list strings", at(path)));
                };
                let known = names.iter().any(|n| n == name)
                    || extra_names.is_some_and(|extra| extra.contains(name));
                if !known {
                    return Err(format!(
                        "required property `{name}` at {} is not supported unless it is in `properties`",
                        at(path)
                    ));
                }
            }
        }
        match s.get("additionalProperties") {
            None | Some(Value::Bool(_)) => {}
            Some(extra @ Value::Object(_)) => {
                self.check(extra, &child(path, "additionalProperties"), depth + 1)?
            }
            Some(_) => {
                return Err(format!(
                    "`additionalProperties` at {} must be a boolean or a schema",
                    at(path)
                ));
            }
        }
        Ok(names)
    }

    /// Follows `$ref`s (checking that each is local and resolves) to the
    /// schema they name, and that schema's path.
    fn follow_refs(
        &self,
        mut schema: &'a Value,
        path: &str,
    ) -> Result<(&'a Value, String), String> {
        let mut path = path.to_string();
        for _ in 0..MAX_DEPTH {
            let Some(r) = schema.get("$ref") else {
                return Ok((schema, path));
            };
            let Some(r) = r.as_str() else {
                return Err(format!("`$ref` at {} must be a string", at(&path)));
            };
            schema = resolve(self.root, r, &path)?;
            path = r.trim_start_matches('#').to_string();
        }
        Err(format!("the `$ref`s at {} loop", at(&path)))
    }

    fn check_array(
        &mut self,
        s: &'a Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        for key in [
            "uniqueItems",
            "contains",
            "minContains",
            "maxContains",
            "unevaluatedItems",
        ] {
            match s.get(key) {
                Some(Value::Bool(false)) if key == "uniqueItems" => {}
                Some(_) => return Err(unsupported(key, path)),
                None => {}
            }
        }
        let min = count(s, "minItems", path)?;
        let max = count(s, "maxItems", path)?;
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return Err(format!("`minItems` at {} is above `maxItems`", at(path)));
        }
        if s.contains_key("items") && s.contains_key("prefixItems") {
            return Err(format!(
                "keyword `prefixItems` at {} is not supported next to `items`",
                at(path)
            ));
        }
        let key = if s.contains_key("prefixItems") {
            "prefixItems"
        } else {
            "items"
        };
        match s.get(key) {
            None => Ok(()),
            Some(Value::Array(tuple)) => {
                // A fixed list: the grammar admits exactly these items.
                let n = tuple.len() as u64;
                if min.is_some_and(|m| m > n) || max.is_some_and(|m| m < n) {
                    return Err(format!(
                        "keyword `minItems`/`maxItems` at {} is not supported with a fixed list of `{key}`",
                        at(path)
                    ));
                }
                for (i, item) in tuple.iter().enumerate() {
                    self.check(item, &child(&child(path, key), &i.to_string()), depth + 1)?;
                }
                Ok(())
            }
            Some(_) if key == "prefixItems" => {
                Err(format!("`prefixItems` at {} must be a list", at(path)))
            }
            Some(item) => self.check(item, &child(path, "items"), depth + 1),
        }
    }
}

/// Resolves `#/a/b` as the converter does: from the document's root, each
/// part an object key or an array index, taken as written.
fn resolve<'v>(root: &'v Value, r: &str, path: &str) -> Result<&'v Value, String> {
    let Some(pointer) = r.strip_prefix("#/") else {
        return Err(format!(
            "`$ref` `{r}` at {} is not supported (only `#/...` references into the same schema are)",
            at(path)
        ));
    };
    let mut target = root;
    for part in pointer.split('/') {
        target = match target {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("`$ref` `{r}` at {} does not resolve", at(path)))?;
    }
    Ok(target)
}

/// Refuses the general keywords the converter ignores on a typed schema
/// (`allOf` is read only where [`Shape::AllOf`] says).
fn only_general(s: &Map<String, Value>, path: &str) -> Result<(), String> {
    for key in [
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "$dynamicRef",
        "$recursiveRef",
    ] {
        if s.contains_key(key) {
            return Err(unsupported(key, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
