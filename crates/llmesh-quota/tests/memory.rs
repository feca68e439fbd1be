//! The engine over the memory store: every limit kind, scope and action,
//! windows, thresholds, settlements and released reservations, with the
//! clock passed in.
#![allow(clippy::unwrap_used)]
// Reservations of requests whose slot does not matter are dropped at once.
#![allow(unused_must_use)]

mod support;

use std::time::Duration;

use llmesh_quota::{
    CallerHasher, Decision, LimitName, ProviderBudget, QuotaStore, RejectReason, Unit,
};
use support::*;

fn rejection(d: Decision) -> llmesh_quota::Rejection {
    match d {
        Decision::Reject(r) => r,
        other => panic!("expected a rejection, got {}", other.label()),
    }
}

#[tokio::test]
async fn requests_per_minute_reject_then_roll_over() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("rpm", "  limits: {requestsPerMinute: 3}"));
    for i in 0..3 {
        let r = admitted(req(at(10.0 + f64::from(i))).admit(&e).await);
        drop(r.settle(10, 20, 0.0).await);
    }
    let rej = rejection(req(at(20.0)).admit(&e).await);
    assert_eq!(rej.status(), 429);
    assert_eq!(rej.reason, RejectReason::LimitReached);
    assert_eq!(rej.limit.limit, LimitName::RequestsPerMinute);
    assert_eq!(&*rej.limit.quota, "rpm");
    // The minute started at 0 s: 40 s left.
    assert_eq!(rej.retry_after, Duration::from_secs(40));
    let h = rej.headers();
    let get = |k: &str| h.iter().find(|(n, _)| *n == k).unwrap().1.clone();
    assert_eq!(get("retry-after"), "40");
    assert_eq!(get("x-ratelimit-limit-requests"), "3");
    assert_eq!(get("x-ratelimit-remaining-requests"), "0");
    assert_eq!(get("x-ratelimit-reset-requests"), "40s");
    assert_eq!(get("x-llmesh-quota"), "rpm/requestsPerMinute");
    // The next minute is a new window.
    admitted(req(at(60.0)).admit(&e).await);
}

#[tokio::test]
async fn requests_per_second() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("rps", "  limits: {requestsPerSecond: 2}"));
    let _a = admitted(req(at(1.1)).admit(&e).await);
    let _b = admitted(req(at(1.5)).admit(&e).await);
    let rej = rejection(req(at(1.9)).admit(&e).await);
    assert_eq!(rej.retry_after, Duration::from_millis(100));
    assert_eq!(rej.headers()[0], ("retry-after", "1".to_string()));
    admitted(req(at(2.0)).admit(&e).await);
}

#[tokio::test]
async fn tokens_per_minute_reserve_and_settle() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("tpm", "  limits: {tokensPerMinute: 1000}"));
    // 100 in + 500 reserved out.
    let a = admitted(req(at(1.0)).tokens(100, 500).admit(&e).await);
    // 600 used: another 600 does not fit.
    assert!(is_reject(&req(at(2.0)).tokens(100, 500).admit(&e).await));
    // The first call used only 100 + 50: 450 come back.
    a.settle(100, 50, 0.0).await;
    let b = admitted(req(at(3.0)).tokens(100, 500).admit(&e).await);
    // Now 750 counted: 250 left.
    let rate = b.rate_limit().unwrap();
    assert_eq!(
        (rate.limit, rate.remaining, rate.unit),
        (1000, 250, Unit::Tokens)
    );
    // A call that used more than reserved counts what it used.
    b.settle(100, 800, 0.0).await;
    let rej = rejection(req(at(4.0)).tokens(1, 0).admit(&e).await);
    assert_eq!(rej.rate.unwrap().remaining, 0);
    // Next minute.
    admitted(req(at(61.0)).tokens(100, 500).admit(&e).await);
}

#[tokio::test]
async fn token_kinds_count_input_or_output_only() {
    let rt = memory_runtime();
    let yaml = quota("in", "  limits: {tokensPerDay: 100, tokenKind: input}")
        + &quota("out", "  limits: {tokensPerDay: 1000, tokenKind: output}");
    let e = engine(&rt, &yaml);
    // Output does not count against "in".
    let r = admitted(req(at(0.0)).tokens(90, 900).admit(&e).await);
    let rej = rejection(req(at(1.0)).tokens(20, 0).admit(&e).await);
    assert_eq!(&*rej.limit.quota, "in");
    r.settle(10, 100, 0.0).await;
    // Input 10 of 100 used, output 100 of 1000.
    let rej = rejection(req(at(2.0)).tokens(0, 901).admit(&e).await);
    assert_eq!(&*rej.limit.quota, "out");
    admitted(req(at(3.0)).tokens(90, 900).admit(&e).await);
}

