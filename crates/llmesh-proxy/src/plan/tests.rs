//! The plan driven by hand: outcomes in, steps out, with tokio's clock
//! paused and moved by the tests (no sleeps, no sockets). Each test builds
//! a table from policy YAML, as the sidecar does.

use std::sync::Arc;
use std::time::Duration;

use llmesh_api::{CredentialRef, ErrorClass};
use llmesh_policy::SecretSource;

use super::*;
use crate::clock;
use crate::runtime::Registry;
use crate::upstream::ClientCache;

struct NoKey;

impl SecretSource for NoKey {
    fn resolve(&self, _: &CredentialRef) -> Result<String, llmesh_policy::SecretError> {
        Ok("k".into())
    }
}

const PROVIDERS: &str = "
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: a}
spec: {schema: openai, baseUrl: 'http://127.0.0.1:9/v1', clearance: [email]}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: b}
spec: {schema: openai, baseUrl: 'http://127.0.0.1:9/v1'}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: c}
spec: {schema: anthropic, baseUrl: 'http://127.0.0.1:9/v1'}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: d}
spec: {schema: openai, baseUrl: 'http://127.0.0.1:9/v1'}
";

/// A table with providers a, b, c (Anthropic), d and one route `r` whose
/// spec is `spec` (YAML, indented two spaces).
fn table(spec: &str) -> Arc<Table> {
    let yaml = format!(
        "{PROVIDERS}---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: r}}\nspec:\n  models: [m]\n{spec}\n"
    );
    let docs = llmesh_api::parse_documents(&yaml).unwrap();
    let registry = Registry::default();
    let built = crate::table::build(&docs, "t", None, &NoKey, &ClientCache::new(None), &registry);
    assert!(built.errors.is_empty(), "{:?}", built.errors);
    Arc::new(Table::new(built.compiled, 1, |_| None))
}

fn plan_with(table: &Arc<Table>, restricted: &[&str]) -> Plan {
    Plan::new(
        table.clone(),
        0,
        PlanInput {
            restricted: restricted.iter().map(|s| s.to_string()).collect(),
            deadline: clock::now() + Duration::from_secs(60),
            pacing: None,
            seed: 7,
            pin: None,
        },
    )
}

fn plan(table: &Arc<Table>) -> Plan {
    plan_with(table, &[])
}

/// One failure on own backend `i` of the route (opens a breaker that opens
/// after one).
fn trip(t: &Table, i: usize) {
    t.routes[0].backends[i]
        .state
        .breaker
        .on_failure(clock::now());
}

fn provider(plan: &Plan, slot: Slot) -> String {
    plan.backend(slot).unwrap().backend.provider.name.clone()
}

/// The slot of the next `Try`, skipping waits (returned with it).
fn next_try(plan: &mut Plan) -> (Slot, Duration) {
    let mut waited = Duration::ZERO;
    loop {
        match plan.next(clock::now()) {
            Step::Try(p) => return (p.slot, waited),
            Step::Wait(d) => waited += d,
            Step::Stop(s) => panic!("stopped: {s:?}"),
        }
    }
}

/// The next step, which must be a `Try`.
fn pick_now(plan: &mut Plan) -> Pick {
    match plan.next(clock::now()) {
        Step::Try(p) => p,
        s => panic!("no try: {s:?}"),
    }
}

fn fail(plan: &mut Plan, slot: Slot, class: ErrorClass) -> Verdict {
    plan.record(
        slot,
        Outcome::Failed {
            class,
            retry_after: None,
        },
        clock::now(),
    )
}

