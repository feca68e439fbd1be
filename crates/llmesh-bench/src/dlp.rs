//! `llmesh-bench --dlp`: the data-classification engine (llmesh-dlp) on its
//! own, in process: time to scan and redact realistic chat request bodies,
//! and detector throughput on plain text. No child processes.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use llmesh_dlp::{Action, Api, Builtin, ClassRule, ClassSource, Engine, StreamRestorer};
use serde_json::{json, Value};

use crate::load::percentile;
use crate::procs::{cpu_affinity, cpu_model};

// The issue's targets for scan + redact of a parsed body.
const TARGET_4K_US: f64 = 30.0;
const TARGET_64K_US: f64 = 300.0;

/// Counts for one run.
pub struct DlpPlan {
    pub quick: bool,
}

/// A small deterministic generator (xorshift64*), so every run measures the
/// same bodies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "is",
    "for",
    "that",
    "with",
    "on",
    "as",
    "it",
    "be",
    "this",
    "are",
    "we",
    "can",
    "you",
    "should",
    "request",
    "service",
    "customer",
    "order",
    "report",
    "quarter",
    "revenue",
    "deploy",
    "cluster",
    "latency",
    "budget",
    "team",
    "please",
    "summarize",
    "following",
    "meeting",
    "notes",
    "draft",
    "email",
    "reply",
    "policy",
    "migration",
    "database",
    "index",
    "query",
    "error",
    "timeout",
    "retry",
    "release",
    "feature",
    "review",
    "approve",
    "schedule",
    "invoice",
    "contract",
    "support",
    "ticket",
    "analysis",
    "results",
    "improve",
    "performance",
    "users",
    "weekly",
    "update",
    "risk",
    "Kubernetes",
    "pod",
    "sidecar",
    "provider",
    "model",
    "token",
    "cost",
    "namespace",
];

/// Numbers and code that look a bit like data but are not sensitive.
const NOISE: &[&str] = &[
    "2024",
    "37",
    "v2.3.1",
    "10:30",
    "2024-05-17",
    "$1,299.00",
    "12.5%",
    "HTTP 503",
    "`let x = foo::bar(3);`",
    "https://docs.example.com/guide/intro",
    "#4821",
    "3.14159",
    "PR 1182",
    "Q3",
    "x86_64",
    "port 8080",
    "1.2.3",
    "(see section 4.2)",
    "100 ms",
];

/// Values every built-in detector should find.
const PII: &[&str] = &[
    "jane.doe@example.com",
    "+1 (555) 123-4567",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
    "10.20.30.40",
    concat!("AKIA", "IOSFODNN7EXAMPLE"),
];

