//! What a real cluster makes of a document: kubectl's YAML reading, the API
//! server's checks of a CustomResourceDefinition, and its strict decoding of
//! an llmesh object against the CRD schema.
//!
//! - [`read_as_kubectl`]: YAML 1.1, as kubectl and Helm convert YAML to JSON
//!   (through `kubectl_yaml.py`, PyYAML adjusted to go-yaml v2): `on`, `off`,
//!   `yes`, `no`, `y`, `n` are booleans, keys included.
//! - [`read_as_yaml12`]: what serde_yaml (the sidecar's file mode) reads.
//! - [`crd_problems`]: what the apiextensions API server refuses in a CRD
//!   (`required` not a list of property names, a wrongly typed field of
//!   `JSONSchemaProps`, an enum value of the wrong type, an unknown field).
//! - [`admit`] / [`admit_status`]: an llmesh object checked as `kubectl
//!   apply` (strict field validation) gets it checked: unknown fields,
//!   types, formats and bounds of the generated schema, and its CEL rules.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kube::core::cel::Validator;
use serde_json::{json, Map, Value};

/// Every plain scalar YAML 1.1 (and so kubectl) reads as a boolean or null.
pub const YAML11_WORDS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "~", "null", "Null", "NULL",
];

/// Whether a YAML 1.1 reader takes `s`, written plain, for something else
/// than the string `s`: a boolean or null word, or a number.
pub fn is_yaml11_special(s: &str) -> bool {
    YAML11_WORDS.contains(&s) || s.is_empty() || s.parse::<f64>().is_ok()
}

fn helper() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/kubectl_yaml.py")
}

/// The documents of `text` as kubectl and Helm read them (YAML 1.1), empty
/// documents left out; `Err` carries the reader's message.
pub fn read_as_kubectl(text: &str) -> Result<Vec<Value>, String> {
    let mut child = Command::new("python3")
        .arg(helper())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3 (with PyYAML, from `make deps`) is needed: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let input = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("kubectl_yaml.py printed no JSON: {e}"))
}

