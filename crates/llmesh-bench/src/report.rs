//! Results, the markdown report and its JSON twin.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::load::{percentile, BlockResult, Sample};
use crate::procs::{cpu_affinity, cpu_model, display, CpuTime};
use crate::{
    Plan, CHAT_TOKENS, MANY_CHUNK_DELAY_MS, MANY_TOKENS, STREAM_CHUNK_DELAY_MS, STREAM_TOKENS,
};

// The targets.
const TARGET_ADDED_P50_US: f64 = 50.0;
const TARGET_ADDED_TTFB_P50_US: f64 = 100.0;
const TARGET_CPU_PER_REQ_US: f64 = 60.0;
const TARGET_RSS_IDLE_MIB: f64 = 15.0;
const TARGET_RSS_STREAMS_MIB: f64 = 40.0;
/// Error messages listed in the report.
const SHOW_ERRORS: usize = 10;

/// Everything measured on one path (direct or proxy) in one phase.
#[derive(Debug, Default)]
pub struct PathResult {
    /// Measured requests answered correctly.
    pub ok: u64,
    /// Measured requests that failed.
    pub errors: u64,
    /// Failed warm-up requests (they count as errors of the run too).
    pub warm_errors: u64,
    pub error_messages: Vec<String>,
    /// Wall time of the measured blocks.
    pub elapsed: Duration,
    /// Sorted after `finish`.
    pub total: Vec<Duration>,
    pub ttfb: Vec<Duration>,
    /// CPU time the proxy / mock used during the measured blocks.
    pub proxy_cpu_ns: u64,
    pub proxy_cpu_stat_ns: u64,
    pub mock_cpu_ns: u64,
    pub reconnects: u64,
}

impl PathResult {
    pub fn add_warmup(&mut self, r: BlockResult) {
        self.warm_errors += r.errors;
        self.keep_messages(r.error_messages);
    }

    pub fn add_block(
        &mut self,
        r: BlockResult,
        p0: &CpuTime,
        p1: &CpuTime,
        m0: &CpuTime,
        m1: &CpuTime,
    ) {
        self.ok += r.samples.len() as u64;
        self.errors += r.errors;
        self.reconnects += r.reconnects;
        self.elapsed += r.elapsed;
        self.total
            .extend(r.samples.iter().map(|s: &Sample| s.total));
        self.ttfb.extend(r.samples.iter().map(|s| s.ttfb));
        self.proxy_cpu_ns += p1.best_ns().saturating_sub(p0.best_ns());
        self.proxy_cpu_stat_ns += p1.stat_ns.saturating_sub(p0.stat_ns);
        self.mock_cpu_ns += m1.best_ns().saturating_sub(m0.best_ns());
        self.keep_messages(r.error_messages);
    }

    fn keep_messages(&mut self, msgs: Vec<String>) {
        for m in msgs {
            if self.error_messages.len() < SHOW_ERRORS {
                self.error_messages.push(m);
            }
        }
    }

    pub fn finish(&mut self) {
        self.total.sort_unstable();
        self.ttfb.sort_unstable();
    }

    pub fn attempted(&self) -> u64 {
        self.ok + self.errors
    }

    pub fn all_errors(&self) -> u64 {
        self.errors + self.warm_errors
    }

    pub fn rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    fn us(v: &[Duration], p: f64) -> f64 {
        percentile(v, p).as_secs_f64() * 1e6
    }

    pub fn total_us(&self, p: f64) -> f64 {
        Self::us(&self.total, p)
    }

    pub fn ttfb_us(&self, p: f64) -> f64 {
        Self::us(&self.ttfb, p)
    }

    /// CPU µs per answered request (`None` without requests).
    pub fn proxy_cpu_us(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.proxy_cpu_ns as f64 / 1000.0 / self.ok as f64)
    }

    pub fn mock_cpu_us(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.mock_cpu_ns as f64 / 1000.0 / self.ok as f64)
    }

    fn json(&self) -> Value {
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "warmup_errors": self.warm_errors,
            "error_messages": self.error_messages,
            "reconnects": self.reconnects,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rps": self.rps(),
            "latency_us": {
                "p50": self.total_us(50.0),
                "p90": self.total_us(90.0),
                "p99": self.total_us(99.0),
                "max": self.total_us(100.0),
            },
            "ttfb_us": {
                "p50": self.ttfb_us(50.0),
                "p90": self.ttfb_us(90.0),
                "p99": self.ttfb_us(99.0),
                "max": self.ttfb_us(100.0),
            },
            "proxy_cpu_ns": self.proxy_cpu_ns,
            "proxy_cpu_stat_ns": self.proxy_cpu_stat_ns,
            "proxy_cpu_us_per_request": self.proxy_cpu_us(),
            "mock_cpu_ns": self.mock_cpu_ns,
            "mock_cpu_us_per_request": self.mock_cpu_us(),
        })
    }
}

