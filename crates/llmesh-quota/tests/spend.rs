//! `spend`: the controller's read-back of the counters the sidecars write,
//! against a real redis-server. Usage is counted by the engine itself
//! (admit, then settle), so the reader and the writer share one format.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::SystemTime;

use llmesh_policy::compile;
use llmesh_quota::spend::{claim_alert, read_spend, unclaim_alert, LimitSpend};
use llmesh_quota::{
    unix_ms, AnyStore, CallerHasher, LimitName, QuotaRuntime, RedisConfig, RedisStore, Rule, Window,
};
use redis::AsyncCommands;
use support::*;

fn redis_runtime(url: &str) -> QuotaRuntime {
    let cfg = RedisConfig {
        url: url.to_string(),
        ..RedisConfig::default()
    };
    QuotaRuntime::new(AnyStore::Redis(RedisStore::new(cfg).unwrap()))
}

/// The compiled rule of quota `name` in `yaml`.
fn rule(yaml: &str, name: &str) -> Rule {
    let docs = llmesh_api::parse_documents(yaml).unwrap();
    let (snap, errors) = compile(&docs, NS, &llmesh_policy::EnvFileSecrets::default());
    assert!(errors.is_empty(), "{errors:?}");
    let q = snap.quotas.iter().find(|q| q.name == name).unwrap();
    Rule::from_quota(q)
}

fn limit(spend: &[LimitSpend], name: LimitName) -> &LimitSpend {
    spend.iter().find(|l| l.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_quota_reads_one_counter_per_limit() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let rt = redis_runtime(&srv.url());
    let yaml = quota(
        "budget",
        "  limits: {costPerDay: \"10\", tokensPerDay: 100000, requestsPerMinute: 100, concurrentRequests: 5}",
    );
    let e = engine(&rt, &yaml);
    let r = rule(&yaml, "budget");
    let now = SystemTime::now();
    let mut c = srv.conn().await;

    // Nothing used yet: every limit reads 0, the closest is the cost.
    let s = read_spend(&mut c, &r, unix_ms(now)).await.unwrap();
    assert!(
        s.limits.iter().all(|l| l.used == 0 && l.scopes == 0),
        "{s:?}"
    );
    assert_eq!(s.closest().unwrap().name, LimitName::CostPerDay);

    admitted(req(now).tokens(100, 200).cost(1.0).admit(&e).await)
        .settle(100, 300, 2.5)
        .await;
    let held = admitted(req(now).tokens(10, 10).cost(0.5).admit(&e).await);

    let s = read_spend(&mut c, &r, unix_ms(now)).await.unwrap();
    let cost = limit(&s.limits, LimitName::CostPerDay);
    assert_eq!(
        (cost.used, cost.max, cost.scopes),
        (3_000_000, 10_000_000, 1)
    );
    assert_eq!(cost.window, Some(Window::Day.bounds(unix_ms(now))));
    assert_eq!(limit(&s.limits, LimitName::TokensPerDay).used, 420);
    assert_eq!(limit(&s.limits, LimitName::RequestsPerMinute).used, 2);
    let conc = limit(&s.limits, LimitName::ConcurrentRequests);
    assert_eq!((conc.used, conc.window), (1, None));
    // 30% of the money is closer to its limit than 1 of 5 slots.
    assert_eq!(s.closest().unwrap().name, LimitName::CostPerDay);

    held.settle(10, 10, 0.5).await;
    let s = read_spend(&mut c, &r, unix_ms(now)).await.unwrap();
    assert_eq!(limit(&s.limits, LimitName::ConcurrentRequests).used, 0);
    // The next day's window is another counter.
    let tomorrow = unix_ms(now) + 86_400_000;
    let s = read_spend(&mut c, &r, tomorrow).await.unwrap();
    assert_eq!(limit(&s.limits, LimitName::CostPerDay).used, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_quotas_report_the_busiest_id_and_how_many_used_it() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let rt = redis_runtime(&srv.url());
    let yaml = format!(
        "{}{}{}",
        quota(
            "per-app",
            "  scope: workload\n  limits: {tokensPerMinute: 1000, concurrentRequests: 4}"
        ),
        // Same prefix, different quota: never read as one of per-app's.
        quota(
            "per-app-2",
            "  scope: workload\n  limits: {tokensPerMinute: 1000}"
        ),
        quota(
            "per-user",
            "  scope: caller\n  limits: {requestsPerMinute: 10}"
        ),
    );
    let e = engine(&rt, &yaml);
    let now = SystemTime::now();
    let h = CallerHasher::new(b"k");
    let mut held = Vec::new();
    for (w, tokens, user) in [
        ("checkout", 300, "ann"),
        ("search", 700, "bob"),
        ("search", 50, "bob"),
    ] {
        let r = admitted(
            req(now)
                .workload(w)
                .tokens(tokens, 0)
                .caller("x-llmesh-user", h.hash(user))
                .admit(&e)
                .await,
        );
        held.push((r, tokens));
    }
    let mut c = srv.conn().await;
    let s = read_spend(&mut c, &rule(&yaml, "per-app"), unix_ms(now))
        .await
        .unwrap();
    let tpm = limit(&s.limits, LimitName::TokensPerMinute);
    assert_eq!((tpm.used, tpm.scopes), (750, 2));
    let conc = limit(&s.limits, LimitName::ConcurrentRequests);
    assert_eq!((conc.used, conc.scopes), (2, 2));
    let s = read_spend(&mut c, &rule(&yaml, "per-user"), unix_ms(now))
        .await
        .unwrap();
    let rpm = limit(&s.limits, LimitName::RequestsPerMinute);
    assert_eq!((rpm.used, rpm.scopes), (2, 2));

    for (r, tokens) in held {
        r.settle(tokens, 0, 0.0).await;
    }
    let s = read_spend(&mut c, &rule(&yaml, "per-app"), unix_ms(now))
        .await
        .unwrap();
    assert_eq!(limit(&s.limits, LimitName::ConcurrentRequests).used, 0);
    assert_eq!(limit(&s.limits, LimitName::TokensPerMinute).used, 750);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_claimed_once_per_period_and_can_be_given_back() {
    let Some(srv) = RedisServer::start() else {
        return;
    };
    let yaml = quota("budget", "  limits: {costPerDay: \"10\"}");
    let r = rule(&yaml, "budget");
    let now = unix_ms(SystemTime::now());
    let mut c = srv.conn().await;
    assert!(claim_alert(&mut c, &r, LimitName::CostPerDay, 80, now)
        .await
        .unwrap());
    assert!(
        !claim_alert(&mut c, &r, LimitName::CostPerDay, 80, now + 1000)
            .await
            .unwrap()
    );
    // Another threshold, another day: separate claims.
    assert!(claim_alert(&mut c, &r, LimitName::CostPerDay, 100, now)
        .await
        .unwrap());
    assert!(
        claim_alert(&mut c, &r, LimitName::CostPerDay, 80, now + 86_400_000)
            .await
            .unwrap()
    );
    // The marker expires a minute after the day ends.
    let key = llmesh_quota::spend::alert_key(&r, LimitName::CostPerDay, 80, now);
    let ttl: i64 = c.pttl(&key).await.unwrap();
    let end = Window::Day.bounds(now).1;
    assert!(ttl > 0 && ttl as u64 <= end - now + 60_000, "{ttl}");

    unclaim_alert(&mut c, &r, LimitName::CostPerDay, 80, now)
        .await
        .unwrap();
    assert!(claim_alert(&mut c, &r, LimitName::CostPerDay, 80, now)
        .await
        .unwrap());
}