/// The documents of `text` as serde_yaml (YAML 1.2) reads them, empty
/// documents left out.
pub fn read_as_yaml12(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

// === CustomResourceDefinitions ===

/// The fields of apiextensions.k8s.io/v1 `JSONSchemaProps`.
const SCHEMA_FIELDS: &[&str] = &[
    "$ref",
    "$schema",
    "additionalItems",
    "additionalProperties",
    "allOf",
    "anyOf",
    "default",
    "definitions",
    "dependencies",
    "description",
    "enum",
    "example",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "externalDocs",
    "format",
    "id",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "multipleOf",
    "not",
    "nullable",
    "oneOf",
    "pattern",
    "patternProperties",
    "properties",
    "required",
    "title",
    "type",
    "uniqueItems",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
];

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

fn schema_problems(path: &str, s: &Value, out: &mut Vec<String>) {
    let Some(o) = s.as_object() else {
        out.push(format!("{path}: a schema must be an object, not {s}"));
        return;
    };
    for key in o.keys() {
        if !SCHEMA_FIELDS.contains(&key.as_str()) {
            out.push(format!("{path}: unknown field \"{key}\""));
        }
    }
    let ty = match o.get("type") {
        None => None,
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => Some(t.as_str()),
        Some(t) => {
            out.push(format!("{path}.type: unsupported value {t}"));
            None
        }
    };
    for key in ["description", "pattern", "format", "title"] {
        if let Some(v) = o.get(key).filter(|v| !v.is_string()) {
            out.push(format!("{path}.{key}: must be a string, not {v}"));
        }
    }
    let props = match o.get("properties") {
        None => None,
        Some(Value::Object(p)) => Some(p),
        Some(v) => {
            out.push(format!("{path}.properties: must be a map, not {v}"));
            None
        }
    };
    if let Some(required) = o.get("required") {
        match required.as_array() {
            None => out.push(format!("{path}.required: must be a list, not {required}")),
            Some(items) => {
                for (i, r) in items.iter().enumerate() {
                    match r.as_str() {
                        None => out.push(format!(
                            "{path}.required[{i}]: cannot unmarshal {r} into a string"
                        )),
                        Some(name) if !props.is_some_and(|p| p.contains_key(name)) => {
                            out.push(format!(
                                "{path}.required[{i}]: \"{name}\" is not one of the properties"
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    if let Some(values) = o.get("enum") {
        match (values.as_array(), ty) {
            (None, _) => out.push(format!("{path}.enum: must be a list")),
            (Some(values), Some(ty)) => {
                let nullable = o.get("nullable") == Some(&json!(true));
                for (i, v) in values.iter().enumerate() {
                    if !(type_matches(ty, v) || nullable && v.is_null()) {
                        out.push(format!("{path}.enum[{i}]: {v} is not of type {ty}"));
                    }
                }
            }
            (Some(_), None) => {}
        }
    }
    if let (Some(d), Some(ty)) = (o.get("default"), ty) {
        if !type_matches(ty, d) {
            out.push(format!("{path}.default: {d} is not of type {ty}"));
        }
    }
    if let Some(rules) = o.get("x-kubernetes-validations") {
        for (i, r) in rules.as_array().into_iter().flatten().enumerate() {
            if !r["rule"].is_string() {
                out.push(format!(
                    "{path}.x-kubernetes-validations[{i}].rule: must be a string"
                ));
            }
            if r.get("message").is_some_and(|m| !m.is_string()) {
                out.push(format!(
                    "{path}.x-kubernetes-validations[{i}].message: must be a string"
                ));
            }
        }
    }
    for (name, child) in props.into_iter().flatten() {
        schema_problems(&format!("{path}.properties[{name}]"), child, out);
    }
    match o.get("items") {
        Some(items @ Value::Object(_)) => schema_problems(&format!("{path}.items"), items, out),
        Some(Value::Array(_)) => {
            out.push(format!("{path}.items: a list of schemas is not allowed"))
        }
        Some(v) => out.push(format!("{path}.items: must be a schema, not {v}")),
        None => {}
    }
    match o.get("additionalProperties") {
        Some(a @ Value::Object(_)) => {
            schema_problems(&format!("{path}.additionalProperties"), a, out)
        }
        Some(Value::Bool(_)) | None => {}
        Some(v) => out.push(format!(
            "{path}.additionalProperties: must be a schema or a boolean, not {v}"
        )),
    }
}

/// What a kube-apiserver would refuse in `crd`, a CustomResourceDefinition
/// as JSON (empty: it would be accepted, as far as these checks go).
pub fn crd_problems(crd: &Value) -> Vec<String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let mut out = Vec::new();
    if let Err(e) = serde_json::from_value::<CustomResourceDefinition>(crd.clone()) {
        out.push(format!(
            "{name}: cannot be handled as a CustomResourceDefinition: {e}"
        ));
    }
    for (i, v) in crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let schema = &v["schema"]["openAPIV3Schema"];
        if schema.is_null() {
            out.push(format!("{name}: spec.versions[{i}] has no schema"));
            continue;
        }
        schema_problems(
            &format!("{name}: spec.versions[{i}].schema.openAPIV3Schema"),
            schema,
            &mut out,
        );
    }
    out
}

// === llmesh objects ===

/// The generated openAPIV3Schema of each llmesh kind.
fn schemas() -> &'static BTreeMap<String, Value> {
    static SCHEMAS: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| llmesh_api::crd_schemas().into_iter().collect())
}

/// The CRD's openAPIV3Schema as a JSON Schema for types, formats and
/// bounds: `nullable` becomes a `null` type and the Kubernetes extensions
/// go. Unknown fields are found by [`unknown_fields`], with the API
/// server's wording.
pub fn json_schema(s: &Value) -> Value {
    let Some(o) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in o {
        match k.as_str() {
            "nullable" => {}
            k if k.starts_with("x-kubernetes-") => {}
            "properties" => {
                let props = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, p)| (name.clone(), json_schema(p)))
                    .collect();
                out.insert(k.to_string(), Value::Object(props));
            }
            "items" | "additionalProperties" => {
                out.insert(k.to_string(), json_schema(v));
            }
            _ => {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    if o.get("nullable") == Some(&json!(true)) {
        let ty = out["type"].clone();
        out.insert("type".into(), json!([ty, "null"]));
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// Fields of `v` the schema does not know, as strict field validation
/// names them (`spec.retries.true`).
fn unknown_fields(path: &str, schema: &Value, v: &Value, out: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(fields) => {
            let props = schema["properties"].as_object();
            for (k, child) in fields {
                match (
                    props.and_then(|p| p.get(k)),
                    &schema["additionalProperties"],
                ) {
                    (Some(s), _) => unknown_fields(&join(k), s, child, out),
                    (None, a @ Value::Object(_)) => unknown_fields(&join(k), a, child, out),
                    (None, Value::Bool(true)) => {}
                    (None, _) if props.is_some() => {
                        out.push(format!("unknown field \"{}\"", join(k)))
                    }
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unknown_fields(&format!("{path}[{i}]"), &schema["items"], item, out);
            }
        }
        _ => {}
    }
}

/// Why the API server would refuse `obj` (an llmesh object as JSON) from
/// `kubectl apply`: unknown fields (strict decoding), schema violations and
/// CEL rules. `Ok` when it would store it. The status is not checked (the
/// status subresource ignores it on create and update).
pub fn admit(obj: &Value) -> Result<(), Vec<String>> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let Some(schema) = schemas().get(kind) else {
        return Err(vec![format!("no matches for kind \"{kind}\" in llmesh.io")]);
    };
    let mut errors = Vec::new();
    if obj["apiVersion"] != json!("llmesh.io/v1alpha1") {
        errors.push(format!(
            "apiVersion: {} is not llmesh.io/v1alpha1",
            obj["apiVersion"]
        ));
    }
    if !obj["metadata"]["name"].is_string() {
        errors.push("metadata.name: Required value: name is required".into());
    }
    let mut body = obj.clone();
    if let Some(o) = body.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata", "status"] {
            o.remove(k);
        }
    }
    check(schema, &body, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Why the status subresource would refuse `status` for an object of
/// `kind` (unknown fields, schema violations).
pub fn admit_status(kind: &str, status: &Value) -> Result<(), Vec<String>> {
    let Some(schema) = schemas().get(kind) else {
        return Err(vec![format!("no matches for kind \"{kind}\"")]);
    };
    let status_schema = &schema["properties"]["status"];
    let mut errors = Vec::new();
    let wrapped = json!({ "status": status });
    let outer = json!({"properties": {"status": status_schema}});
    unknown_fields("", &outer, &wrapped, &mut errors);
    let root = json_schema(status_schema);
    if let Ok(validator) = jsonschema::validator_for(&root) {
        for e in validator.iter_errors(status) {
            errors.push(format!("status{}: {e}", e.instance_path()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check(schema: &Value, body: &Value, errors: &mut Vec<String>) {
    unknown_fields("", schema, body, errors);
    let mut root = json_schema(schema);
    if let Some(props) = root["properties"].as_object_mut() {
        props.remove("status");
    }
    match jsonschema::validator_for(&root) {
        Ok(validator) => {
            for e in validator.iter_errors(body) {
                errors.push(format!("{}: Invalid value: {e}", e.instance_path()));
            }
        }
        Err(e) => errors.push(format!("the CRD schema does not compile: {e}")),
    }
    if let Err(cel) = Validator::new().validate(schema, body, None) {
        for e in cel.iter() {
            errors.push(format!("CEL: {e}"));
        }
    }
}