#[tokio::test]
async fn cost_per_day_with_and_without_estimates() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("spend", "  limits: {costPerDay: \"1.00\"}"));
    // Estimated 0.60 reserved: another 0.60 does not fit.
    let a = admitted(req(at(0.0)).cost(0.60).admit(&e).await);
    assert!(is_reject(&req(at(1.0)).cost(0.60).admit(&e).await));
    // It cost 0.10.
    a.settle(10, 20, 0.10).await;
    let b = admitted(req(at(2.0)).cost(0.60).admit(&e).await);
    // Without an estimate, requests pass until the spend reaches the limit.
    let c = admitted(req(at(3.0)).admit(&e).await);
    b.settle(10, 20, 0.60).await;
    c.settle(10, 20, 0.30).await;
    // 1.00 spent: a zero estimate is refused now.
    let rej = rejection(req(at(4.0)).admit(&e).await);
    assert_eq!(rej.limit.limit, LimitName::CostPerDay);
    let h = rej.headers();
    assert!(
        h.contains(&("x-ratelimit-limit-cost-usd", "1.000000".into())),
        "{h:?}"
    );
    // The next UTC day (at(0) is 10:00).
    admitted(req(at(14.0 * 3600.0)).admit(&e).await);
}

#[tokio::test]
async fn cost_per_month_spans_days() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("month", "  limits: {costPerMonth: \"5\"}"));
    for day in 0..5 {
        let r = admitted(req(at(f64::from(day) * 86_400.0)).admit(&e).await);
        r.settle(1, 1, 1.0).await;
    }
    // 5 USD spent by Nov 26; Dec 1 is 8 days and 14 hours after at(0).
    assert!(is_reject(&req(at(6.0 * 86_400.0)).admit(&e).await));
    admitted(req(at(8.0 * 86_400.0 + 14.0 * 3600.0)).admit(&e).await);
}

#[tokio::test]
async fn concurrency_slots_free_on_settle_and_on_drop() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("conc", "  limits: {concurrentRequests: 2}"));
    let a = admitted(req(at(0.0)).admit(&e).await);
    let b = admitted(req(at(0.0)).admit(&e).await);
    let rej = rejection(req(at(0.0)).admit(&e).await);
    assert_eq!(rej.limit.limit, LimitName::ConcurrentRequests);
    assert_eq!(rej.retry_after, Duration::from_secs(1));
    a.settle(1, 1, 0.0).await;
    let c = admitted(req(at(0.0)).admit(&e).await);
    // The client went away: dropping the reservation frees its slot.
    drop(b);
    drop(c);
    let _d = admitted(req(at(0.0)).admit(&e).await);
    let _e = admitted(req(at(0.0)).admit(&e).await);
    assert!(is_reject(&req(at(0.0)).admit(&e).await));
}

#[tokio::test]
async fn dropped_reservation_keeps_tokens_counted() {
    let rt = memory_runtime();
    let e = engine(
        &rt,
        &quota(
            "t",
            "  limits: {tokensPerMinute: 100, concurrentRequests: 1}",
        ),
    );
    drop(admitted(req(at(0.0)).tokens(30, 30).admit(&e).await));
    // The slot is free, the 60 tokens stay: usage is unknown, not zero.
    let r = admitted(req(at(1.0)).tokens(20, 20).admit(&e).await);
    assert_eq!(r.rate_limit().unwrap().remaining, 0);
}

