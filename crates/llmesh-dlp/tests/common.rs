//! Shared by the integration tests: an engine with every built-in class
//! redacted, plus a custom pattern and a dictionary.

#![allow(dead_code)]

use std::sync::OnceLock;

use llmesh_dlp::{Action, Builtin, ClassRule, ClassSource, Engine};

/// Compiled once per test binary (compiling is the slow part in debug).
pub fn redact_all() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(build)
}

fn build() -> Engine {
    let mut rules: Vec<ClassRule> = Builtin::ALL
        .into_iter()
        .map(|b| ClassRule::builtin(b, Action::Redact))
        .collect();
    rules.push(ClassRule {
        class: "codename".into(),
        source: ClassSource::Patterns(vec![r#"codename "[^"]+""#.into()]),
        action: Action::Redact,
    });
    rules.push(ClassRule {
        class: "project-names".into(),
        source: ClassSource::Dictionary {
            words: vec!["Blue Falcon".into(), "Apollo".into()],
            case_insensitive: true,
        },
        action: Action::Redact,
    });
    Engine::new(rules).expect("engine")
}
