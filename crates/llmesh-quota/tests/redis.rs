//! The engine over a real redis-server started by each test on a free
//! loopback port: atomic reserve and settle, one budget shared by several
//! sidecars, Redis killed and restarted under load, held settlements
//! replayed, leases of crashed sidecars draining, usage records and the
//! `llmesh cost` report.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use llmesh_quota::cost::{aggregate, read_records, GroupBy};
use llmesh_quota::{
    unix_ms, AnyStore, Decision, ProviderBudget, QuotaEngine, QuotaRuntime, QuotaStore,
    RedisConfig, RedisStore, RejectReason, UsageConfig, UsageRecord, UsageWriter, Window,
    USAGE_STREAM,
};
use redis::AsyncCommands;
use support::*;

fn redis_runtime(url: &str, tweak: impl FnOnce(&mut RedisConfig)) -> QuotaRuntime {
    let mut cfg = RedisConfig {
        url: url.to_string(),
        ..RedisConfig::default()
    };
    tweak(&mut cfg);
    QuotaRuntime::new(AnyStore::Redis(RedisStore::new(cfg).unwrap()))
}

fn writer(url: &str) -> UsageWriter {
    let mut cfg = UsageConfig::default();
    cfg.redis.url = url.to_string();
    UsageWriter::new(cfg).unwrap()
}

fn record(model: &str, input: u64, output: u64, cost: f64) -> UsageRecord {
    UsageRecord {
        ts: SystemTime::now(),
        namespace: NS.into(),
        workload: "checkout".into(),
        pod: "checkout-1".into(),
        route: "chat".into(),
        provider: "openai".into(),
        model: model.into(),
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: 0,
        cache_write_input_tokens: 0,
        cost_usd: cost,
        status: 200,
        caller_hash: None,
    }
}