#[tokio::test]
async fn scopes_namespace_workload_pod_caller() {
    let rt = memory_runtime();
    let yaml = quota("ns", "  limits: {requestsPerMinute: 4}")
        + &quota("wl", "  scope: workload\n  limits: {requestsPerMinute: 2}")
        + &quota("pod", "  scope: pod\n  limits: {requestsPerMinute: 3}")
        + &quota(
            "user",
            "  scope: caller\n  callerHeader: x-team-user\n  limits: {requestsPerMinute: 1}",
        );
    let e = engine(&rt, &yaml);
    assert_eq!(e.caller_headers().len(), 1);
    assert_eq!(&*e.caller_headers()[0], "x-team-user");
    let h = CallerHasher::new(b"test-key");
    let (alice, bob) = (h.hash("alice"), h.hash("bob"));
    let now = at(0.0);
    // Each caller has one request a minute.
    admitted(req(now).caller("x-team-user", alice).admit(&e).await);
    let rej = rejection(req(now).caller("x-team-user", alice).admit(&e).await);
    assert_eq!(&*rej.limit.quota, "user");
    // Bob has his own; the workload's 2 are now used.
    admitted(req(now).caller("x-team-user", bob).admit(&e).await);
    let rej = rejection(
        req(now)
            .caller("x-team-user", h.hash("carol"))
            .admit(&e)
            .await,
    );
    assert_eq!(&*rej.limit.quota, "wl");
    // Another workload: own workload budget; requests without the header
    // share one caller budget.
    admitted(req(now).workload("search").pod("search-1").admit(&e).await);
    let rej = rejection(req(now).workload("search").pod("search-2").admit(&e).await);
    assert_eq!(&*rej.limit.quota, "user");
    // A third workload: 3 of the namespace's 4 are used, one left.
    admitted(
        req(now)
            .workload("batch")
            .pod("batch-1")
            .caller("x-team-user", h.hash("dan"))
            .admit(&e)
            .await,
    );
    let rej = rejection(
        req(now)
            .workload("batch")
            .pod("batch-1")
            .caller("x-team-user", h.hash("erin"))
            .admit(&e)
            .await,
    );
    assert_eq!(&*rej.limit.quota, "ns");
}

#[tokio::test]
async fn pod_scope_counts_per_pod() {
    let rt = memory_runtime();
    let e = engine(
        &rt,
        &quota("pod", "  scope: pod\n  limits: {requestsPerMinute: 1}"),
    );
    admitted(req(at(0.0)).pod("a").admit(&e).await);
    admitted(req(at(0.0)).pod("b").admit(&e).await);
    assert!(is_reject(&req(at(0.0)).pod("a").admit(&e).await));
}

#[tokio::test]
async fn workloads_and_models_narrow_a_quota() {
    let rt = memory_runtime();
    let e = engine(
        &rt,
        &quota(
            "narrow",
            "  workloads: [checkout]\n  models: [\"gpt-4o*\", claude-3]\n  limits: {requestsPerMinute: 1}",
        ),
    );
    admitted(req(at(0.0)).model("gpt-4o-mini").admit(&e).await);
    assert!(is_reject(&req(at(0.0)).model("gpt-4o").admit(&e).await));
    assert!(is_reject(&req(at(0.0)).model("claude-3").admit(&e).await));
    // Not covered: another model, another workload.
    let r = admitted(req(at(0.0)).model("claude-3-5").admit(&e).await);
    assert!(r.is_empty());
    admitted(req(at(0.0)).workload("search").admit(&e).await);
}

#[tokio::test]
async fn downgrade_routes_to_the_cheaper_model() {
    let rt = memory_runtime();
    let yaml = quota(
        "big",
        "  models: [\"gpt-4o\"]\n  limits: {requestsPerMinute: 1}\n  action: downgrade\n  downgradeTo: gpt-4o-mini",
    ) + &quota("mini", "  models: [gpt-4o-mini]\n  limits: {requestsPerMinute: 2}");
    let e = engine(&rt, &yaml);
    let first = req(at(0.0)).admit(&e).await;
    assert!(matches!(first, Decision::Allow(_)));
    match req(at(1.0)).admit(&e).await {
        Decision::Downgrade {
            to_model,
            by,
            reservation,
        } => {
            assert_eq!(&*to_model, "gpt-4o-mini");
            assert_eq!(
                reservation.downgraded_to().map(|m| &**m),
                Some("gpt-4o-mini")
            );
            assert_eq!(&*by.quota, "big");
        }
        other => panic!("expected a downgrade, got {}", other.label()),
    }
    // The downgraded request counted against the mini quota: one left.
    admitted(req(at(2.0)).model("gpt-4o-mini").admit(&e).await);
    // Both full: the downgrade is refused by the mini quota.
    let rej = rejection(req(at(3.0)).admit(&e).await);
    assert_eq!(&*rej.limit.quota, "mini");
}