#[tokio::test(start_paused = true)]
async fn retryable_classes_retry_and_the_rest_fail_over_or_stop() {
    let t = table(
        "  backends: [{provider: a}]
  retries: {attempts: 1, when: [connect, timeout, server-error, rate-limited], budgetMinPerSecond: 100}
  fallbacks:
    - {when: [context-length, content-filter, auth], backends: [{provider: b}]}",
    );
    for class in [
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::ServerError,
        ErrorClass::RateLimited,
    ] {
        let mut p = plan(&t);
        let (s, _) = next_try(&mut p);
        let v = fail(&mut p, s, class);
        assert!(
            matches!(v, Verdict::Retry { class: c, .. } if c == class),
            "{class:?}: {v:?}"
        );
        let (again, _) = next_try(&mut p);
        assert_eq!(provider(&p, again), "a");
    }
    for class in [
        ErrorClass::ContextLength,
        ErrorClass::ContentFilter,
        ErrorClass::Auth,
    ] {
        let mut p = plan(&t);
        let (s, _) = next_try(&mut p);
        assert_eq!(
            fail(&mut p, s, class),
            Verdict::Failover { class, chain: 0 }
        );
        let (next, waited) = next_try(&mut p);
        assert_eq!(
            (provider(&p, next), waited),
            ("b".to_string(), Duration::ZERO)
        );
    }
    // invalid-request is never retried nor failed over.
    let mut p = plan(&t);
    let (s, _) = next_try(&mut p);
    assert_eq!(fail(&mut p, s, ErrorClass::InvalidRequest), Verdict::Final);
    assert_eq!(p.next(clock::now()), Step::Stop(Stop::Failed(s)));
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_grow_within_the_cap_and_attempts_are_bounded() {
    let t = table(
        "  backends: [{provider: a}]
  retries: {attempts: 3, backoffBase: 100ms, backoffMax: 300ms, budgetMinPerSecond: 100}",
    );
    let mut p = plan(&t);
    let mut waits = Vec::new();
    let (mut s, _) = next_try(&mut p);
    for _ in 0..3 {
        let Verdict::Retry { wait, .. } = fail(&mut p, s, ErrorClass::ServerError) else {
            panic!("no retry");
        };
        waits.push(wait);
        (s, _) = next_try(&mut p);
    }
    assert!(waits[0] <= Duration::from_millis(100), "{waits:?}");
    assert!(waits[1] <= Duration::from_millis(200), "{waits:?}");
    assert!(waits[2] <= Duration::from_millis(300), "{waits:?}");
    // 1 + 3 attempts made: the fourth failure is final.
    assert_eq!(fail(&mut p, s, ErrorClass::ServerError), Verdict::Final);
    assert_eq!(p.attempts(), 4);
    assert_eq!(p.next(clock::now()), Step::Stop(Stop::Failed(s)));
}

#[tokio::test(start_paused = true)]
async fn retry_after_goes_to_another_backend_at_once_or_waits_for_the_same() {
    let two = table(
        "  backends: [{provider: a}, {provider: b}]
  retries: {attempts: 2, backoffMax: 2s, budgetMinPerSecond: 100}",
    );
    let mut p = plan(&two);
    let (first, _) = next_try(&mut p);
    let v = p.record(
        first,
        Outcome::Failed {
            class: ErrorClass::RateLimited,
            retry_after: Some(Duration::from_secs(1)),
        },
        clock::now(),
    );
    assert_eq!(
        v,
        Verdict::Retry {
            class: ErrorClass::RateLimited,
            wait: Duration::ZERO
        }
    );
    let (second, waited) = next_try(&mut p);
    assert_ne!(provider(&p, first), provider(&p, second));
    assert_eq!(waited, Duration::ZERO);

    let one = table(
        "  backends: [{provider: a}]
  retries: {attempts: 2, backoffMax: 2s, budgetMinPerSecond: 100}",
    );
    let mut p = plan(&one);
    let (s, _) = next_try(&mut p);
    let ra = |d| Outcome::Failed {
        class: ErrorClass::RateLimited,
        retry_after: Some(d),
    };
    p.record(s, ra(Duration::from_millis(1500)), clock::now());
    assert_eq!(
        p.next(clock::now()),
        Step::Wait(Duration::from_millis(1500))
    );
    tokio::time::advance(Duration::from_millis(1500)).await;
    let (s, _) = next_try(&mut p);
    // Longer than the route would ever wait: no retry on that backend.
    assert_eq!(
        p.record(s, ra(Duration::from_secs(5)), clock::now()),
        Verdict::Final
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_refuses_retries_beyond_its_share() {
    // No share of the request rate, one retry a second: ten in the 10 s window.
    let t = table(
        "  backends: [{provider: a}]
  retries: {attempts: 30, backoffBase: 1ms, backoffMax: 1ms, budgetPercent: 0, budgetMinPerSecond: 1}",
    );
    let mut p = plan(&t);
    p.deposit(clock::now());
    let mut retried = 0;
    let last = loop {
        let (s, _) = next_try(&mut p);
        match fail(&mut p, s, ErrorClass::Timeout) {
            Verdict::Retry { .. } => retried += 1,
            v => break v,
        }
    };
    assert_eq!(last, Verdict::BudgetExhausted);
    assert_eq!(retried, 10);
    assert!(matches!(p.next(clock::now()), Step::Stop(Stop::Failed(_))));
    // Once the window has moved past them, retries are allowed again.
    tokio::time::advance(Duration::from_secs(11)).await;
    let mut p = plan(&t);
    let (s, _) = next_try(&mut p);
    assert!(matches!(
        fail(&mut p, s, ErrorClass::Timeout),
        Verdict::Retry { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_skipped_and_half_open_lets_one_probe_through() {
    let t = table(
        "  backends: [{provider: a}, {provider: b}]
  circuitBreaker: {consecutiveFailures: 2, openFor: 10s, halfOpenProbes: 1}",
    );
    let a = t.routes[0]
        .backends
        .iter()
        .position(|b| b.backend.provider.name == "a")
        .unwrap();
    let breaker = &t.routes[0].backends[a].state.breaker;
    breaker.on_failure(clock::now());
    breaker.on_failure(clock::now());
    for _ in 0..20 {
        let mut p = plan(&t);
        let (s, _) = next_try(&mut p);
        assert_eq!(provider(&p, s), "b", "an open breaker's backend was picked");
    }
    // Every backend open: nothing to try.
    let b = 1 - a;
    let other = &t.routes[0].backends[b].state.breaker;
    other.on_failure(clock::now());
    other.on_failure(clock::now());
    assert_eq!(
        plan(&t).next(clock::now()),
        Step::Stop(Stop::NoHealthyBackend)
    );
    // After openFor, half-open: one probe permit, then none until it ends.
    tokio::time::advance(Duration::from_secs(11)).await;
    let now = clock::now();
    assert!(breaker.try_acquire(now));
    assert!(!breaker.try_acquire(now));
    breaker.on_success(now);
    assert!(breaker.try_acquire(now));
}

#[tokio::test(start_paused = true)]
async fn a_busy_probe_slot_makes_the_plan_pick_again_without_counting() {
    let t = table("  backends: [{provider: a}]");
    let mut p = plan(&t);
    let (s, _) = next_try(&mut p);
    assert_eq!(p.record(s, Outcome::Busy, clock::now()), Verdict::Again);
    assert_eq!(p.attempts(), 0);
    let (again, _) = next_try(&mut p);
    assert_eq!(again, s);
}

#[tokio::test(start_paused = true)]
async fn lower_priority_groups_serve_only_while_the_first_is_out() {
    let t = table(
        "  backends: [{provider: a}, {provider: b, priority: 1}]
  circuitBreaker: {consecutiveFailures: 1, openFor: 30s}",
    );
    for _ in 0..20 {
        let mut p = plan(&t);
        let (s, _) = next_try(&mut p);
        assert_eq!(provider(&p, s), "a");
    }
    trip(&t, 0);
    let mut p = plan(&t);
    let (s, _) = next_try(&mut p);
    assert_eq!(provider(&p, s), "b");
}

#[tokio::test(start_paused = true)]
async fn a_connect_chain_takes_over_when_every_own_backend_is_out() {
    let t = table(
        "  backends: [{provider: a}]
  circuitBreaker: {consecutiveFailures: 1, openFor: 30s}
  fallbacks: [{when: [connect], backends: [{provider: d}]}]",
    );
    trip(&t, 0);
    let mut p = plan(&t);
    let (s, _) = next_try(&mut p);
    assert_eq!(s, Slot::Chain(0, 0));
    assert_eq!(provider(&p, s), "d");
}

#[tokio::test(start_paused = true)]
async fn restricted_data_goes_only_to_cleared_providers() {
    let t = table("  backends: [{provider: a}, {provider: b}]");
    for _ in 0..20 {
        let mut p = plan_with(&t, &["email"]);
        let (s, _) = next_try(&mut p);
        assert_eq!(provider(&p, s), "a");
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_attempt_is_hedged_and_the_partner_is_another_backend() {
    let t = table(
        "  backends: [{provider: a}, {provider: b}]
  hedge: {delay: 200ms}
  retries: {attempts: 1, budgetMinPerSecond: 100}",
    );
    let mut p = plan(&t);
    let first = pick_now(&mut p);
    assert_eq!(first.hedge, Some(Duration::from_millis(200)));
    // The race: the partner is the other backend, and counts as an attempt.
    let partner = p.hedge_partner(clock::now()).map(Slot::Own).unwrap();
    assert_ne!(provider(&p, partner), provider(&p, first.slot));
    assert_eq!(p.attempts(), 1);
    // The partner won: answered, and nothing else is offered.
    assert_eq!(
        p.record(partner, Outcome::Answered, clock::now()),
        Verdict::Answered
    );
    assert_eq!(p.attempts(), 2);
    assert!(matches!(p.next(clock::now()), Step::Stop(_)));

    // Both lost: the retry that follows is not hedged again.
    let t = table(
        "  backends: [{provider: a}, {provider: b}]
  hedge: {delay: 200ms}
  retries: {attempts: 2, budgetMinPerSecond: 100}",
    );
    let mut p = plan(&t);
    assert!(pick_now(&mut p).hedge.is_some());
    let partner = p.hedge_partner(clock::now()).map(Slot::Own).unwrap();
    assert!(matches!(
        fail(&mut p, partner, ErrorClass::ServerError),
        Verdict::Retry { .. }
    ));
    let retry = loop {
        match p.next(clock::now()) {
            Step::Wait(_) => continue,
            Step::Try(pick) => break pick,
            Step::Stop(s) => panic!("no retry: {s:?}"),
        }
    };
    assert_eq!(retry.hedge, None);
}

#[tokio::test(start_paused = true)]
async fn no_partner_when_the_only_backend_was_tried() {
    let t = table("  backends: [{provider: a}]\n  hedge: {delay: 0s}");
    let mut p = plan(&t);
    let _ = next_try(&mut p);
    assert_eq!(p.hedge_partner(clock::now()), None);
}

#[tokio::test(start_paused = true)]
async fn after_an_answer_the_plan_never_retries_and_only_a_continuation_picks() {
    let t = table(
        "  backends: [{provider: a}, {provider: c}]
  retries: {attempts: 3, budgetMinPerSecond: 100}
  streamContinuation: {maxContinuations: 1}",
    );
    let mut p = plan(&t);
    let (s, _) = next_try(&mut p);
    assert_eq!(
        p.record(s, Outcome::Answered, clock::now()),
        Verdict::Answered
    );
    // Bytes reached the client: no retry, whatever happens next.
    assert!(matches!(p.next(clock::now()), Step::Stop(_)));
    // A broken stream continues on a backend able to continue (c, an
    // Anthropic API), never on the one that broke.
    let current = p.backend(s).unwrap().state.clone();
    let i = p
        .continuation(&current, clock::now(), crate::prefill::can_continue)
        .unwrap();
    assert_eq!(provider(&p, Slot::Own(i)), "c");
    let c = p.backend(Slot::Own(i)).unwrap().state.clone();
    assert_eq!(
        p.continuation(&c, clock::now(), crate::prefill::can_continue),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_a_retry_that_would_wait_past_it() {
    let t = table(
        "  backends: [{provider: a}]
  retries: {attempts: 2, backoffBase: 10s, backoffMax: 10s, budgetMinPerSecond: 100}",
    );
    let mut p = Plan::new(
        t.clone(),
        0,
        PlanInput {
            restricted: Vec::new(),
            deadline: clock::now() + Duration::from_millis(1),
            pacing: None,
            seed: u64::MAX,
            pin: None,
        },
    );
    let (s, _) = next_try(&mut p);
    // seed u64::MAX rolls a long backoff; the deadline is 1 ms away.
    let v = fail(&mut p, s, ErrorClass::ServerError);
    assert!(matches!(v, Verdict::Final | Verdict::Retry { .. }), "{v:?}");
    if let Verdict::Retry { wait, .. } = v {
        assert!(wait < Duration::from_millis(1), "{wait:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_skipped_backend_counts_as_context_length_without_an_attempt() {
    let t = table(
        "  backends: [{provider: a}]
  fallbacks: [{when: [context-length], backends: [{provider: b}]}]",
    );
    let mut p = plan(&t);
    let (s, _) = next_try(&mut p);
    assert_eq!(
        p.record(s, Outcome::Skipped, clock::now()),
        Verdict::Failover {
            class: ErrorClass::ContextLength,
            chain: 0
        }
    );
    assert_eq!(p.attempts(), 0);
    let (next, _) = next_try(&mut p);
    assert_eq!(provider(&p, next), "b");
}

/// The route `r` with a canary to provider `d` and `status` (YAML, or
/// empty for none).
fn canary_table(status: &str) -> Arc<Table> {
    let yaml = format!(
        "{PROVIDERS}---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: r}}\nspec:\n  models: [m]\n  backends: [{{provider: a}}, {{provider: b}}]\n  retries: {{attempts: 2, when: [server-error], budgetMinPerSecond: 100}}\n  circuitBreaker: {{consecutiveFailures: 1, openFor: 30s}}\n  canary: {{backend: {{provider: d, model: m2}}}}\n{status}\n"
    );
    let docs = llmesh_api::parse_documents(&yaml).unwrap();
    let registry = Registry::default();
    let built = crate::table::build(&docs, "t", None, &NoKey, &ClientCache::new(None), &registry);
    assert!(built.errors.is_empty(), "{:?}", built.errors);
    Arc::new(Table::new(built.compiled, 1, |_| None))
}

fn first_picks_of_canary(t: &Arc<Table>, n: u64) -> u64 {
    (0..n)
        .filter(|&seed| {
            let mut p = Plan::new(
                t.clone(),
                0,
                PlanInput {
                    restricted: Vec::new(),
                    deadline: clock::now() + Duration::from_secs(60),
                    pacing: None,
                    seed,
                    pin: None,
                },
            );
            let slot = pick_now(&mut p).slot;
            provider(&p, slot) == "d"
        })
        .count() as u64
}

#[tokio::test(start_paused = true)]
async fn the_canary_candidate_gets_the_share_its_status_gives_and_no_more() {
    // Before the controller writes anything, the candidate is not even a
    // backend.
    let t = canary_table("");
    assert_eq!(t.routes[0].backends.len(), 2);
    assert_eq!(first_picks_of_canary(&t, 400), 0);

    let t = canary_table(
        "status: {canary: {phase: Progressing, candidate: d/m2, step: 1, weight: 25}}",
    );
    let n = first_picks_of_canary(&t, 4000);
    assert!((800..=1200).contains(&n), "{n} of 4000 on the candidate");

    let t = canary_table("status: {canary: {phase: Promoted, candidate: d/m2, weight: 50}}");
    assert_eq!(first_picks_of_canary(&t, 400), 400);

    // Rolled back, or written for another candidate: nothing.
    for status in [
        "status: {canary: {phase: RolledBack, candidate: d/m2, weight: 50}}",
        "status: {canary: {phase: Progressing, candidate: d/other, weight: 50}}",
        // A status of another shape is ignored, not a refused route.
        "status: {canary: {phase: Sideways, weight: many}}",
    ] {
        assert_eq!(
            first_picks_of_canary(&canary_table(status), 400),
            0,
            "{status}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_canary_attempt_is_retried_on_the_routes_own_backends() {
    let t = canary_table("status: {canary: {phase: Promoted, candidate: d/m2}}");
    let mut p = plan(&t);
    let first = pick_now(&mut p).slot;
    assert_eq!(provider(&p, first), "d");
    assert!(matches!(
        fail(&mut p, first, ErrorClass::ServerError),
        Verdict::Retry { .. }
    ));
    for _ in 0..2 {
        let (slot, _) = next_try(&mut p);
        assert_ne!(provider(&p, slot), "d", "the candidate is tried once");
        fail(&mut p, slot, ErrorClass::ServerError);
    }
    // A candidate whose breaker is open is skipped for its share.
    let t = canary_table("status: {canary: {phase: Promoted, candidate: d/m2}}");
    for _ in 0..5 {
        trip(&t, 2);
    }
    let mut p = plan(&t);
    let slot = pick_now(&mut p).slot;
    assert_ne!(provider(&p, slot), "d");
}
