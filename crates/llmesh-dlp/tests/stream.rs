//! Streamed answers: a placeholder split across chunks at any byte is
//! restored, and the output never depends on how the stream was chunked.

mod common;

use std::sync::Arc;

use llmesh_dlp::{StreamRestorer, Vault};
use proptest::prelude::*;

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";
const CODENAME: &str = r#"codename "Blue\Bird""#;

/// A vault with `[EMAIL_1]`, `[EMAIL_2]`, `[PAYMENT_CARD_1]`,
/// `[CODENAME_1]` and `[PROJECT_NAMES_1]`.
fn vault() -> Arc<Vault> {
    let engine = common::redact_all();
    let mut text = format!("{EMAIL} x@y.org {CARD} {CODENAME} Blue Falcon {EMAIL}");
    let out = engine.process_text(&mut text);
    assert_eq!(
        text,
        "[EMAIL_1] [EMAIL_2] [PAYMENT_CARD_1] [CODENAME_1] [PROJECT_NAMES_1] [EMAIL_1]"
    );
    Arc::new(out.vault)
}

/// Model output: placeholders at the edges, back to back, inside brackets,
/// next to invented ones and to multi-byte characters.
const ANSWER: &str = "[EMAIL_1] wrote to [EMAIL_2][PAYMENT_CARD_1] — «[CODENAME_1]» \
    [[PROJECT_NAMES_1]] not [EMAIL_9] nor [EMAIL_ nor [PAYMENT_CARD_1 😀 [EMAIL_1]";

const ARGS: &str = r#"{"to":"[EMAIL_1]","note":"[CODENAME_1]","x":"[ [EMAIL_9]"}"#;

fn run(r: &mut StreamRestorer, chunks: &[&str]) -> String {
    let mut out = String::new();
    for c in chunks {
        out.push_str(&r.push(c));
    }
    out.push_str(&r.finish());
    out
}

fn char_boundaries(s: &str) -> Vec<usize> {
    (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect()
}

#[test]
fn every_two_chunk_split() {
    let vault = vault();
    let want = vault.restore_str(ANSWER).into_owned();
    assert!(want.contains(EMAIL) && want.contains(CARD) && want.contains("[EMAIL_9]"));
    for i in char_boundaries(ANSWER) {
        let mut r = StreamRestorer::new(vault.clone());
        let got = run(&mut r, &[&ANSWER[..i], &ANSWER[i..]]);
        assert_eq!(got, want, "split at {i}");
    }
}

#[test]
fn every_two_chunk_split_of_json_arguments() {
    let vault = vault();
    let want = vault.restore_json_text(ARGS).into_owned();
    let parsed: serde_json::Value = serde_json::from_str(&want).unwrap();
    assert_eq!(parsed["note"], CODENAME);
    assert_eq!(parsed["x"], "[ [EMAIL_9]");
    for i in char_boundaries(ARGS) {
        let mut r = StreamRestorer::new_json_string(vault.clone());
        assert_eq!(run(&mut r, &[&ARGS[..i], &ARGS[i..]]), want, "split at {i}");
    }
}

#[test]
fn one_byte_at_a_time_holds_back_only_placeholder_prefixes() {
    let vault = vault();
    let mut r = StreamRestorer::new(vault.clone());
    let mut out = String::new();
    for (i, c) in ANSWER.char_indices() {
        out.push_str(&r.push(&ANSWER[i..i + c.len_utf8()]));
        // Whatever is held back is a prefix of a placeholder.
        assert!(r.pending_len() <= "[PROJECT_NAMES_1]".len());
    }
    out.push_str(&r.finish());
    assert_eq!(out, vault.restore_str(ANSWER));

    // Text without `[` goes out at once.
    let mut r = StreamRestorer::new(vault);
    assert_eq!(r.push("hello "), "hello ");
    assert_eq!(r.push("[EMA"), "");
    assert_eq!(r.push("IL_1] ok"), format!("{EMAIL} ok"));
    assert_eq!(r.push("[X"), "[X");
    assert_eq!(r.push("[EMAIL_2"), "");
    assert_eq!(r.finish(), "[EMAIL_2");
}

#[test]
fn empty_vault_passes_through() {
    let mut r = StreamRestorer::new(Arc::new(Vault::default()));
    assert_eq!(r.push("[EMAIL_1"), "[EMAIL_1");
    assert_eq!(r.finish(), "");
}

fn chunked(s: &str, cuts: &[usize]) -> Vec<String> {
    let bounds = char_boundaries(s);
    let mut at: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
    at.push(0);
    at.push(s.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| s[w[0]..w[1]].to_string()).collect()
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_text(cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        let vault = vault();
        let chunks = chunked(ANSWER, &cuts);
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let mut r = StreamRestorer::new(vault.clone());
        prop_assert_eq!(run(&mut r, &refs), vault.restore_str(ANSWER).into_owned());
        let chunks = chunked(ARGS, &cuts);
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let mut r = StreamRestorer::new_json_string(vault.clone());
        prop_assert_eq!(run(&mut r, &refs), vault.restore_json_text(ARGS).into_owned());
    }
}
