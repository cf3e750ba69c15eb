use super::check_schema;
use serde_json::{Value, json};

fn ok(schema: Value) {
    if let Err(e) = check_schema(&schema) {
        panic!("{schema} was refused: {e}");
    }
}

fn refused(schema: Value, expected: &str) {
    match check_schema(&schema) {
        Ok(()) => panic!("{schema} was accepted"),
        Err(e) => assert_eq!(e, expected, "for {schema}"),
    }
}

#[test]
fn accepts_what_the_converter_enforces() {
    ok(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Person",
        "description": "A person",
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 40, "examples": ["Ada"]},
            "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 150.5},
            "height": {"type": "number", "description": "metres"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 5, "uniqueItems": false},
            "born": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "time"},
            "seen": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3,}(?:x|y)?$"},
            "kind": {"enum": ["a", "b", null]},
            "fixed": {"const": 3, "type": "integer"},
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null},
            "either": {"type": ["string", "null"], "maxLength": 3},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]},
            "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
            "any": {"description": "anything at all"},
            "loose": {"type": "object"},
            "x": {"type": "integer", "format": "int64", "multipleOf": 1},
        },
        "required": ["name", "age"],
        "additionalProperties": false,
        "x-vendor": true,
    }));
}

#[test]
fn accepts_refs_defs_and_recursion() {
    // Pydantic's shape: the model in $defs, referenced from the root.
    ok(json!({
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 3}
                },
                "required": ["value"]
            }
        },
        "$ref": "#/$defs/Node"
    }));
    ok(json!({
        "definitions": {"Color": {"enum": ["red", "green"], "type": "string", "title": "Color"}},
        "type": "object",
        "properties": {"c": {"$ref": "#/definitions/Color", "description": "a colour"}},
    }));
}

#[test]
fn accepts_all_of_over_objects_and_enums() {
    ok(json!({
        "$defs": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
        "allOf": [
            {"$ref": "#/$defs/Base"},
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name", "id"]}
        ]
    }));
    ok(json!({"allOf": [{"enum": [1, 2, 3]}, {"enum": [2, 3, 4]}]}));
    // Pydantic (older) wraps a $ref with siblings in a single allOf.
    ok(json!({
        "$defs": {"M": {"type": "object", "properties": {"a": {"type": "string"}}}},
        "type": "object",
        "properties": {"m": {"allOf": [{"$ref": "#/$defs/M"}], "description": "an M"}}
    }));
}

#[test]
fn refuses_keywords_it_does_not_enforce() {
    refused(
        json!({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true}}}),
        "keyword `uniqueItems` at /properties/tags is not supported",
    );
    for key in ["contains", "minContains", "maxContains", "unevaluatedItems"] {
        let mut s = json!({"type": "array"});
        s[key] = json!({"type": "integer"});
        refused(
            s,
            &format!("keyword `{key}` at the top level is not supported"),
        );
    }
    for key in [
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "unevaluatedProperties",
    ] {
        let mut s = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        s[key] = json!(1);
        refused(
            s,
            &format!("keyword `{key}` at the top level is not supported"),
        );
    }
    for key in ["not", "if", "then", "else"] {
        let mut s = json!({"type": "string"});
        s[key] = json!({"maxLength": 2});
        refused(
            s,
            &format!("keyword `{key}` at the top level is not supported"),
        );
    }
    refused(
        json!({"type": "object", "properties": {"a": {"type": "strng"}}}),
        "type `strng` at /properties/a is not supported",
    );
    refused(
        json!({"type": "string", "maxLenght": 3}),
        "keyword `maxLenght` at the top level is not supported",
    );
}

#[test]
fn refuses_number_bounds_and_multiples() {
    for key in [
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ] {
        let mut s = json!({"type": "number"});
        s[key] = json!(2);
        refused(
            s,
            &format!(
                "keyword `{key}` at the top level is not supported for numbers (it is for integers)"
            ),
        );
    }
    refused(
        json!({"type": "integer", "multipleOf": 5}),
        "keyword `multipleOf` at the top level is not supported",
    );
    refused(
        json!({"type": "integer", "minimum": 1, "exclusiveMinimum": 3}),
        "keyword `exclusiveMinimum` at the top level is not supported next to `minimum`",
    );
    refused(
        json!({"type": "integer", "exclusiveMinimum": true}),
        "`exclusiveMinimum` at the top level must be a number",
    );
    refused(
        json!({"type": "integer", "minimum": 5, "maximum": 4.5}),
        "no integer at the top level is within its bounds",
    );
    refused(
        json!({"type": "integer", "maximum": 1e300}),
        "`maximum` at the top level is out of range",
    );
}