/// One interleaved phase.
#[derive(Debug)]
pub struct PhaseResult {
    pub concurrency: usize,
    pub direct: PathResult,
    pub proxy: PathResult,
    pub wall: Duration,
}

impl PhaseResult {
    fn added_total_us(&self, p: f64) -> f64 {
        self.proxy.total_us(p) - self.direct.total_us(p)
    }
    fn added_ttfb_us(&self, p: f64) -> f64 {
        self.proxy.ttfb_us(p) - self.direct.ttfb_us(p)
    }
    fn errors(&self) -> u64 {
        self.direct.all_errors() + self.proxy.all_errors()
    }
    fn json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "wall_s": self.wall.as_secs_f64(),
            "direct": self.direct.json(),
            "proxy": self.proxy.json(),
            "added_us": {
                "latency_p50": self.added_total_us(50.0),
                "latency_p99": self.added_total_us(99.0),
                "ttfb_p50": self.added_ttfb_us(50.0),
                "ttfb_p99": self.added_ttfb_us(99.0),
            },
        })
    }
}

/// Phase 4.
#[derive(Debug)]
pub struct StreamsResult {
    pub streams: usize,
    pub rounds: u32,
    pub result: PathResult,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_samples: u32,
    pub wall: Duration,
}

/// One row of the resources table.
struct TargetRow {
    metric: String,
    /// The value as shown, with its unit.
    shown: String,
    value: Option<f64>,
    target_shown: String,
    /// `None`: informational row.
    target: Option<f64>,
    note: String,
}

impl TargetRow {
    fn result(&self) -> &'static str {
        self.target.map_or("—", |t| verdict(self.value, t))
    }
}

pub struct Report {
    plan: Plan,
    mock_bin: String,
    proxy_bin: String,
    body_bytes: usize,
    cpu_source: &'static str,
    started: SystemTime,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub phase1: Option<PhaseResult>,
    pub phase2: Option<PhaseResult>,
    pub phase3: Option<PhaseResult>,
    pub phase4: Option<StreamsResult>,
    pub proxy_log: Vec<String>,
    pub mock_log: Vec<String>,
    pub wall: Duration,
    /// (CPU µs, lateness µs) of a thread waking from a 20 ms sleep.
    pub wakeup: Option<(f64, f64)>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(value: Option<f64>, target: f64) -> &'static str {
    match value {
        Some(v) if v <= target => "PASS",
        Some(_) => "MISS",
        None => "n/a",
    }
}

fn signed(v: f64) -> String {
    format!("{v:+.0}")
}

impl Report {
    pub fn new(
        plan: &Plan,
        mock_bin: &Path,
        proxy_bin: &Path,
        body_bytes: usize,
        cpu_source: &'static str,
    ) -> Report {
        Report {
            plan: plan.clone(),
            mock_bin: display(mock_bin),
            proxy_bin: display(proxy_bin),
            body_bytes,
            cpu_source,
            started: SystemTime::now(),
            rss_start_kib: 0,
            rss_end_kib: 0,
            phase1: None,
            phase2: None,
            phase3: None,
            phase4: None,
            proxy_log: Vec::new(),
            mock_log: Vec::new(),
            wall: Duration::ZERO,
            wakeup: None,
        }
    }

    pub fn total_errors(&self) -> u64 {
        [&self.phase1, &self.phase2, &self.phase3]
            .into_iter()
            .flatten()
            .map(PhaseResult::errors)
            .sum::<u64>()
            + self.phase4.as_ref().map_or(0, |p| p.result.all_errors())
    }

    fn nproc() -> usize {
        std::thread::available_parallelism().map_or(0, |n| n.get())
    }