fn sentence(rng: &mut Rng, out: &mut String) {
    let n = 8 + rng.below(14);
    for i in 0..n {
        let w = if rng.below(12) == 0 {
            rng.pick(NOISE)
        } else {
            rng.pick(WORDS)
        };
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
    out.push_str(if rng.below(6) == 0 { "?\n" } else { ". " });
}

/// Prose of about `len` bytes; with `pii`, one sensitive value per KiB.
fn prose(rng: &mut Rng, len: usize, pii: bool) -> String {
    let mut s = String::with_capacity(len + 200);
    let mut next_pii = 512;
    while s.len() < len {
        sentence(rng, &mut s);
        if pii && s.len() >= next_pii {
            let _ = write!(s, "Contact: {}. ", rng.pick(PII));
            next_pii += 1024;
        }
    }
    s
}

/// An OpenAI chat request of about `len` bytes: a system prompt and a
/// conversation of user and assistant turns. With `pii`, the user turns
/// hold one sensitive value per KiB of body, at sentence ends.
fn chat_body(len: usize, pii: bool) -> Value {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ len as u64);
    let mut messages = vec![prose(&mut rng, 500, false)];
    let mut size = 600;
    while size < len {
        let n = (300 + rng.below(900)).min(len - size + 50);
        let content = prose(&mut rng, n, false);
        size += content.len() + 40;
        messages.push(content);
    }
    let users: Vec<usize> = (1..messages.len()).step_by(2).collect();
    if pii && !users.is_empty() {
        for k in 0..len / 1024 {
            let m = &mut messages[users[k % users.len()]];
            let ends: Vec<usize> = m.match_indices(". ").map(|(i, _)| i + 2).collect();
            let at = if ends.is_empty() {
                m.len()
            } else {
                ends[rng.below(ends.len())]
            };
            m.insert_str(at, &format!("Contact: {}. ", rng.pick(PII)));
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .enumerate()
        .map(|(i, content)| {
            let role = match i {
                0 => "system",
                i if i % 2 == 1 => "user",
                _ => "assistant",
            };
            json!({"role": role, "content": content})
        })
        .collect();
    json!({"model": "gpt-4o-mini", "temperature": 0.2, "messages": messages})
}

fn all_builtins(action: Action) -> anyhow::Result<Engine> {
    Engine::new(
        Builtin::ALL
            .into_iter()
            .map(|b| ClassRule::builtin(b, action))
            .collect(),
    )
    .context("building the engine")
}

/// All built-ins plus what a policy typically adds: a few custom patterns
/// and a dictionary of 100 project names.
fn with_custom() -> anyhow::Result<Engine> {
    let mut rules: Vec<ClassRule> = Builtin::ALL
        .into_iter()
        .map(|b| ClassRule::builtin(b, Action::Redact))
        .collect();
    rules.push(ClassRule {
        class: "ticket".into(),
        source: ClassSource::Patterns(vec![
            r"(?-u:\b)JIRA-[0-9]{1,6}(?-u:\b)".into(),
            r"(?-u:\b)INC[0-9]{7}(?-u:\b)".into(),
        ]),
        action: Action::Redact,
    });
    rules.push(ClassRule {
        class: "internal".into(),
        source: ClassSource::Patterns(vec![
            r"(?i)(?-u:\b)(?:confidential|internal only)(?-u:\b)".into(),
            r"(?-u:\b)[a-z0-9-]+\.corp\.example\.net(?-u:\b)".into(),
            r"(?-u:\b)EMP-[0-9]{6}(?-u:\b)".into(),
        ]),
        action: Action::Redact,
    });
    let words = (0..100)
        .map(|i| {
            format!(
                "{} {}",
                ["Project", "Operation", "Codename"][i % 3],
                [
                    "Falcon", "Nimbus", "Aurora", "Basalt", "Cobalt", "Drift", "Ember", "Fjord",
                    "Garnet", "Helix"
                ][i % 10]
            ) + &format!("{}", i / 10)
        })
        .collect();
    rules.push(ClassRule {
        class: "project-names".into(),
        source: ClassSource::Dictionary {
            words,
            case_insensitive: true,
        },
        action: Action::Redact,
    });
    Engine::new(rules).context("building the engine")
}

struct Row {
    name: String,
    bytes: usize,
    findings: usize,
    iters: usize,
    process: Vec<Duration>,
    with_parse: Vec<Duration>,
    target_us: f64,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn measure_body(engine: &Engine, name: &str, body: &Value, iters: usize, target_us: f64) -> Row {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let findings = {
        let mut b = body.clone();
        engine
            .process(&mut b, Api::OpenAiChat)
            .found
            .iter()
            .map(|c| c.count)
            .sum()
    };
    let warm = iters / 10 + 10;
    let mut process = Vec::with_capacity(iters);
    let mut with_parse = Vec::with_capacity(iters);
    for i in 0..warm + iters {
        let mut b = body.clone();
        let t = Instant::now();
        let out = engine.process(&mut b, Api::OpenAiChat);
        let dt = t.elapsed();
        black_box((out, b));
        let t = Instant::now();
        let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
        if let Ok(mut v) = parsed {
            black_box(engine.process(&mut v, Api::OpenAiChat));
            black_box(v);
        }
        let dp = t.elapsed();
        if i >= warm {
            process.push(dt);
            with_parse.push(dp);
        }
    }
    process.sort_unstable();
    with_parse.sort_unstable();
    Row {
        name: name.to_string(),
        bytes: bytes.len(),
        findings,
        iters,
        process,
        with_parse,
        target_us,
    }
}

/// MB/s of `engine.scan` over `text`, best of a few rounds.
fn throughput(engine: &Engine, text: &str, rounds: usize) -> (f64, usize) {
    let found = engine.scan(text).len();
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        black_box(engine.scan(black_box(text)));
        best = best.min(t.elapsed());
    }
    (text.len() as f64 / best.as_secs_f64() / 1e6, found)
}

pub fn run(plan: &DlpPlan) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let engine = all_builtins(Action::Redact)?;
    let compile = t0.elapsed();
    let scale = if plan.quick { 10 } else { 1 };
    let mut rows = Vec::new();
    for (name, len, pii, iters, target) in [
        (
            "4 KiB chat, no sensitive data",
            4096,
            false,
            20_000,
            TARGET_4K_US,
        ),
        (
            "4 KiB chat, 4 sensitive values",
            4096,
            true,
            20_000,
            TARGET_4K_US,
        ),
        (
            "64 KiB chat, no sensitive data",
            65536,
            false,
            2_000,
            TARGET_64K_US,
        ),
        (
            "64 KiB chat, 64 sensitive values",
            65536,
            true,
            2_000,
            TARGET_64K_US,
        ),
    ] {
        eprintln!("llmesh-bench: dlp: {name}");
        let body = chat_body(len, pii);
        rows.push(measure_body(&engine, name, &body, iters / scale, target));
    }

    // Throughput on plain text (1 MiB of the same prose).
    let mut rng = Rng(42);
    let clean = prose(&mut rng, 1 << 20, false);
    let dirty = prose(&mut rng, 1 << 20, true);
    let rounds = if plan.quick { 3 } else { 10 };
    let mut tput = Vec::new();
    eprintln!("llmesh-bench: dlp: throughput");
    tput.push((
        "all built-ins".to_string(),
        throughput(&engine, &clean, rounds),
        throughput(&engine, &dirty, rounds),
    ));
    let custom = with_custom()?;
    tput.push((
        "all built-ins + 5 custom patterns + 100-phrase dictionary".to_string(),
        throughput(&custom, &clean, rounds),
        throughput(&custom, &dirty, rounds),
    ));
    for b in Builtin::ALL {
        let e = Engine::new(vec![ClassRule::builtin(b, Action::Redact)]).context("engine")?;
        tput.push((
            b.name().to_string(),
            throughput(&e, &clean, rounds),
            throughput(&e, &dirty, rounds),
        ));
    }

    // Restoring a streamed answer: 4 KiB with placeholders, 16-byte deltas.
    let mut answer = prose(&mut rng, 4096, true);
    let out = engine.process_text(&mut answer);
    let vault = Arc::new(out.vault);
    let stream_iters = 20_000 / scale;
    let t = Instant::now();
    for _ in 0..stream_iters {
        let mut r = StreamRestorer::new(vault.clone());
        let mut emitted = 0;
        let mut i = 0;
        while i < answer.len() {
            let mut j = (i + 16).min(answer.len());
            while !answer.is_char_boundary(j) {
                j += 1;
            }
            emitted += r.push(&answer[i..j]).len();
            i = j;
        }
        emitted += r.finish().len();
        black_box(emitted);
    }
    let stream_mbs = (answer.len() * stream_iters) as f64 / t.elapsed().as_secs_f64() / 1e6;

    let mut s = String::new();
    let _ = writeln!(s, "## llmesh-dlp bench");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- machine: {} CPUs, {}; CPUs allowed {}; one thread",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model(),
        cpu_affinity()
    );
    let _ = writeln!(
        s,
        "- engine: all 7 built-in classes, action redact; compiled in {:.1} ms",
        compile.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        s,
        "- bodies: OpenAI chat requests of generated prose with numbers, dates, versions, code and URLs; \"sensitive\" ones hold one value per KiB of user text (emails, phones, cards, IBANs, SSNs, IPs, AWS keys)"
    );
    let _ = writeln!(
        s,
        "- `process` = `Engine::process` on the parsed body (walk, scan, redact, vault); `parse+process` adds `serde_json::from_slice`"
    );
    if plan.quick {
        let _ = writeln!(s, "- **--quick**: small counts, numbers are rough");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "#### Request bodies");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| body | bytes | found | iterations | process p50 µs | p99 µs | target µs | parse+process p50 µs | p99 µs |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let p50 = us(percentile(&r.process, 50.0));
        let ok = if p50 <= r.target_us { "" } else { " (missed)" };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | ≤ {:.0}{ok} | {:.1} | {:.1} |",
            r.name,
            r.bytes,
            r.findings,
            r.iters,
            p50,
            us(percentile(&r.process, 99.0)),
            r.target_us,
            us(percentile(&r.with_parse, 50.0)),
            us(percentile(&r.with_parse, 99.0)),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "#### Detector throughput on 1 MiB of plain text (`Engine::scan`, best of {rounds})"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| detectors | clean prose MB/s | found | prose with a value per KiB MB/s | found |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (name, (c, cf), (d, df)) in &tput {
        let _ = writeln!(s, "| {name} | {c:.0} | {cf} | {d:.0} | {df} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Streamed restore (`StreamRestorer`, {}-byte answer with {} placeholders, 16-byte deltas): {stream_mbs:.0} MB/s",
        answer.len(),
        vault.len()
    );
    Ok(s)
}
