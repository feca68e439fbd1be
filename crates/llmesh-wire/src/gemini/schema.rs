//! JSON Schema → the OpenAPI-subset schema Gemini accepts.

use serde_json::Value;

/// Keywords Gemini rejects in `responseSchema` and function parameters.
const REJECTED: &[&str] = &[
    "additionalProperties",
    "$schema",
    "$id",
    "$comment",
    "strict",
];

/// Remove rejected keywords, recursing only where sub-schemas live so that a
/// property that happens to be *named* like a keyword survives.
pub(crate) fn clean(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    for key in REJECTED {
        map.remove(*key);
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(props) = value {
                    props.values_mut().for_each(clean);
                }
            }
            "items" | "not" => clean(value),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(list) = value {
                    list.iter_mut().for_each(clean);
                }
            }
            _ => {}
        }
    }
}

/// Gemini rejects an OBJECT schema with no properties, which is how many
/// clients describe a function without arguments; such functions must omit
/// `parameters` instead.
pub(crate) fn is_empty_object(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
        && schema
            .get("properties")
            .and_then(Value::as_object)
            .is_none_or(|p| p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_nested_keywords_but_not_property_names() {
        let mut s = json!({
            "$schema": "x", "type": "object", "additionalProperties": false, "strict": true,
            "properties": {
                "strict": {"type": "boolean"},
                "list": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                    "properties": {"a": {"type": "string"}}}},
                "either": {"anyOf": [{"type": "string", "$comment": "c"}, {"type": "null"}]}
            },
            "required": ["strict"]
        });
        clean(&mut s);
        assert_eq!(
            s,
            json!({"type": "object", "properties": {
                "strict": {"type": "boolean"},
                "list": {"type": "array", "items": {"type": "object",
                    "properties": {"a": {"type": "string"}}}},
                "either": {"anyOf": [{"type": "string"}, {"type": "null"}]}
            }, "required": ["strict"]})
        );
    }

    #[test]
    fn empty_objects() {
        assert!(is_empty_object(
            &json!({"type": "object", "properties": {}})
        ));
        assert!(is_empty_object(&json!({"type": "object"})));
        assert!(!is_empty_object(
            &json!({"type": "object", "properties": {"a": {}}})
        ));
    }
}
