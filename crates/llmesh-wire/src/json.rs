//! Small helpers for walking untyped JSON with error messages that name the
//! offending field but never quote its value (values may be prompt text).

use serde_json::{Map, Value};

use crate::TranslateError;

pub(crate) type Object = Map<String, Value>;

pub(crate) fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

pub(crate) fn unsupported(msg: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(msg.into())
}

pub(crate) fn bad_upstream(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidUpstream(msg.into())
}

pub(crate) fn into_object(body: Value) -> Result<Object, TranslateError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(invalid("request body must be a JSON object")),
    }
}

/// A string field that may be absent or null, but must be a string otherwise.
pub(crate) fn opt_str<'a>(
    obj: &'a Object,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<Option<&'a str>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{}.{key} must be a string", path()))),
    }
}

pub(crate) fn req_str<'a>(
    obj: &'a Object,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<&'a str, TranslateError> {
    opt_str(obj, key, path)?.ok_or_else(|| invalid(format!("{}.{key} is required", path())))
}

pub(crate) fn as_object<'a>(
    v: &'a Value,
    path: &dyn Fn() -> String,
) -> Result<&'a Object, TranslateError> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{} must be an object", path())))
}

/// A top-level number field; `None` when absent or null.
pub(crate) fn opt_f64(obj: &Object, key: &str) -> Result<Option<f64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be a number"))),
    }
}

/// A top-level non-negative integer field; `None` when absent or null.
pub(crate) fn opt_u64(obj: &Object, key: &str) -> Result<Option<u64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be a non-negative integer"))),
    }
}

pub(crate) fn opt_bool(obj: &Object, key: &str) -> Result<Option<bool>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format!("{key} must be a boolean"))),
    }
}

/// `stop`/`stop_sequences`: a string or an array of strings.
pub(crate) fn string_or_strings(obj: &Object, key: &str) -> Result<Vec<String>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    invalid(format!("{key} must be a string or an array of strings"))
                })
            })
            .collect(),
        Some(_) => Err(invalid(format!(
            "{key} must be a string or an array of strings"
        ))),
    }
}

pub(crate) fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Unix seconds now; only used to fill `created` in synthesized OpenAI bodies.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A process-unique id suffix for bodies whose upstream gave no id. Not
/// random, only distinct: time plus a counter.
pub(crate) fn synth_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}{:04x}",
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}