fn minute_key(quota: &str, scope: &str, limit: &str, now: SystemTime) -> String {
    let start = Window::Minute.bounds(unix_ms(now)).0 / 1000;
    format!("llmesh:q:{{{NS}}}:{quota}:{scope}:{limit}:{start}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_and_settle_are_atomic_and_exact() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let rt = redis_runtime(&srv.url(), |_| {});
    let e = engine(
        &rt,
        &quota(
            "budget",
            "  scope: workload\n  limits: {requestsPerMinute: 100, tokensPerMinute: 1000, concurrentRequests: 2}",
        ),
    );
    let now = SystemTime::now();
    let mut c = srv.conn().await;
    let tpm = minute_key("budget", "w.checkout", "tpm", now);
    let rpm = minute_key("budget", "w.checkout", "rpm", now);
    let conc = format!("llmesh:q:{{{NS}}}:budget:w.checkout:conc");

    let r = admitted(req(now).tokens(100, 200).admit(&e).await);
    assert!(!r.is_local());
    assert_eq!(c.get::<_, i64>(&tpm).await.unwrap(), 300);
    assert_eq!(c.get::<_, i64>(&rpm).await.unwrap(), 1);
    assert_eq!(c.zcard::<_, i64>(&conc).await.unwrap(), 1);
    // Keys expire with their window plus the slack.
    let ttl: i64 = c.pttl(&tpm).await.unwrap();
    // (The window may end a moment after `now`: allow for the time since.)
    assert!(ttl > 55_000 && ttl <= 120_000, "{ttl}");

    // 700 left: a 800-token request is refused and nothing is counted.
    let d = req(now).tokens(300, 500).admit(&e).await;
    let Decision::Reject(rej) = d else {
        panic!("expected a rejection")
    };
    assert_eq!(rej.rate.unwrap().remaining, 700);
    assert_eq!(c.get::<_, i64>(&tpm).await.unwrap(), 300);
    assert_eq!(c.get::<_, i64>(&rpm).await.unwrap(), 1);

    r.settle(100, 50, 0.0).await;
    assert_eq!(c.get::<_, i64>(&tpm).await.unwrap(), 150);
    assert_eq!(c.zcard::<_, i64>(&conc).await.unwrap(), 0);

    // A Redis that lost its scripts (restart, SCRIPT FLUSH) gets them again.
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let r = admitted(req(now).tokens(10, 10).admit(&e).await);
    assert!(!r.is_local());
    r.settle(10, 10, 0.0).await;
    assert_eq!(c.get::<_, i64>(&tpm).await.unwrap(), 170);
    assert_eq!(rt.store().stats().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_settles_after_a_zero_estimate_and_refusals_undo_everything() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let rt = redis_runtime(&srv.url(), |_| {});
    let e = engine(
        &rt,
        &quota(
            "spend",
            "  limits: {requestsPerMinute: 10, costPerDay: \"2\", concurrentRequests: 1}",
        ),
    );
    let now = SystemTime::now();
    let mut c = srv.conn().await;
    let day = Window::Day.bounds(unix_ms(now)).0 / 1000;
    let cpd = format!("llmesh:q:{{{NS}}}:spend:ns:cpd:{day}");
    let rpm = minute_key("spend", "ns", "rpm", now);
    // No estimate: the cost counter exists at 0 until the call settles.
    let r = admitted(req(now).admit(&e).await);
    assert_eq!(c.get::<_, i64>(&cpd).await.unwrap(), 0);
    // The slot is taken: refused, and the request and cost counted before
    // the slot was checked are undone.
    assert!(is_reject(&req(now).cost(0.5).admit(&e).await));
    assert_eq!(c.get::<_, i64>(&rpm).await.unwrap(), 1);
    assert_eq!(c.get::<_, i64>(&cpd).await.unwrap(), 0);
    r.settle(10, 10, 1.25).await;
    assert_eq!(c.get::<_, i64>(&cpd).await.unwrap(), 1_250_000);
    // 0.75 left: an estimate of 1.00 is refused, 0.50 fits.
    assert!(is_reject(&req(now).cost(1.0).admit(&e).await));
    let r = admitted(req(now).cost(0.5).admit(&e).await);
    assert_eq!(c.get::<_, i64>(&cpd).await.unwrap(), 1_750_000);
    r.settle(10, 10, 0.25).await;
    assert_eq!(c.get::<_, i64>(&cpd).await.unwrap(), 1_500_000);
    assert_eq!(c.get::<_, i64>(&rpm).await.unwrap(), 2);
}

/// 64 tasks across 3 sidecars (3 runtimes, 3 connections) against one
/// namespace budget of tokens per minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_budget_shared_by_three_sidecars() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    const LIMIT: u64 = 20_000;
    const INPUT: u64 = 40;
    const RESERVED_OUT: u64 = 160;
    // Some calls answer more than they reserved: up to 199 - 160.
    const MAX_OVERSHOOT: u64 = 39;
    const TASKS: u64 = 64;
    let snap = Arc::new(snapshot(&quota(
        "shared",
        "  limits: {tokensPerMinute: 20000}",
    )));
    let sidecars: Vec<_> = (0..3)
        .map(|_| {
            // A generous timeout: this test is about the shared path, not
            // the fallback, on a machine that may be busy.
            let rt = redis_runtime(&srv.url(), |c| c.command_timeout = Duration::from_secs(5));
            let e = Arc::new(QuotaEngine::from_snapshot(&snap, &rt));
            (rt, e, Arc::new(writer(&srv.url())))
        })
        .collect();
    // One fixed time: every admission falls in one window.
    let now = SystemTime::now();
    let admitted_n = Arc::new(AtomicU64::new(0));
    let actual_tokens = Arc::new(AtomicU64::new(0));
    let settled_cost = Arc::new(Mutex::new(0.0f64));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (_, e, w) = &sidecars[(t % 3) as usize];
        let (e, w) = (e.clone(), w.clone());
        let (admitted_n, actual_tokens, settled_cost, rejected) = (
            admitted_n.clone(),
            actual_tokens.clone(),
            settled_cost.clone(),
            rejected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..40u64 {
                let d = req(now).tokens(INPUT, RESERVED_OUT).admit(&e).await;
                let Some(r) = d.into_reservation() else {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                assert!(!r.is_local());
                admitted_n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis((t + i) % 3)).await;
                let out = (t * 7 + i * 13) % 200;
                let cost = (INPUT + out) as f64 * 1e-6;
                r.settle(INPUT, out, cost).await;
                actual_tokens.fetch_add(INPUT + out, Ordering::Relaxed);
                *settled_cost.lock().unwrap() += cost;
                w.record(record("gpt-4o", INPUT, out, cost));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = srv.conn().await;
    let counter: u64 = c.get(minute_key("shared", "ns", "tpm", now)).await.unwrap();
    let actual = actual_tokens.load(Ordering::Relaxed);
    let n = admitted_n.load(Ordering::Relaxed);
    // The shared counter is exactly what the admitted calls used.
    assert_eq!(counter, actual);
    // Reservations never pass the limit; only answers longer than their
    // reservation can, by at most what was in flight.
    assert!(
        actual <= LIMIT + TASKS * MAX_OVERSHOOT,
        "{actual} tokens used against {LIMIT}"
    );
    // The budget was the constraint: most of it was used, much was refused.
    assert!(actual > LIMIT / 2, "{actual}");
    assert!(rejected.load(Ordering::Relaxed) > 0);
    for (rt, _, _) in &sidecars {
        assert_eq!(rt.store().stats().local_admissions, 0);
    }
    // Every settled cost is in the usage stream.
    for (_, _, w) in &sidecars {
        let s = w.shutdown(Duration::from_secs(5)).await;
        assert_eq!((s.dropped, s.queued), (0, 0));
    }
    let records = read_records(
        &mut c,
        USAGE_STREAM,
        SystemTime::now() - Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert_eq!(records.len() as u64, n);
    let streamed: f64 = records.iter().map(|r| r.cost_usd).sum();
    let settled = *settled_cost.lock().unwrap();
    assert!((streamed - settled).abs() < 1e-9, "{streamed} vs {settled}");
    let rows = aggregate(&records, GroupBy::Model);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].input_tokens + rows[0].output_tokens, actual);
}

#[derive(Default)]
struct Tally {
    open_local: AtomicU64,
    open_shared: AtomicU64,
    open_rejected: AtomicU64,
    strict_unavailable: AtomicU64,
    strict_allowed: AtomicU64,
}

/// Redis killed and restarted under load: no panic, the `local` quota
/// keeps serving on local counts, the `fail-closed` one refuses with 503,
/// both shared again once Redis is back, counters consistent after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let Some(mut srv) = RedisServer::start() else {
        return;
    };
    let yaml = quota(
        "open",
        "  models: [\"gpt-4o*\"]\n  limits: {requestsPerMinute: 1000000, tokensPerMinute: 100000000, concurrentRequests: 64}",
    ) + &quota(
        "strict",
        "  models: [\"claude*\"]\n  limits: {requestsPerMinute: 1000000}\n  onStoreUnavailable: fail-closed",
    );
    let rt = redis_runtime(&srv.url(), |c| {
        c.probe_interval = Duration::from_millis(100);
        // Loaded CI machines: a healthy Redis must not look dead.
        c.command_timeout = Duration::from_millis(500);
        c.connect_timeout = Duration::from_millis(200);
    });
    let e = Arc::new(engine(&rt, &yaml));
    let now = SystemTime::now();
    // 0 healthy, 1 killed (calls in flight end), 2 down, 3 restarting,
    // 4 healthy again, 5 stop.
    let phase = Arc::new(AtomicU8::new(0));
    let tallies: Arc<[Tally; 5]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (e, phase, tallies) = (e.clone(), phase.clone(), tallies.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let p = phase.load(Ordering::Acquire);
                if p == 5 {
                    return;
                }
                let t = &tallies[p as usize];
                match req(now).tokens(10, 10).admit(&e).await {
                    Decision::Allow(r) => {
                        if r.is_local() {
                            t.open_local.fetch_add(1, Ordering::Relaxed);
                        } else {
                            t.open_shared.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        r.settle(10, 5, 0.0).await;
                    }
                    _ => {
                        t.open_rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // The phase may have moved on meanwhile.
                let p = phase.load(Ordering::Acquire).min(4);
                let t = &tallies[p as usize];
                match req(now).model("claude-3").admit(&e).await {
                    Decision::Reject(rej) if rej.reason == RejectReason::StoreUnavailable => {
                        assert_eq!(rej.status(), 503);
                        t.strict_unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    Decision::Reject(rej) => panic!("unexpected {rej:?}"),
                    d => {
                        t.strict_allowed.fetch_add(1, Ordering::Relaxed);
                        d.into_reservation().unwrap().settle(1, 1, 0.0).await;
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.store(1, Ordering::Release);
    srv.kill();
    // Let the requests in flight at the kill finish before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.store(2, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(700)).await;
    phase.store(3, Ordering::Release);
    srv.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rt.store().stats().degraded {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    phase.store(4, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.store(5, Ordering::Release);
    for t in tasks {
        t.await.expect("no task panicked");
    }

    let get = |p: usize, f: fn(&Tally) -> &AtomicU64| f(&tallies[p]).load(Ordering::Relaxed);
    for p in 0..5 {
        eprintln!(
            "phase {p}: open local {} shared {} rejected {}; strict unavailable {} allowed {}",
            get(p, |t| &t.open_local),
            get(p, |t| &t.open_shared),
            get(p, |t| &t.open_rejected),
            get(p, |t| &t.strict_unavailable),
            get(p, |t| &t.strict_allowed)
        );
    }
    eprintln!("{:?}", rt.store().stats());
    // Healthy: shared counts.
    assert!(get(0, |t| &t.open_shared) > 0);
    assert!(get(0, |t| &t.strict_allowed) > 0);
    // Down: the local quota serves on local counts; the fail-closed one
    // refuses every request; nothing is shared.
    assert!(get(2, |t| &t.open_local) > 0);
    assert_eq!(get(2, |t| &t.open_shared), 0);
    assert!(get(2, |t| &t.strict_unavailable) > 0);
    assert_eq!(get(2, |t| &t.strict_allowed), 0);
    // The local quota never refused anything, at any time.
    assert!((0..5).all(|p| get(p, |t| &t.open_rejected) == 0));
    // Back: shared again, fail-closed serves again.
    assert!(get(4, |t| &t.open_shared) > 0);
    assert_eq!(get(4, |t| &t.open_local), 0);
    assert_eq!(get(4, |t| &t.strict_unavailable), 0);
    assert!(get(4, |t| &t.strict_allowed) > 0);
    // Transitions are counted (and logged) once each, not per request: one
    // down and one up, or a few more when a reconnect that started while
    // Redis was down fails just after the recovery.
    let s = rt.store().stats();
    assert!(
        s.transitions >= 2 && s.transitions <= 6 && s.transitions % 2 == 0,
        "{s:?}"
    );
    assert!(s.errors > 0 && s.local_admissions > 0 && s.fail_closed_refusals > 0);

    // Counters are consistent: no slot left taken, no negative counter,
    // and new admissions count exactly.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = srv.conn().await;
    let conc = format!("llmesh:q:{{{NS}}}:open:ns:conc");
    assert_eq!(c.zcard::<_, i64>(&conc).await.unwrap(), 0);
    let keys: Vec<String> = c.keys("llmesh:q:*").await.unwrap();
    for k in keys.iter().filter(|k| !k.ends_with(":conc")) {
        let v: i64 = c.get(k).await.unwrap();
        assert!(v >= 0, "{k} = {v}");
    }
    let rpm = minute_key("open", "ns", "rpm", now);
    let before: i64 = c.get(&rpm).await.unwrap();
    for _ in 0..5 {
        let r = admitted(req(now).admit(&e).await);
        assert!(!r.is_local());
        r.settle(1, 1, 0.0).await;
    }
    assert_eq!(c.get::<_, i64>(&rpm).await.unwrap(), before + 5);
    assert_eq!(c.zcard::<_, i64>(&conc).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_held_during_an_outage_are_replayed() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let rt = redis_runtime(&srv.url(), |c| {
        c.probe_interval = Duration::from_millis(50);
    });
    let e = engine(
        &rt,
        &quota(
            "t",
            "  limits: {tokensPerMinute: 100000, concurrentRequests: 5}",
        ),
    );
    let now = SystemTime::now();
    let r = admitted(req(now).tokens(100, 200).admit(&e).await);
    assert!(!r.is_local());
    let mut c = srv.conn().await;
    // Every client's commands wait 400 ms: the settle times out.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .arg("ALL")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    r.settle(100, 20, 0.0).await;
    let s = rt.store().stats();
    assert!(s.degraded);
    assert_eq!(s.pending_settlements, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The next admission probes Redis, finds it back and replays.
    let r2 = admitted(req(now).tokens(1, 1).admit(&e).await);
    assert!(!r2.is_local());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rt.store().stats().pending_settlements > 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r2.settle(1, 1, 0.0).await;
    let tpm = minute_key("t", "ns", "tpm", now);
    assert_eq!(c.get::<_, i64>(&tpm).await.unwrap(), 122);
    let conc = format!("llmesh:q:{{{NS}}}:t:ns:conc");
    assert_eq!(c.zcard::<_, i64>(&conc).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fallback_enforces_a_share_of_each_limit() {
    let Some(mut srv) = RedisServer::start() else {
        return;
    };
    let rt = redis_runtime(&srv.url(), |c| c.local_share_divisor = 3);
    let e = engine(&rt, &quota("q", "  limits: {requestsPerMinute: 9}"));
    srv.kill();
    let now = SystemTime::now();
    for _ in 0..3 {
        assert!(admitted(req(now).admit(&e).await).is_local());
    }
    assert!(is_reject(&req(now).admit(&e).await));
    assert_eq!(rt.store().stats().transitions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_sidecars_slots_drain_with_their_lease() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let crashed = redis_runtime(&srv.url(), |c| c.lease = Duration::from_millis(300));
    let alive = redis_runtime(&srv.url(), |_| {});
    let yaml = quota("q", "  limits: {concurrentRequests: 1}");
    let (e1, e2) = (engine(&crashed, &yaml), engine(&alive, &yaml));
    // A sidecar dies holding the only slot: no settle, no release.
    std::mem::forget(admitted(req(SystemTime::now()).admit(&e1).await));
    assert!(is_reject(&req(SystemTime::now()).admit(&e2).await));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = admitted(req(SystemTime::now()).admit(&e2).await);
    r.settle(1, 1, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reservation_frees_its_shared_slot() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let rt = redis_runtime(&srv.url(), |_| {});
    let e = engine(&rt, &quota("q", "  limits: {concurrentRequests: 1}"));
    drop(admitted(req(SystemTime::now()).admit(&e).await));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match req(SystemTime::now()).admit(&e).await.into_reservation() {
            Some(r) => {
                r.settle(1, 1, 0.0).await;
                break;
            }
            None => assert!(std::time::Instant::now() < deadline, "slot never freed"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const PROVIDER: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  schema: openai
  limits: {requestsPerMinute: 10, headroomPercent: 20}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_pacing_is_shared() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let (a, b) = (
        redis_runtime(&srv.url(), |_| {}),
        redis_runtime(&srv.url(), |_| {}),
    );
    let (ea, eb) = (engine(&a, PROVIDER), engine(&b, PROVIDER));
    let now = SystemTime::now();
    for _ in 0..4 {
        assert_eq!(
            ea.record_provider("openai", 1, 0, now).await,
            ProviderBudget::Available
        );
    }
    for _ in 0..3 {
        assert_eq!(
            eb.record_provider("openai", 1, 0, now).await,
            ProviderBudget::Available
        );
    }
    // The 8th call of the minute (of 10, less 20%) uses the budget up.
    assert!(matches!(
        eb.record_provider("openai", 1, 0, now).await,
        ProviderBudget::Exhausted { .. }
    ));
    assert!(matches!(
        eb.provider_budget("openai", now),
        ProviderBudget::Exhausted { .. }
    ));
    // Sidecar A learns it on its next call.
    assert!(matches!(
        ea.record_provider("openai", 1, 0, now).await,
        ProviderBudget::Exhausted { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_records_delivered_held_and_flushed() {
    let Some(mut srv) = RedisServer::start() else {
        return;
    };
    let mut c = srv.conn().await;
    let w = writer(&srv.url());
    for i in 0..100 {
        w.record(record("gpt-4o", i, 1, 0.001));
    }
    let s = w.shutdown(Duration::from_secs(5)).await;
    assert_eq!((s.delivered, s.dropped, s.queued), (100, 0, 0));
    assert_eq!(c.xlen::<_, u64>(USAGE_STREAM).await.unwrap(), 100);
    // Records after shutdown are refused, and counted.
    w.record(record("gpt-4o", 1, 1, 0.0));
    assert_eq!(w.stats().dropped, 1);

    // Redis down: records are held and retried, delivered once it is back.
    let w = writer(&srv.url());
    srv.kill();
    for _ in 0..20 {
        w.record(record("claude-3", 1, 1, 0.01));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.stats().failed_writes > 0);
    assert_eq!(w.stats().queued, 20);
    srv.restart();
    let s = w.shutdown(Duration::from_secs(10)).await;
    assert_eq!((s.delivered, s.dropped), (20, 0));
    let mut c = srv.conn().await;
    assert_eq!(c.xlen::<_, u64>(USAGE_STREAM).await.unwrap(), 20);

    // Still down at shutdown: what could not be delivered is counted.
    let w = writer(&srv.url());
    srv.kill();
    for _ in 0..7 {
        w.record(record("claude-3", 1, 1, 0.01));
    }
    let s = w.shutdown(Duration::from_millis(300)).await;
    assert_eq!((s.delivered, s.dropped, s.queued), (0, 7, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_records_read_back_as_written() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let w = writer(&srv.url());
    let mut r = record("gpt-4o", 1200, 345, 0.004_215);
    // Records carry milliseconds.
    r.ts = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms(SystemTime::now()));
    r.cached_input_tokens = 1000;
    r.cache_write_input_tokens = 150;
    r.status = 499;
    r.caller_hash = Some(llmesh_quota::CallerHasher::new(b"k").hash("alice@example.com"));
    w.record(r.clone());
    w.shutdown(Duration::from_secs(5)).await;
    let mut c = srv.conn().await;
    let back = read_records(
        &mut c,
        USAGE_STREAM,
        SystemTime::now() - Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(back, vec![r]);
    // No field holds the caller's name.
    let raw: redis::Value = redis::cmd("XRANGE")
        .arg(USAGE_STREAM)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!format!("{raw:?}").contains("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_buffer_is_bounded() {
    let Some(mut srv) = RedisServer::start() else {
        return;
    };
    let mut cfg = UsageConfig::default();
    cfg.redis.url = srv.url();
    cfg.buffer = 5;
    srv.kill();
    let w = UsageWriter::new(cfg).unwrap();
    for _ in 0..12 {
        w.record(record("m", 1, 1, 0.0));
    }
    let s = w.stats();
    assert_eq!(s.queued + s.dropped, 12);
    assert!(s.queued <= 5);
    let s = w.shutdown(Duration::from_millis(100)).await;
    assert_eq!(s.dropped, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llmesh_cost_prints_spend() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let w = writer(&srv.url());
    w.record(record("gpt-4o", 100, 50, 0.25));
    w.record(record("gpt-4o", 100, 50, 0.25));
    let mut other = record("gpt-4o-mini", 10, 5, 0.01);
    other.workload = "search".into();
    other.status = 429;
    w.record(other);
    w.shutdown(Duration::from_secs(5)).await;
    let run = |by: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmesh"))
            .args(["cost", "--redis", &srv.url(), "--since", "1h", "--by", by])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let by_model = run("model");
    assert!(by_model.starts_with("3 usage records"), "{by_model}");
    let line = by_model.lines().find(|l| l.starts_with("gpt-4o ")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, ["gpt-4o", "2", "0", "200", "100", "0.500000"]);
    let by_workload = run("workload");
    assert!(by_workload.contains("team-a/search"), "{by_workload}");
    let total = by_workload.lines().last().unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["TOTAL", "3", "1", "210", "105", "0.510000"]
    );
}
