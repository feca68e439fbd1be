use crate::{Action, Builtin, ClassRule, ClassSource, DlpError, Engine};

fn custom(class: &str, source: ClassSource) -> ClassRule {
    ClassRule {
        class: class.into(),
        source,
        action: Action::Redact,
    }
}

fn words(ws: &[&str], ci: bool) -> ClassSource {
    ClassSource::Dictionary {
        words: ws.iter().map(|s| s.to_string()).collect(),
        case_insensitive: ci,
    }
}

fn spans(e: &Engine, t: &str) -> Vec<(String, String)> {
    e.scan(t)
        .iter()
        .map(|f| {
            (
                e.class(f.rule).unwrap().to_string(),
                t[f.range.clone()].to_string(),
            )
        })
        .collect()
}

#[test]
fn errors_name_the_rule() {
    let bad = Engine::new(vec![
        ClassRule::builtin(Builtin::Email, Action::Redact),
        custom(
            "ids",
            ClassSource::Patterns(vec!["ok".into(), "(unclosed".into()]),
        ),
    ])
    .unwrap_err();
    match &bad {
        DlpError::InvalidPattern { index, pattern, .. } => {
            assert_eq!(*index, 1);
            assert_eq!(pattern, "(unclosed");
        }
        other => panic!("{other:?}"),
    }
    assert!(bad.to_string().contains("rule 1"));
    assert!(bad.to_string().contains("(unclosed"));

    let dup = Engine::new(vec![
        custom("a-b", ClassSource::Patterns(vec!["x".into()])),
        custom("a_b", ClassSource::Patterns(vec!["y".into()])),
    ]);
    assert!(matches!(
        dup,
        Err(DlpError::DuplicateClass {
            index: 1,
            first: 0,
            ..
        })
    ));
    for name in ["", "1abc", "with space", "é"] {
        let r = Engine::new(vec![custom(name, ClassSource::Patterns(vec!["x".into()]))]);
        assert!(
            matches!(r, Err(DlpError::InvalidClassName { index: 0, .. })),
            "{name:?}"
        );
    }
    let twice = Engine::new(vec![
        ClassRule::builtin(Builtin::Email, Action::Redact),
        ClassRule {
            class: "work-email".into(),
            source: ClassSource::Builtin(Builtin::Email),
            action: Action::Block,
        },
    ]);
    assert!(matches!(
        twice,
        Err(DlpError::DuplicateBuiltin {
            index: 1,
            first: 0,
            ..
        })
    ));
    let empty = Engine::new(vec![custom("w", words(&["  "], false))]);
    assert!(matches!(
        empty,
        Err(DlpError::EmptySource {
            what: "dictionary",
            ..
        })
    ));
    let empty = Engine::new(vec![custom("p", ClassSource::Patterns(vec![]))]);
    assert!(matches!(
        empty,
        Err(DlpError::EmptySource {
            what: "patterns",
            ..
        })
    ));
}

#[test]
fn builtin_names() {
    for b in Builtin::ALL {
        assert_eq!(Builtin::from_name(b.name()), Some(b));
    }
    assert_eq!(
        Builtin::from_name("payment-card"),
        Some(Builtin::PaymentCard)
    );
    assert_eq!(Builtin::from_name("credit-card"), None);
}

#[test]
fn custom_patterns_and_dictionaries() {
    let e = Engine::new(vec![
        custom(
            "ticket",
            ClassSource::Patterns(vec![r"\bJIRA-[0-9]+\b".into(), r"\bINC[0-9]{6}\b".into()]),
        ),
        custom(
            "project-names",
            words(&["Apollo", "Blue Moon", "Zürich"], true),
        ),
        custom("exact", words(&["C++", "Apollo 11"], false)),
    ])
    .unwrap();
    assert_eq!(
        spans(
            &e,
            "See JIRA-42 and INC000123 on apollo; BLUE MOON, zürich, ZÜRICH."
        ),
        [
            ("ticket", "JIRA-42"),
            ("ticket", "INC000123"),
            ("project-names", "apollo"),
            ("project-names", "BLUE MOON"),
            ("project-names", "zürich"),
            ("project-names", "ZÜRICH"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // Word boundaries; the longest match at a position wins.
    assert!(spans(&e, "Apollonia and xApollo and Apollo_x").is_empty());
    assert_eq!(
        spans(&e, "I like C++ and Apollo 11!"),
        [("exact", "C++"), ("exact", "Apollo 11")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // A rejected longer phrase does not hide a shorter word.
    assert_eq!(
        spans(&e, "Apollo 11x"),
        [("project-names", "Apollo")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn overlaps_resolve_earliest_then_longest_then_first_rule() {
    let e = Engine::new(vec![
        custom("short", ClassSource::Patterns(vec!["abc".into()])),
        custom("long", ClassSource::Patterns(vec!["abcdef".into()])),
        custom("late", ClassSource::Patterns(vec!["cdefgh".into()])),
        custom("same", ClassSource::Patterns(vec!["abc".into()])),
    ])
    .unwrap();
    assert_eq!(
        spans(&e, "abcdefgh"),
        [("long".to_string(), "abcdef".to_string())]
    );
    assert_eq!(spans(&e, "abc"), [("short".to_string(), "abc".to_string())]);
}

#[test]
fn empty_matches_are_ignored() {
    let e = Engine::new(vec![custom("x", ClassSource::Patterns(vec!["a*".into()]))]).unwrap();
    assert_eq!(spans(&e, "bab"), [("x".to_string(), "a".to_string())]);
}

#[test]
fn engine_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
    check::<crate::Vault>();
    check::<crate::StreamRestorer>();
}

#[test]
fn debug_shows_no_text() {
    let e = Engine::new(vec![ClassRule::builtin(Builtin::Email, Action::Redact)]).unwrap();
    let f = e.scan("write to alice@example.com");
    assert_eq!(f.len(), 1);
    assert!(!format!("{f:?}").contains("alice"));
    assert!(format!("{e:?}").contains("email"));
}
