//! OpenAI `POST /v1/moderations`: nothing is flagged, unless the
//! `content_filter` behavior is set (then every input is flagged for
//! violence).

use serde_json::{json, Map, Value};

use crate::behavior::Layers;
use crate::server::ApiError;

/// The omni-moderation categories.
const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// Score of every category not flagged.
const LOW_SCORE: f64 = 0.0001;

/// The moderation response body; one result per input string (a
/// multi-modal parts array is one input).
pub(crate) fn render(body: &Value, layers: &Layers, id: u64) -> Result<String, ApiError> {
    let inputs = match body.get("input") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a.len(),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_object) => 1,
        _ => {
            return Err(ApiError::openai(
                "'input' is required: a string, an array of strings, or an array of text / image_url parts",
            ))
        }
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest");
    let flagged = layers.content_filter();
    let mut categories = Map::new();
    let mut scores = Map::new();
    let mut applied = Map::new();
    for c in CATEGORIES {
        let hit = flagged && c == "violence";
        categories.insert(c.into(), json!(hit));
        scores.insert(c.into(), json!(if hit { 0.97 } else { LOW_SCORE }));
        applied.insert(c.into(), json!(["text"]));
    }
    let result = json!({
        "flagged": flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    });
    Ok(json!({
        "id": format!("modr-mock-{id}"),
        "model": model,
        "results": vec![result; inputs],
    })
    .to_string())
}