#[tokio::test]
async fn a_downgrade_raises_the_full_quotas_alerts() {
    let rt = memory_runtime();
    let e = engine(
        &rt,
        &quota(
            "big",
            "  models: [\"gpt-4o\"]\n  limits: {tokensPerMinute: 100}\n  action: downgrade\n  downgradeTo: gpt-4o-mini",
        ),
    );
    let first = admitted(req(at(0.0)).tokens(30, 30).admit(&e).await);
    assert!(first.alerts().is_empty());
    let Decision::Downgrade { reservation, .. } = req(at(1.0)).tokens(30, 30).admit(&e).await
    else {
        panic!("expected a downgrade")
    };
    let t: Vec<(&str, u32)> = reservation
        .alerts()
        .iter()
        .map(|a| (&*a.limit.quota, a.threshold))
        .collect();
    assert_eq!(t, [("big", 80), ("big", 100)]);
}

#[tokio::test]
async fn warn_serves_and_reports_the_excess() {
    let rt = memory_runtime();
    let e = engine(
        &rt,
        &quota("soft", "  limits: {requestsPerMinute: 1}\n  action: warn"),
    );
    assert!(matches!(req(at(0.0)).admit(&e).await, Decision::Allow(_)));
    for _ in 0..3 {
        match req(at(1.0)).admit(&e).await {
            Decision::Warn { exceeded, .. } => {
                assert_eq!(exceeded.len(), 1);
                assert_eq!(exceeded[0].limit, LimitName::RequestsPerMinute);
            }
            other => panic!("expected warn, got {}", other.label()),
        }
    }
    let u = e.usage(at(2.0));
    assert_eq!(u[0].used, 4);
    assert!((u[0].ratio - 4.0).abs() < 1e-9);
}

#[tokio::test]
async fn reject_wins_over_downgrade() {
    let rt = memory_runtime();
    let yaml = quota(
        "a-down",
        "  limits: {requestsPerMinute: 1}\n  action: downgrade\n  downgradeTo: small",
    ) + &quota("b-hard", "  limits: {requestsPerMinute: 1}");
    let e = engine(&rt, &yaml);
    admitted(req(at(0.0)).admit(&e).await);
    let rej = rejection(req(at(0.0)).admit(&e).await);
    assert_eq!(&*rej.limit.quota, "b-hard");
}

#[tokio::test]
async fn thresholds_fire_once_per_window() {
    let rt = memory_runtime();
    let e = engine(
        &rt,
        &quota(
            "alerts",
            "  limits: {requestsPerMinute: 10}\n  alertThresholds: [50, 80, 100]",
        ),
    );
    let mut fired = Vec::new();
    for i in 0..10 {
        let r = admitted(req(at(f64::from(i))).admit(&e).await);
        fired.extend(r.alerts().iter().map(|a| (i, a.threshold)));
        r.settle(1, 1, 0.0).await;
    }
    // 5th request reaches 50%, 8th 80%, 10th 100%.
    assert_eq!(fired, vec![(4, 50), (7, 80), (9, 100)]);
    // Refusals do not fire 100% again in this window.
    assert!(rejection(req(at(30.0)).admit(&e).await).alerts.is_empty());
    // A new window fires again.
    let mut again = Vec::new();
    for i in 0..5 {
        let r = admitted(req(at(60.0 + f64::from(i))).admit(&e).await);
        again.extend(r.alerts().iter().map(|a| a.threshold));
    }
    assert_eq!(again, vec![50]);
}

#[tokio::test]
async fn a_refusal_counts_as_reaching_the_limit() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("big", "  limits: {tokensPerMinute: 1000}"));
    admitted(req(at(0.0)).tokens(100, 100).admit(&e).await);
    let rej = rejection(req(at(1.0)).tokens(500, 500).admit(&e).await);
    let t: Vec<u32> = rej.alerts.iter().map(|a| a.threshold).collect();
    assert_eq!(t, vec![80, 100]);
}

