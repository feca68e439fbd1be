//! Properties: redact-then-restore is the identity, redacted text holds no
//! detected value, and nothing panics on arbitrary Unicode.

mod common;

use std::sync::Arc;

use llmesh_dlp::{Api, StreamRestorer};
use proptest::prelude::*;
use serde_json::json;

fn luhn_digit(payload: &[u8]) -> u8 {
    let mut sum = 0u32;
    for (i, &d) in payload.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    ((10 - sum % 10) % 10) as u8
}

fn card() -> impl Strategy<Value = String> {
    (proptest::collection::vec(0u8..10, 14), prop::bool::ANY).prop_map(|(mut d, spaced)| {
        d.insert(0, 4);
        let check = luhn_digit(&d);
        d.push(check);
        let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
        if spaced {
            s.as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).expect("ascii"))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            s
        }
    })
}

fn iban() -> impl Strategy<Value = String> {
    (proptest::collection::vec(0u8..10, 18), prop::bool::ANY).prop_map(|(d, spaced)| {
        let bban: String = d.iter().map(|x| char::from(b'0' + x)).collect();
        // Check digits: 98 - (BBAN + "DE00" as digits) mod 97.
        let digits = format!("{bban}131400");
        let rem = digits
            .bytes()
            .fold(0u32, |r, c| (r * 10 + u32::from(c - b'0')) % 97);
        let s = format!("DE{:02}{bban}", 98 - rem);
        if spaced {
            s.as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).expect("ascii"))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            s
        }
    })
}

fn email() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9._]{0,8}[a-z0-9]",
        "[a-z]{1,8}",
        prop::sample::select(vec!["com", "org", "io", "co.uk"]),
    )
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![card(), iban(), email()]
}

fn filler() -> impl Strategy<Value = String> {
    "[a-z]{1,10}( [a-z]{1,10}){0,4}[,.!?]?"
}

/// Filler and values alternating, separated by spaces or newlines.
fn document() -> impl Strategy<Value = (String, Vec<String>)> {
    proptest::collection::vec((filler(), value(), prop::bool::ANY), 1..6).prop_map(|parts| {
        let mut text = String::new();
        let mut values = Vec::new();
        for (f, v, nl) in parts {
            text.push_str(&f);
            text.push(if nl { '\n' } else { ' ' });
            text.push_str(&v);
            text.push(' ');
            values.push(v);
        }
        (text, values)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn embedded_values_are_found_and_restored((text, values) in document()) {
        let engine = common::redact_all();
        let mut redacted = text.clone();
        let out = engine.process_text(&mut redacted);
        for v in &values {
            prop_assert!(!redacted.contains(v.as_str()), "{v:?} left in {redacted:?}");
        }
        prop_assert_eq!(out.vault.restore_str(&redacted), text.as_str());
    }

    #[test]
    fn restore_inverts_redact_on_any_text(text in "\\PC{0,200}", (doc, _) in document()) {
        let engine = common::redact_all();
        let original = format!("{text} {doc} {text}");
        let mut redacted = original.clone();
        let out = engine.process_text(&mut redacted);
        prop_assert_eq!(out.vault.restore_str(&redacted), original.as_str());
        for f in engine.scan(&original).iter() {
            if !out.vault.is_empty() {
                let v = &original[f.range.clone()];
                prop_assert!(out.vault.placeholders().any(|p| out.vault.get(p) == Some(v)));
            }
        }
    }

    #[test]
    fn no_panics_on_arbitrary_unicode(text in any::<String>(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let engine = common::redact_all();
        let _ = engine.scan(&text);
        let mut redacted = text.clone();
        let out = engine.process_text(&mut redacted);
        prop_assert_eq!(out.vault.restore_str(&redacted), text.as_str());
        let _ = out.vault.restore_json_text(&text);
        let mut body = json!({"messages": [{"role": "user", "content": text.clone()},
            {"role": "assistant", "tool_calls": [{"function": {"arguments": text.clone()}}]}]});
        let _ = engine.process(&mut body, Api::OpenAiChat);
        let vault = Arc::new(out.vault);
        let bounds: Vec<usize> = (0..=redacted.len()).filter(|&i| redacted.is_char_boundary(i)).collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
        at.extend([0, redacted.len()]);
        at.sort_unstable();
        at.dedup();
        for json in [false, true] {
            let mut r = if json { StreamRestorer::new_json_string(vault.clone()) } else { StreamRestorer::new(vault.clone()) };
            let mut got = String::new();
            for w in at.windows(2) {
                got.push_str(&r.push(&redacted[w[0]..w[1]]));
            }
            got.push_str(&r.finish());
            if !json {
                prop_assert_eq!(&got, &text);
            }
        }
    }

    #[test]
    fn no_panics_on_digit_and_symbol_soup(text in "[0-9 .:\\-+()/A-Fa-f@\\[\\]_x]{0,120}") {
        let engine = common::redact_all();
        let mut redacted = text.clone();
        let out = engine.process_text(&mut redacted);
        prop_assert_eq!(out.vault.restore_str(&redacted), text.as_str());
    }
}
