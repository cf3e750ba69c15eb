//! `allOf` as llama.cpp's converter reads it: over enums (their common
//! values) or over objects (every property of every part required, each
//! defined once); anything else next to it, or inside it, is refused.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::keywords::{at, check_constant, child, is_annotation, non_empty_array};
use super::{Checker, Shape, has_properties, untyped_shape};

impl<'a> Checker<'a> {
    /// Checks an `allOf` schema at `path`.
    pub(super) fn check_all_of(
        &mut self,
        s: &'a Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        for (key, value) in s {
            let fine = is_annotation(key)
                || key == "allOf"
                || (key == "type" && value == "object")
                || (key == "additionalProperties" && value == true);
            if !fine {
                return Err(format!(
                    "keyword `{key}` at {} is not supported next to `allOf`",
                    at(path)
                ));
            }
        }
        let parts = non_empty_array(&s["allOf"], "allOf", path)?;
        // Each part as the converter sees it: `$ref` chains followed.
        let mut resolved = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let part_path = child(&child(path, "allOf"), &i.to_string());
            let (target, target_path) = self.follow_refs(part, &part_path)?;
            let Some(map) = target.as_object() else {
                return Err(format!("the schema at {target_path} must be an object"));
            };
            resolved.push((map, target_path));
        }
        let is_enum = |m: &Map<String, Value>| {
            !m.contains_key("anyOf") && !m.contains_key("oneOf") && m.contains_key("enum")
        };
        let is_object = |m: &Map<String, Value>| {
            if ["anyOf", "oneOf", "const", "enum"]
                .iter()
                .any(|k| m.contains_key(*k))
            {
                return false;
            }
            match m.get("type") {
                None => untyped_shape(m) == Shape::Object,
                Some(t) => t == "object" && (has_properties(m) || !m.contains_key("allOf")),
            }
        };
        if resolved.iter().all(|(m, _)| is_enum(m)) {
            let mut common: Option<Vec<&Value>> = None;
            for (m, p) in &resolved {
                check_constant(m, p)?;
                let values: Vec<&Value> = m["enum"].as_array().into_iter().flatten().collect();
                common = Some(match common {
                    None => values,
                    Some(c) => c.into_iter().filter(|v| values.contains(v)).collect(),
                });
            }
            if common.is_some_and(|c| c.is_empty()) {
                return Err(format!(
                    "the enums of `allOf` at {} share no value",
                    at(path)
                ));
            }
            return Ok(());
        }
        if let Some((_, p)) = resolved.iter().find(|(m, _)| !is_object(m)) {
            return Err(format!(
                "`allOf` at {} is only supported over objects (or over enums), not the schema at {p}",
                at(path)
            ));
        }
        let all_names: HashSet<String> = resolved
            .iter()
            .filter_map(|(m, _)| m.get("properties").and_then(Value::as_object))
            .flat_map(|props| props.keys().cloned())
            .collect();
        let mut seen = HashSet::new();
        for (m, p) in &resolved {
            if resolved.len() > 1 && m.get("additionalProperties").is_some_and(|a| a != true) {
                return Err(format!(
                    "keyword `additionalProperties` at {p} is not supported inside `allOf`"
                ));
            }
            for name in self.check_object(m, p, depth + 1, Some(&all_names))? {
                if !seen.insert(name.clone()) {
                    return Err(format!(
                        "property `{name}` at {p} is defined twice in `allOf` at {}",
                        at(path)
                    ));
                }
            }
        }
        Ok(())
    }
}
