//! Golden tests: every directory under `tests/golden/` is one case.
//!
//! `case.json` says what to run:
//! `{"kind": "request"|"response"|"stream", "client": "openai", "upstream":
//! "anthropic", "model": "...", "include_usage": false, "identical": false}`.
//! Inputs are `input.json` (request/response) or `input.sse` (stream);
//! outputs `expected.json` or `expected.sse` plus `expected_stats.json`.
//! Run with `LLMESH_BLESS=1` to rewrite the expected files.
//!
//! Bedrock streams are binary: their input is `input.frames.json`, a list of
//! `{"event": "<:event-type>", "payload": {...}}` and `{"exception":
//! "<:exception-type>", "payload": {...}}` messages, encoded with
//! [`bedrock_event_frame`] / [`bedrock_exception_frame`]. Like every stream
//! case they are also fed 1 and 7 bytes at a time, so each frame is split
//! at every byte. Bedrock answers carry no id: response cases get the id
//! `golden` (in the client's form), stream cases `with_response_id("golden")`.
//!
//! Responses clients (`"client": "responses"`) have their responses and
//! streams translated with a `ResponseEcho` of id `response_id` (default
//! `resp_golden`), `created_at` 1700000000 and, as the client's request,
//! `request.json` when the case has one. Their stream stats also hold the
//! `final_response`.

// Test helpers outside #[test] fns are not covered by clippy's
// allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use llmesh_wire::{
    bedrock_event_frame, bedrock_exception_frame, translate_request, translate_response,
    translate_response_for_responses, Dialect, ResponseEcho, StreamOptions, StreamTranslator,
    Usage,
};
use serde_json::{json, Value};

const CREATED: u64 = 1_700_000_000;

fn dialect(name: &str) -> Dialect {
    match name {
        "openai" => Dialect::OpenAi,
        "anthropic" => Dialect::Anthropic,
        "gemini" => Dialect::Gemini,
        "responses" => Dialect::Responses,
        "bedrock" => Dialect::Bedrock,
        other => panic!("unknown dialect {other}"),
    }
}

/// The usage a case reports; `cache_write` only when there were cache
/// writes, which only Anthropic upstreams report.
fn usage_json(u: Option<Usage>) -> Value {
    match u {
        Some(u) => {
            let mut v = json!({"input": u.input_tokens, "output": u.output_tokens,
                "cached": u.cached_input_tokens});
            if u.cache_write_input_tokens > 0 {
                v["cache_write"] = json!(u.cache_write_input_tokens);
            }
            v
        }
        None => Value::Null,
    }
}

fn bless() -> bool {
    std::env::var("LLMESH_BLESS").is_ok_and(|v| v == "1")
}

fn check_text(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        fs::write(path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ));
    }
}

fn check_json(path: &Path, actual: &Value, failures: &mut Vec<String>) {
    let mut text = serde_json::to_string_pretty(actual).unwrap();
    text.push('\n');
    check_text(path, &text, failures);
}

fn echo(dir: &Path, case: &Value) -> ResponseEcho {
    let request = match fs::read_to_string(dir.join("request.json")) {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_object()
            .unwrap()
            .clone(),
        Err(_) => serde_json::Map::new(),
    };
    ResponseEcho {
        id: case["response_id"]
            .as_str()
            .unwrap_or("resp_golden")
            .to_owned(),
        created_at: CREATED,
        request,
    }
}

fn run_stream(
    client: Dialect,
    upstream: Dialect,
    opts: StreamOptions,
    echo: &ResponseEcho,
    input: &[u8],
    chunk: usize,
) -> (Vec<u8>, StreamTranslator) {
    let t = if client == Dialect::Responses {
        StreamTranslator::for_responses(upstream, echo.clone())
    } else {
        StreamTranslator::new(client, upstream, opts)
    };
    let mut t = t.with_created(CREATED).with_response_id("golden");
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        t.push(piece, &mut out).unwrap();
    }
    t.finish(&mut out);
    (out, t)
}

/// The bytes of a Bedrock event stream described by `input.frames.json`.
fn frames(text: &str) -> Vec<u8> {
    let list: Vec<Value> = serde_json::from_str(text).unwrap();
    let mut out = Vec::new();
    for f in list {
        let payload = serde_json::to_vec(&f["payload"]).unwrap();
        out.extend(match (f["event"].as_str(), f["exception"].as_str()) {
            (Some(ev), _) => bedrock_event_frame(ev, &payload),
            (None, Some(ex)) => bedrock_exception_frame(ex, &payload),
            _ => panic!("a frame needs an event or an exception: {f}"),
        });
    }
    out
}

fn run_case(dir: &Path, failures: &mut Vec<String>) {
    let case: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let client = dialect(case["client"].as_str().unwrap());
    let upstream = dialect(case["upstream"].as_str().unwrap());
    let read_json = || -> Value {
        serde_json::from_str(&fs::read_to_string(dir.join("input.json")).unwrap()).unwrap()
    };
    match case["kind"].as_str().unwrap() {
        "request" => {
            let model = case["model"].as_str().unwrap_or("upstream-model");
            let actual = match translate_request(client, upstream, read_json(), model) {
                Ok(v) => v,
                Err(e) => json!({"error": e.to_string()}),
            };
            check_json(&dir.join("expected.json"), &actual, failures);
        }
        "response" => {
            let translated = if client == Dialect::Responses {
                translate_response_for_responses(upstream, read_json(), &echo(dir, &case))
            } else {
                translate_response(client, upstream, read_json())
            };
            let actual = match translated {
                Ok((mut body, usage)) => {
                    if body.get("created").is_some() {
                        body["created"] = json!(CREATED);
                    }
                    if upstream == Dialect::Bedrock && client != Dialect::Responses {
                        body["id"] = json!(match client {
                            Dialect::Anthropic => "msg_golden",
                            _ => "chatcmpl-golden",
                        });
                    }
                    json!({"body": body, "usage": usage_json(usage)})
                }
                Err(e) => json!({"error": e.to_string()}),
            };
            check_json(&dir.join("expected.json"), &actual, failures);
        }
        "stream" => {
            let input = match fs::read_to_string(dir.join("input.frames.json")) {
                Ok(text) => frames(&text),
                Err(_) => fs::read(dir.join("input.sse")).unwrap(),
            };
            let opts = StreamOptions {
                include_usage: case["include_usage"].as_bool().unwrap_or(false),
            };
            let echo = echo(dir, &case);
            let (whole, t) = run_stream(client, upstream, opts, &echo, &input, input.len());
            for size in [1, 7] {
                let (split, _) = run_stream(client, upstream, opts, &echo, &input, size);
                if split != whole {
                    failures.push(format!(
                        "{}: output differs when fed {size} bytes at a time",
                        dir.display()
                    ));
                }
            }
            if case["identical"].as_bool() == Some(true) && whole != input {
                failures.push(format!(
                    "{}: pass-through output is not byte-identical",
                    dir.display()
                ));
            }
            check_text(
                &dir.join("expected.sse"),
                &String::from_utf8(whole).unwrap(),
                failures,
            );
            let mut stats = json!({
                "usage": usage_json(t.usage()),
                "model": t.response_model(),
                "completed": t.completed(),
                "content_chunks": t.content_chunks(),
            });
            if client == Dialect::Responses {
                stats["final_response"] = t.final_response().cloned().unwrap_or(Value::Null);
            }
            check_json(&dir.join("expected_stats.json"), &stats, failures);
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn golden_cases() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 14,
        "expected the golden cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        run_case(dir, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
