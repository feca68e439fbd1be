//! From a verdict and the status an object has now to the merge patch that
//! brings it up to date, or nothing when it already says the same.
//!
//! Kubernetes conventions: `lastTransitionTime` moves only when a
//! condition's `status` changes; every condition and the status itself
//! carry the `observedGeneration` they describe. Conditions of types this
//! controller does not own are kept.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use llmesh_api::CONDITION_ACCEPTED;
use serde_json::{json, Value};

use crate::judge::{Status, Verdict, MANAGED};

/// Longest condition message written; the API server allows 32768 bytes,
/// `kubectl describe` users want far less.
pub const MAX_MESSAGE: usize = 4096;
/// Longest Event note (the API server refuses more than 1 kB).
pub const MAX_NOTE: usize = 1024;

/// A status update for one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The JSON merge patch for the `/status` subresource.
    pub patch: Value,
    /// The note of the Warning Event to emit after the patch: set when the
    /// object becomes rejected at a generation not reported before.
    pub event: Option<String>,
}

/// `now`, to the second, as conditions store it (so a value read back
/// compares equal to the one written).
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the
/// cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn conditions_of(status: Option<&Value>) -> Option<Vec<Condition>> {
    match status.and_then(|s| s.get("conditions")) {
        None | Some(Value::Null) => Some(Vec::new()),
        // Unreadable conditions (written by hand, say) are replaced whole.
        Some(v) => serde_json::from_value(v.clone()).ok(),
    }
}

/// The patch that makes `current` (the object's `status`, if any) say what
/// `verdict` says, or `None` when it already does.
pub fn plan(verdict: &Verdict, current: Option<&Value>, now: &Time) -> Option<Plan> {
    let generation = verdict.generation();
    let existing = conditions_of(current);
    let previous = existing.clone().unwrap_or_default();

    let mut conditions: Vec<Condition> = verdict
        .conditions
        .iter()
        .map(|c| {
            let status = c.status.as_str();
            let since = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            Condition {
                type_: c.type_.to_string(),
                status: status.to_string(),
                reason: c.reason.to_string(),
                message: truncate(&c.message, MAX_MESSAGE),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect();
    conditions.extend(
        previous
            .iter()
            .filter(|p| !MANAGED.contains(&p.type_.as_str()))
            .cloned(),
    );

    let current_generation = current
        .and_then(|s| s.get("observedGeneration"))
        .and_then(Value::as_i64);
    let current_rules = current
        .and_then(|s| s.get("ruleCount"))
        .and_then(Value::as_i64);
    let same = existing.as_ref() == Some(&conditions)
        && current_generation == generation
        && verdict.rule_count.is_none_or(|want| want == current_rules);
    if same {
        return None;
    }

    let mut status = json!({
        "conditions": conditions,
        "observedGeneration": generation,
    });
    if let Some(rules) = verdict.rule_count {
        status["ruleCount"] = json!(rules);
    }

    // One Event per generation: a resync, a restart or a new leader finds
    // the rejection already recorded in status and stays quiet.
    let event = verdict.accepted().and_then(|a| {
        let reported = previous.iter().any(|p| {
            p.type_ == CONDITION_ACCEPTED
                && p.status == Status::False.as_str()
                && p.observed_generation == generation
        });
        (a.status == Status::False && !reported).then(|| truncate(&a.message, MAX_NOTE))
    });
    Some(Plan {
        patch: json!({ "status": status }),
        event,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kube::api::DynamicObject;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::judge::Cond;

    fn verdict(status: Status, message: &str, generation: i64) -> Verdict {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "llmesh.io/v1alpha1", "kind": "LLMRoute",
            "metadata": {"name": "chat", "namespace": "team", "generation": generation},
            "spec": {}
        }))
        .unwrap();
        Verdict {
            kind: "LLMRoute",
            object: Arc::new(object),
            conditions: vec![Cond {
                type_: CONDITION_ACCEPTED,
                status,
                reason: if status == Status::True {
                    "Accepted"
                } else {
                    "Invalid"
                },
                message: message.into(),
            }],
            rule_count: None,
        }
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_new_object_gets_its_conditions_and_a_rejected_one_an_event() {
        let p = plan(&verdict(Status::True, "valid", 1), None, &at(10)).unwrap();
        assert_eq!(
            p.patch,
            json!({"status": {"observedGeneration": 1, "conditions": [{
                "type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "valid", "observedGeneration": 1,
                "lastTransitionTime": "1970-01-01T00:00:10Z"}]}})
        );
        assert_eq!(p.event, None);
        let p = plan(&verdict(Status::False, "bad", 1), None, &at(10)).unwrap();
        assert_eq!(p.event.as_deref(), Some("bad"));
    }

    #[test]
    fn an_unchanged_status_is_not_patched_and_transition_times_stay() {
        let first = plan(&verdict(Status::False, "bad", 1), None, &at(10)).unwrap();
        let written = first.patch["status"].clone();
        assert_eq!(
            plan(&verdict(Status::False, "bad", 1), Some(&written), &at(20)),
            None
        );
        // A new message on the same status keeps the transition time, and
        // the same generation raises no second Event.
        let p = plan(&verdict(Status::False, "worse", 1), Some(&written), &at(20)).unwrap();
        let c = &p.patch["status"]["conditions"][0];
        assert_eq!(c["lastTransitionTime"], "1970-01-01T00:00:10Z");
        assert_eq!(c["message"], "worse");
        assert_eq!(p.event, None);
        // A new generation still rejected: a new Event.
        let p = plan(&verdict(Status::False, "bad", 2), Some(&written), &at(20)).unwrap();
        assert_eq!(p.event.as_deref(), Some("bad"));
        // Fixed: the status flips and the time moves.
        let p = plan(&verdict(Status::True, "valid", 2), Some(&written), &at(30)).unwrap();
        let c = &p.patch["status"]["conditions"][0];
        assert_eq!(c["lastTransitionTime"], "1970-01-01T00:00:30Z");
        assert_eq!(p.event, None);
    }

    #[test]
    fn conditions_of_other_writers_are_kept() {
        let current = json!({"observedGeneration": 1, "conditions": [{
            "type": "Programmed", "status": "True", "reason": "Done", "message": "",
            "lastTransitionTime": "1970-01-01T00:00:05Z"}]});
        let p = plan(&verdict(Status::True, "valid", 1), Some(&current), &at(10)).unwrap();
        let types: Vec<&str> = p.patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Accepted", "Programmed"]);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let text = "é".repeat(1000);
        let cut = truncate(&text, MAX_NOTE);
        assert!(cut.len() <= MAX_NOTE && cut.ends_with("..."));
        assert_eq!(truncate("short", 10), "short");
    }
}