#[tokio::test]
async fn settle_corrections_raise_thresholds() {
    let rt = memory_runtime();
    let e = engine(&rt, &quota("t", "  limits: {tokensPerMinute: 100}"));
    let r = admitted(req(at(0.0)).tokens(10, 10).admit(&e).await);
    assert!(r.alerts().is_empty());
    let s = r.settle(10, 85, 0.0).await;
    let t: Vec<u32> = s.alerts.iter().map(|a| a.threshold).collect();
    assert_eq!(t, vec![80]);
    let u = e.usage(at(1.0));
    assert_eq!((u[0].used, u[0].max, u[0].remaining()), (95, 100, 5));
    assert_eq!(u[0].resets_in, Some(Duration::from_secs(59)));
    assert_eq!(u[0].scope, "namespace");
}

#[tokio::test]
async fn hot_reload_keeps_counts() {
    let rt = memory_runtime();
    let e1 = engine(&rt, &quota("q", "  limits: {requestsPerMinute: 2}"));
    admitted(req(at(0.0)).admit(&e1).await);
    admitted(req(at(0.0)).admit(&e1).await);
    // A new snapshot raises the limit: the two already counted stay.
    let e2 = engine(&rt, &quota("q", "  limits: {requestsPerMinute: 3}"));
    admitted(req(at(1.0)).admit(&e2).await);
    assert!(is_reject(&req(at(1.0)).admit(&e2).await));
}

#[tokio::test]
async fn reservation_outlives_its_snapshot() {
    let rt = memory_runtime();
    let e1 = engine(&rt, &quota("q", "  limits: {concurrentRequests: 1}"));
    let r = admitted(req(at(0.0)).admit(&e1).await);
    let e2 = engine(&rt, &quota("q", "  limits: {concurrentRequests: 1}"));
    drop(e1);
    assert!(is_reject(&req(at(0.0)).admit(&e2).await));
    r.settle(1, 1, 0.0).await;
    admitted(req(at(0.0)).admit(&e2).await);
}

#[tokio::test]
async fn no_quota_no_store_call() {
    let rt = memory_runtime();
    let e = engine(&rt, "");
    assert!(e.is_empty());
    let r = admitted(req(at(0.0)).admit(&e).await);
    assert!(r.is_empty());
    assert!(r.settle(1, 1, 1.0).await.alerts.is_empty());
    assert_eq!(rt.store().stats(), Default::default());
}

const PROVIDER: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  schema: openai
  limits: {requestsPerMinute: 10, tokensPerMinute: 1000, headroomPercent: 20}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: free}
spec:
  schema: openai-compatible
  baseUrl: http://127.0.0.1:9/v1
"#;

#[tokio::test]
async fn provider_pacing_keeps_headroom() {
    let rt = memory_runtime();
    let e = engine(&rt, PROVIDER);
    let now = at(5.0);
    // 20% headroom: 8 requests of 10.
    for i in 0..8 {
        assert_eq!(
            e.provider_budget("openai", now),
            ProviderBudget::Available,
            "{i}"
        );
        e.record_provider("openai", 1, 10, now).await;
    }
    let until = at(60.0);
    assert_eq!(
        e.provider_budget("openai", now),
        ProviderBudget::Exhausted { until }
    );
    assert_eq!(
        e.provider_budget("openai", at(60.0)),
        ProviderBudget::Available
    );
    // Tokens: 800 of 1000 with headroom.
    let b = e.record_provider("openai", 0, 800, at(61.0)).await;
    assert_eq!(b, ProviderBudget::Exhausted { until: at(120.0) });
    // A correction below the line frees it again.
    let b = e.record_provider("openai", 0, -100, at(62.0)).await;
    assert_eq!(b, ProviderBudget::Available);
    // Providers without published limits are always available.
    assert_eq!(
        e.record_provider("free", 1000, 1 << 40, now).await,
        ProviderBudget::Available
    );
    assert_eq!(e.provider_budget("unknown", now), ProviderBudget::Available);
}

#[test]
fn admit_future_is_send() {
    fn send<T: Send>(_: T) {}
    let rt = memory_runtime();
    let e = engine(&rt, &quota("q", "  limits: {requestsPerMinute: 2}"));
    let r = req(at(0.0));
    let callers = [];
    let a = llmesh_quota::Admission {
        namespace: NS,
        workload: &r.workload,
        pod: &r.pod,
        callers: &callers,
        model: &r.model,
        input_tokens: 1,
        output_tokens: 1,
        est_cost_usd: 0.0,
        now: r.now,
    };
    send(e.admit(&a));
}
