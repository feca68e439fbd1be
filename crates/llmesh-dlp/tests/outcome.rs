//! Block and restrict report classes and counts, never values.

use llmesh_dlp::{Action, Api, Builtin, ClassCount, ClassRule, ClassSource, Engine};
use serde_json::json;

const KEY: &str = concat!("AKIA", "IOSFODNN7EXAMPLE");
const SSN: &str = "123-45-6789";
const EMAIL: &str = "bob@example.org";

fn engine() -> Engine {
    Engine::new(vec![
        ClassRule::builtin(Builtin::Email, Action::Redact),
        ClassRule::builtin(Builtin::Secret, Action::Block),
        ClassRule::builtin(Builtin::UsSsn, Action::Restrict),
        ClassRule {
            class: "health".into(),
            source: ClassSource::Dictionary {
                words: vec!["diagnosis".into()],
                case_insensitive: true,
            },
            action: Action::Restrict,
        },
    ])
    .expect("engine")
}

#[test]
fn block_reports_counts_and_leaves_the_body() {
    let mut body = json!({"messages": [
        {"role": "user", "content": format!("keys {KEY} and {KEY}, mail {EMAIL}")}
    ]});
    let before = body.clone();
    let out = engine().process(&mut body, Api::OpenAiChat);
    assert!(out.blocked);
    assert_eq!(body, before);
    assert!(out.vault.is_empty());
    assert_eq!(
        out.found,
        [
            ClassCount {
                class: "email".into(),
                action: Action::Redact,
                count: 1
            },
            ClassCount {
                class: "secret".into(),
                action: Action::Block,
                count: 2
            },
        ]
    );
    assert_eq!(
        out.blocking().map(|c| c.class.as_str()).collect::<Vec<_>>(),
        ["secret"]
    );
    for shown in [format!("{out:?}"), out.to_string()] {
        assert!(!shown.contains(KEY) && !shown.contains(EMAIL), "{shown}");
    }
    assert_eq!(out.to_string(), "email=1 (redact), secret=2 (block)");
}

#[test]
fn restrict_reports_classes_and_keeps_the_text() {
    let text = format!("SSN {SSN}, Diagnosis pending, mail {EMAIL}");
    let mut body = json!({"contents": [{"parts": [{"text": text}]}]});
    let out = engine().process(&mut body, Api::Gemini);
    assert!(!out.blocked);
    assert_eq!(out.restricted, ["us-ssn", "health"]);
    assert_eq!(
        body["contents"][0]["parts"][0]["text"],
        format!("SSN {SSN}, Diagnosis pending, mail [EMAIL_1]")
    );
    let shown = format!("{out:?}");
    assert!(
        !shown.contains(SSN) && !shown.contains(EMAIL) && !shown.contains("Diagnosis"),
        "{shown}"
    );
}

#[test]
fn clean_requests_cost_nothing() {
    let mut body = json!({"messages": [{"role": "user", "content": "hello, nothing to see"}]});
    let out = engine().process(&mut body, Api::OpenAiChat);
    assert!(out.is_clean());
    assert_eq!(out.to_string(), "clean");
    assert!(out.vault.is_empty());
}

#[test]
fn findings_debug_has_no_text() {
    let e = engine();
    let text = format!("{EMAIL} {KEY} {SSN}");
    let findings = e.scan(&text);
    assert_eq!(findings.len(), 3);
    let shown = format!("{findings:?}");
    for v in [EMAIL, KEY, SSN] {
        assert!(!shown.contains(v), "{shown}");
    }
}