    fn targets(&self) -> Vec<TargetRow> {
        let mut rows = Vec::new();
        let us1 = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} µs"));
        let added_us =
            |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{} µs", signed(v)));
        let p1 = self.phase1.as_ref();
        let p3 = self.phase3.as_ref();
        let added = p1.map(|p| p.added_total_us(50.0));
        rows.push(TargetRow {
            metric: "added latency p50, non-streaming, 1 client".into(),
            shown: added_us(added),
            value: added,
            target_shown: format!("<= {TARGET_ADDED_P50_US} µs"),
            target: Some(TARGET_ADDED_P50_US),
            note: p1.map_or_else(String::new, |p| {
                format!("p99 {} µs", signed(p.added_total_us(99.0)))
            }),
        });
        let added = p3.map(|p| p.added_ttfb_us(50.0));
        rows.push(TargetRow {
            metric: "added TTFB p50, streaming, 1 client".into(),
            shown: added_us(added),
            value: added,
            target_shown: format!("<= {TARGET_ADDED_TTFB_P50_US} µs"),
            target: Some(TARGET_ADDED_TTFB_P50_US),
            note: p3.map_or_else(String::new, |p| {
                format!("p99 {} µs", signed(p.added_ttfb_us(99.0)))
            }),
        });
        for (label, phase) in [
            ("1 (non-streaming, 1 client)", &self.phase1),
            ("2 (non-streaming, saturation)", &self.phase2),
            ("3 (streaming, 1 client)", &self.phase3),
        ] {
            let v = phase.as_ref().and_then(|p| p.proxy.proxy_cpu_us());
            let mock = phase.as_ref().and_then(|p| p.direct.mock_cpu_us());
            rows.push(TargetRow {
                metric: format!("proxy CPU per request, phase {label}"),
                shown: us1(v),
                value: v,
                target_shown: format!("<= {TARGET_CPU_PER_REQ_US} µs"),
                target: Some(TARGET_CPU_PER_REQ_US),
                note: format!("the mock, direct: {} per request", us1(mock)),
            });
        }
        rows.push(TargetRow {
            metric: "proxy RSS idle, after start".into(),
            shown: format!("{:.1} MiB", mib(self.rss_start_kib)),
            value: Some(mib(self.rss_start_kib)),
            target_shown: format!("<= {TARGET_RSS_IDLE_MIB} MiB"),
            target: Some(TARGET_RSS_IDLE_MIB),
            note: "500 ms after the listening line".into(),
        });
        rows.push(TargetRow {
            metric: "proxy RSS idle, after the load phases".into(),
            shown: format!("{:.1} MiB", mib(self.rss_end_kib)),
            value: Some(mib(self.rss_end_kib)),
            target_shown: format!("<= {TARGET_RSS_IDLE_MIB} MiB"),
            target: Some(TARGET_RSS_IDLE_MIB),
            note: "1 s after the last phase".into(),
        });
        if let Some(p4) = &self.phase4 {
            rows.push(TargetRow {
                metric: format!("proxy RSS peak, {} concurrent streams", p4.streams),
                shown: format!("{:.1} MiB", mib(p4.rss_peak_kib)),
                value: Some(mib(p4.rss_peak_kib)),
                target_shown: format!("<= {TARGET_RSS_STREAMS_MIB} MiB"),
                target: Some(TARGET_RSS_STREAMS_MIB),
                note: format!("sampled every 50 ms, {} samples", p4.rss_samples),
            });
            let v = p4.result.proxy_cpu_us();
            rows.push(TargetRow {
                metric: format!("proxy CPU per stream, phase 4 ({MANY_TOKENS} words)"),
                shown: us1(v),
                value: v,
                target_shown: "—".into(),
                target: None,
                note: format!("the mock: {} per stream", us1(p4.result.mock_cpu_us())),
            });
        }
        if let Some((cpu, late)) = self.wakeup {
            rows.push(TargetRow {
                metric: "machine: one wake-up from a 20 ms sleep".into(),
                shown: format!("{cpu:.1} µs CPU"),
                value: Some(cpu),
                target_shown: "—".into(),
                target: None,
                note: format!(
                    "median {late:.0} µs late; a phase-3 stream wakes each process ~{} times",
                    STREAM_TOKENS + 4
                ),
            });
        }
        rows
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let plan = &self.plan;
        let _ = writeln!(s, "## llmesh bench, {}", utc_date(self.started));
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "- machine: {} CPUs (nproc), {}; bench and children may run on CPUs {}",
            Self::nproc(),
            cpu_model(),
            cpu_affinity()
        );
        let _ = writeln!(
            s,
            "- proxy: `--threads {} --log {}`; mock: 1 worker thread; load generator: in-process, {} tokio thread(s), one HTTP/1.1 keep-alive connection per client; all three share the machine",
            plan.proxy_threads, plan.proxy_log, plan.client_threads
        );
        let _ = writeln!(
            s,
            "- request: OpenAI chat completion, {}-byte body, {CHAT_TOKENS}-word answer (`x-mock-output-tokens: {CHAT_TOKENS}`); every answer checked (status 200, complete body)",
            self.body_bytes
        );
        let _ = writeln!(
            s,
            "- direct (mock) and proxy blocks interleaved ABBA ({}/{}/{} blocks per path in phases 1/2/3), each on fresh connections after a warm-up",
            plan.blocks1, plan.blocks2, plan.blocks3
        );
        let cpu = if self.cpu_source == "schedstat" {
            "sum of /proc/PID/task/*/schedstat (ns)"
        } else {
            "/proc/PID/stat utime+stime, assuming 100 ticks/s"
        };
        let _ = writeln!(
            s,
            "- proxy CPU: {cpu}, measured blocks only; RSS: VmRSS of /proc/PID/status"
        );
        let _ = writeln!(s, "- binaries: `{}`, `{}`", self.proxy_bin, self.mock_bin);
        if plan.quick {
            let _ = writeln!(s, "- **--quick**: small counts, numbers are rough");
        }
        let _ = writeln!(s, "- run time: {:.1} s", self.wall.as_secs_f64());

        if let Some(p) = &self.phase1 {
            let _ = writeln!(s, "\n### 1. Non-streaming, 1 client\n");
            latency_table(&mut s, p);
        }
        if let Some(p) = &self.phase2 {
            let _ = writeln!(
                s,
                "\n### 2. Non-streaming, {} clients: saturation\n\nLoad generator, mock and proxy compete for the same {} cores, so RPS is the whole system's, and the proxy path runs one more process on them. Each path: {:.0} s or {} requests at most.\n",
                p.concurrency,
                Self::nproc(),
                plan.duration.as_secs_f64(),
                plan.saturation_requests
            );
            latency_table(&mut s, p);
        }
        if let Some(p) = &self.phase3 {
            let _ = writeln!(
                s,
                "\n### 3. Streaming, 1 client ({STREAM_TOKENS} words, first at once, then {STREAM_CHUNK_DELAY_MS} ms apart)\n"
            );
            let _ = writeln!(
                s,
                "| path | requests | concurrency | TTFB p50 µs | TTFB p99 µs | duration p50 ms | errors |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
            for r in [&p.direct, &p.proxy] {
                let name = if std::ptr::eq(r, &p.direct) {
                    "direct"
                } else {
                    "proxy"
                };
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {:.0} | {:.0} | {:.2} | {} |",
                    r.ok,
                    p.concurrency,
                    r.ttfb_us(50.0),
                    r.ttfb_us(99.0),
                    r.total_us(50.0) / 1000.0,
                    r.all_errors()
                );
            }
            let _ = writeln!(
                s,
                "| added | | | {} | {} | {:+.2} | |",
                signed(p.added_ttfb_us(50.0)),
                signed(p.added_ttfb_us(99.0)),
                p.added_total_us(50.0) / 1000.0
            );
        }
        if let Some(p4) = &self.phase4 {
            let r = &p4.result;
            let _ = writeln!(
                s,
                "\n### 4. {} concurrent streams through the proxy ({MANY_TOKENS} words, {MANY_CHUNK_DELAY_MS} ms apart, {} round(s))\n",
                p4.streams, p4.rounds
            );
            let _ = writeln!(
                s,
                "| streams | TTFB p50 µs | TTFB p99 µs | duration p50 ms | duration p99 ms | RSS before MiB | RSS peak MiB | RSS samples | errors |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
                r.ok,
                r.ttfb_us(50.0),
                r.ttfb_us(99.0),
                r.total_us(50.0) / 1000.0,
                r.total_us(99.0) / 1000.0,
                mib(p4.rss_before_kib),
                mib(p4.rss_peak_kib),
                p4.rss_samples,
                r.all_errors()
            );
        }

        let _ = writeln!(s, "\n### Resources and targets\n");
        let _ = writeln!(s, "| metric | value | target | result | note |");
        let _ = writeln!(s, "|---|---:|---:|---|---|");
        for row in self.targets() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                row.metric,
                row.shown,
                row.target_shown,
                row.result(),
                row.note
            );
        }

        let errors = self.total_errors();
        if errors > 0 {
            let _ = writeln!(s, "\n### Errors: {errors}\n");
            let all = [&self.phase1, &self.phase2, &self.phase3]
                .into_iter()
                .flatten()
                .flat_map(|p| [&p.direct, &p.proxy])
                .chain(self.phase4.as_ref().map(|p| &p.result));
            // Identical messages once, with how often they were kept.
            let mut seen: Vec<(&str, usize)> = Vec::new();
            for m in all.flat_map(|r| r.error_messages.iter()) {
                match seen.iter_mut().find(|(k, _)| *k == m.as_str()) {
                    Some((_, n)) => *n += 1,
                    None => seen.push((m, 1)),
                }
            }
            for (m, n) in seen {
                let _ = writeln!(s, "- {n}x {m}");
            }
            let _ = writeln!(
                s,
                "\n(at most {SHOW_ERRORS} messages kept per path and phase; the counts in the tables are exact)"
            );
        }
        if !self.proxy_log.is_empty() {
            let _ = writeln!(
                s,
                "\nThe proxy logged {} line(s) at warn or above (last ones):\n",
                self.proxy_log.len()
            );
            for l in self.proxy_log.iter().rev().take(5).rev() {
                let _ = writeln!(s, "    {l}");
            }
        }
        s
    }

    pub fn json(&self) -> Value {
        let plan = &self.plan;
        json!({
            "date": utc_date(self.started),
            "machine": {"nproc": Self::nproc(), "cpu": cpu_model(), "affinity": cpu_affinity()},
            "config": {
                "proxy_threads": plan.proxy_threads,
                "proxy_log": plan.proxy_log,
                "wakeup_cpu_us": self.wakeup.map(|w| w.0),
                "wakeup_late_us": self.wakeup.map(|w| w.1),
                "client_threads": plan.client_threads,
                "mock_threads": 1,
                "quick": plan.quick,
                "requests": plan.requests,
                "duration_s": plan.duration.as_secs_f64(),
                "saturation_requests": plan.saturation_requests,
                "clients": plan.clients,
                "stream_requests": plan.stream_requests,
                "streams": plan.streams,
                "stream_rounds": plan.stream_rounds,
                "body_bytes": self.body_bytes,
                "cpu_source": self.cpu_source,
                "proxy_bin": self.proxy_bin,
                "mock_bin": self.mock_bin,
            },
            "phase1_nonstream_1client": self.phase1.as_ref().map(PhaseResult::json),
            "phase2_nonstream_saturation": self.phase2.as_ref().map(PhaseResult::json),
            "phase3_stream_1client": self.phase3.as_ref().map(PhaseResult::json),
            "phase4_concurrent_streams": self.phase4.as_ref().map(|p| json!({
                "streams": p.streams,
                "rounds": p.rounds,
                "wall_s": p.wall.as_secs_f64(),
                "rss_before_kib": p.rss_before_kib,
                "rss_peak_kib": p.rss_peak_kib,
                "rss_samples": p.rss_samples,
                "proxy": p.result.json(),
            })),
            "rss_kib": {"idle_start": self.rss_start_kib, "idle_end": self.rss_end_kib},
            "targets": self.targets().iter().map(|r| json!({
                "metric": r.metric,
                "value": r.value,
                "shown": r.shown,
                "target": r.target_shown,
                "result": r.result(),
                "note": r.note,
            })).collect::<Vec<_>>(),
            "errors": self.total_errors(),
            "proxy_log_lines": self.proxy_log,
            "mock_log_lines": self.mock_log,
            "wall_s": self.wall.as_secs_f64(),
        })
    }
}

fn latency_table(s: &mut String, p: &PhaseResult) {
    let _ = writeln!(
        s,
        "| path | requests | concurrency | RPS | p50 µs | p99 µs | errors |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [("direct", &p.direct), ("proxy", &p.proxy)] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
            r.ok,
            p.concurrency,
            r.rps(),
            r.total_us(50.0),
            r.total_us(99.0),
            r.all_errors()
        );
    }
    let _ = writeln!(
        s,
        "| added | | | | {} | {} | |",
        signed(p.added_total_us(50.0)),
        signed(p.added_total_us(99.0))
    );
}

/// `YYYY-MM-DD HH:MM UTC` without a date crate (civil-from-days).
fn utc_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}