#[test]
fn refuses_formats_other_than_the_four() {
    refused(
        json!({"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}}),
        "format `email` at /properties/mail is not supported (date, time, date-time, uuid are)",
    );
    refused(
        json!({"format": "uri"}),
        "format `uri` at the top level is not supported (date, time, date-time, uuid are)",
    );
    refused(
        json!({"type": "string", "format": "uuid4"}),
        "format `uuid4` at the top level is not supported (date, time, date-time, uuid are)",
    );
    refused(
        json!({"type": "string", "format": "date", "maxLength": 4}),
        "keyword `maxLength` at the top level is not supported next to `format`",
    );
    refused(
        json!({"type": "string", "pattern": "^[a-z]+$", "minLength": 2}),
        "keyword `minLength` at the top level is not supported next to `pattern`",
    );
}

#[test]
fn refuses_patterns_the_converter_cannot_translate() {
    let cases = [
        ("[a-z]+", "it must be anchored with `^` and `$`"),
        ("^\\d{3}$", "unsupported escape: \\d"),
        ("^[\\w]+$", "unsupported escape in character class: \\w"),
        ("^(?i)abc$", "unsupported group syntax"),
        ("^(?=a)b$", "unsupported group syntax"),
        ("^a^b$", "anchor inside the pattern"),
        ("^(ab$", "unbalanced parentheses"),
        ("^ab)$", "unbalanced parentheses"),
        ("^*a$", "nothing to repeat"),
        ("^a|*b$", "nothing to repeat"),
        ("^a**$", "a repeated repetition"),
        ("^a{x}$", "invalid number in curly brackets"),
        ("^a{1,2,3}$", "wrong number of values in curly brackets"),
        ("^a{2$", "unterminated curly brackets"),
        ("^[abc$", "unterminated character class"),
        ("^a\\$", "trailing backslash"),
        ("^]$", "unsupported character: ]"),
        (
            "^.+@.+$",
            "`.` can produce characters a JSON string must escape",
        ),
        (
            "^[^a]$",
            "the class can match U+0000, which a JSON string must escape",
        ),
        (
            "^[ -~]+$",
            "the class can match `\"`, which a JSON string must escape",
        ),
        ("^a\"b$", "it matches `\"`, which a JSON string must escape"),
        (
            "^a\\\\b$",
            "it matches `\\`, which a JSON string must escape",
        ),
        (
            "^a\\nb$",
            "it matches U+000A, which a JSON string must escape",
        ),
    ];
    for (pattern, why) in cases {
        refused(
            json!({"type": "string", "pattern": pattern}),
            &format!("pattern `{pattern}` at the top level is not supported ({why})"),
        );
    }
}

#[test]
fn accepts_patterns_the_converter_translates() {
    for pattern in [
        "^$",
        "^abc$",
        "^[a-zA-Z0-9_]+$",
        "^[^\"\\\\\\x00-\\x1F]*$",
        "^(ab|cd)*e?$",
        "^a{2}b{1,}c{,3}$",
        "^\\(\\d\\)$".replace("\\d", "[0-9]").as_str(),
        "^\\x41\\u00e9\\.$",
        "^a*?b+?$",
        "^[-a-c-]$",
        "^é+ü$",
    ] {
        ok(json!({"type": "string", "pattern": pattern}));
    }
}

#[test]
fn refuses_ignored_siblings() {
    refused(
        json!({"$ref": "#/$defs/A", "maxLength": 3, "$defs": {"A": {"type": "string"}}}),
        "keyword `maxLength` at the top level is not supported next to `$ref`",
    );
    refused(
        json!({"type": "object", "anyOf": [{"type": "string"}]}),
        "keyword `type` at the top level is not supported next to `anyOf`",
    );
    refused(
        json!({"oneOf": [{"type": "string"}], "anyOf": [{"type": "null"}]}),
        "keyword `anyOf` at the top level is not supported next to `oneOf`",
    );
    refused(
        json!({"enum": ["a", "bb"], "maxLength": 1}),
        "keyword `maxLength` at the top level is not supported next to `enum`",
    );
    refused(
        json!({"const": "a", "enum": ["b"]}),
        "keyword `enum` at the top level is not supported next to `const`",
    );
    refused(
        json!({"type": "string", "enum": ["a", 1]}),
        "`enum` at the top level holds 1, which is not of its `type`",
    );
    refused(
        json!({"type": "object", "properties": {"a": {}}, "allOf": [{"required": ["a"]}]}),
        "keyword `allOf` at the top level is not supported",
    );
    refused(
        json!({"type": "string", "allOf": [{"maxLength": 3}]}),
        "keyword `allOf` at the top level is not supported",
    );
    refused(
        json!({"required": ["a"]}),
        "keyword `required` at the top level is not supported without a `type`",
    );
    refused(
        json!({"minimum": 3}),
        "keyword `minimum` at the top level is not supported without a `type`",
    );
}

#[test]
fn refuses_all_of_it_would_get_wrong() {
    refused(
        json!({"allOf": [{"type": "string"}, {"maxLength": 3}]}),
        "`allOf` at the top level is only supported over objects (or over enums), not the schema at /allOf/0",
    );
    refused(
        json!({"allOf": [{"properties": {"a": {}}}, {"anyOf": [{"properties": {"b": {}}}]}]}),
        "`allOf` at the top level is only supported over objects (or over enums), not the schema at /allOf/1",
    );
    refused(
        json!({"allOf": [{"enum": [1]}, {"enum": [2]}]}),
        "the enums of `allOf` at the top level share no value",
    );
    refused(
        json!({"allOf": [{"properties": {"a": {}}}, {"properties": {"a": {}}}]}),
        "property `a` at /allOf/1 is defined twice in `allOf` at the top level",
    );
    refused(
        json!({"allOf": [{"properties": {"a": {}}, "additionalProperties": false}, {"properties": {"b": {}}}]}),
        "keyword `additionalProperties` at /allOf/0 is not supported inside `allOf`",
    );
    refused(
        json!({"allOf": [{"properties": {"a": {}}}], "required": ["a"]}),
        "keyword `required` at the top level is not supported next to `allOf`",
    );
}

#[test]
fn refuses_structural_mistakes() {
    refused(json!(true), "the schema at the top level must be an object");
    refused(
        json!("string"),
        "the schema at the top level must be an object",
    );
    refused(
        json!({"type": "array", "items": false}),
        "the schema at /items must be an object",
    );
    refused(
        json!({"type": "object", "properties": {"a/b": true}}),
        "the schema at /properties/a~1b must be an object",
    );
    refused(
        json!({"$ref": "https://example.com/s.json"}),
        "`$ref` `https://example.com/s.json` at the top level is not supported (only `#/...` references into the same schema are)",
    );
    refused(
        json!({"$ref": "other.json#/a"}),
        "`$ref` `other.json#/a` at the top level is not supported (only `#/...` references into the same schema are)",
    );
    refused(
        json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}),
        "`$ref` `#/$defs/Missing` at /properties/a does not resolve",
    );
    refused(
        json!({"$defs": {"A": {"type": "array", "uniqueItems": true}}, "$ref": "#/$defs/A"}),
        "keyword `uniqueItems` at /$defs/A is not supported",
    );
    refused(
        json!({"type": "object", "properties": {"a": {}}, "required": ["b"]}),
        "required property `b` at the top level is not supported unless it is in `properties`",
    );
    refused(
        json!({"type": "array", "items": {}, "prefixItems": [{}]}),
        "keyword `prefixItems` at the top level is not supported next to `items`",
    );
    refused(
        json!({"type": "array", "prefixItems": [{}], "minItems": 2}),
        "keyword `minItems`/`maxItems` at the top level is not supported with a fixed list of `prefixItems`",
    );
    refused(
        json!({"type": "string", "maxLength": 1_000_000}),
        "`maxLength` at the top level is above 100000, which is not supported",
    );
    refused(
        json!({"type": "string", "minLength": -1}),
        "`minLength` at the top level must be a non-negative integer",
    );
    refused(
        json!({"type": "array", "minItems": 3, "maxItems": 2}),
        "`minItems` at the top level is above `maxItems`",
    );
    refused(
        json!({"enum": []}),
        "`enum` at the top level must be a non-empty list",
    );
    refused(
        json!({"anyOf": []}),
        "`anyOf` at the top level must be a non-empty list",
    );
}

#[test]
fn deep_and_cyclic_refs_end() {
    ok(
        json!({"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}}, "$ref": "#/$defs/A"}),
    );
    let mut deep = json!({"type": "string"});
    for _ in 0..100 {
        deep = json!({"type": "array", "items": deep});
    }
    refused(
        deep,
        "the schema at /items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items nests too deeply",
    );
}

mod props {
    use super::super::{check_schema, pattern};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_pattern_is_answered(p in "\\PC{0,40}") {
            let _ = pattern::check(&p);
            let _ = pattern::check(&format!("^{p}$"));
        }

        #[test]
        fn any_json_is_answered(text in "[\\[\\]{}\",:a-z0-9 $#/]{0,80}") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                let _ = check_schema(&v);
            }
        }
    }
}
