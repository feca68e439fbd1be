//! The canary's moves, decided by hand: spec, status, gate and time in,
//! the next status and Event out.

use k8s_openapi::jiff::Timestamp;
use pretty_assertions::assert_eq;

use super::*;

fn spec(extra: Value) -> CanarySpec {
    let mut v = json!({"backend": {"provider": "next", "model": "gpt-5"}, "steps": [10, 50], "hold": "60s"});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    serde_json::from_value(v).unwrap()
}

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn running(phase: CanaryPhase, step: u32, weight: u32, since: i64) -> CanaryStatus {
    CanaryStatus {
        phase,
        candidate: "next/gpt-5".into(),
        step,
        weight,
        step_started_at: Some(at(since)),
        failing_since: None,
        observed_generation: Some(1),
        message: None,
    }
}

fn run(s: Start) -> CanaryStatus {
    match s {
        Start::Run(s) => s,
        other => panic!("not running: {other:?}"),
    }
}

#[test]
fn a_canary_starts_at_its_first_step_for_the_candidate_it_names() {
    let s = spec(json!({}));
    let Start::Write(st, Some(note)) = start(&s, Some(1), None, None, &at(100)) else {
        panic!("no start");
    };
    assert_eq!(
        (st.phase, st.step, st.weight, st.candidate.as_str()),
        (CanaryPhase::Progressing, 0, 10, "next/gpt-5")
    );
    assert_eq!(note.reason, "CanaryStarted");
    // Progress written for another candidate starts over.
    let mut other = running(CanaryPhase::Promoted, 2, 100, 0);
    other.candidate = "next/gpt-4.1".into();
    assert!(matches!(
        start(&s, Some(1), None, Some(&other), &at(100)),
        Start::Write(CanaryStatus { weight: 10, .. }, Some(_))
    ));
}

#[test]
fn steps_advance_after_their_hold_and_the_last_one_promotes() {
    let s = spec(json!({}));
    let cur = run(start(
        &s,
        Some(1),
        None,
        Some(&running(CanaryPhase::Progressing, 0, 10, 100)),
        &at(130),
    ));
    // Not held long enough: no move.
    let (next, note) = advance(&s, cur.clone(), &Gate::Pass, &at(130));
    assert_eq!((next.step, next.weight, note), (0, 10, None));
    let (next, note) = advance(&s, cur, &Gate::Pass, &at(160));
    assert_eq!((next.step, next.weight), (1, 50));
    assert_eq!(note.unwrap().reason, "CanaryAdvanced");
    let (next, note) = advance(&s, next, &Gate::Pass, &at(220));
    assert_eq!((next.phase, next.weight), (CanaryPhase::Promoted, 100));
    assert_eq!(note.unwrap().reason, "CanaryPromoted");
    // Promoted stays so, through spec edits too.
    assert_eq!(start(&s, Some(1), None, Some(&next), &at(900)), Start::Keep);
    assert!(matches!(
        start(&s, Some(2), None, Some(&next), &at(900)),
        Start::Write(
            CanaryStatus {
                phase: CanaryPhase::Promoted,
                weight: 100,
                ..
            },
            None
        )
    ));
}

#[test]
fn a_failing_gate_pauses_then_rolls_back_after_a_hold_and_a_pass_resumes() {
    let s = spec(json!({}));
    let fail = Gate::Fail("error ratio".into());
    let cur = running(CanaryPhase::Progressing, 1, 50, 100);
    let (paused, note) = advance(&s, cur, &fail, &at(110));
    assert_eq!((paused.phase, paused.weight), (CanaryPhase::Paused, 50));
    assert_eq!(note.unwrap().type_, "Warning");
    // Still failing within the hold: paused, no second Event.
    let (still, note) = advance(&s, paused.clone(), &fail, &at(150));
    assert_eq!((still.phase, note), (CanaryPhase::Paused, None));
    // Passing again resumes at the same weight.
    let (resumed, note) = advance(&s, still.clone(), &Gate::Pass, &at(160));
    assert_eq!(
        (resumed.phase, resumed.weight, resumed.failing_since),
        (CanaryPhase::Progressing, 50, None)
    );
    assert_eq!(note.unwrap().reason, "CanaryResumed");
    // Failing for the whole hold: back to the route's own backends.
    let (back, note) = advance(&s, still, &fail, &at(170));
    assert_eq!((back.phase, back.weight), (CanaryPhase::RolledBack, 0));
    assert_eq!(note.unwrap().reason, "CanaryRolledBack");
    assert_eq!(start(&s, Some(1), None, Some(&back), &at(900)), Start::Keep);
    // A spec change runs it again from the first step.
    assert!(matches!(
        start(&s, Some(2), None, Some(&back), &at(900)),
        Start::Write(
            CanaryStatus {
                phase: CanaryPhase::Progressing,
                weight: 10,
                ..
            },
            Some(_)
        )
    ));
}

#[test]
fn a_gate_that_cannot_be_read_holds_the_step_without_failing() {
    let s = spec(json!({}));
    let mut paused = running(CanaryPhase::Paused, 1, 50, 100);
    paused.failing_since = Some(at(100));
    let (next, note) = advance(
        &s,
        paused,
        &Gate::Wait("3 of the 20 requests".into()),
        &at(500),
    );
    assert_eq!(
        (next.phase, next.weight, next.failing_since, note),
        (CanaryPhase::Progressing, 50, None, None)
    );
    assert!(next.message.unwrap().contains("3 of the 20 requests"));
    // Waiting never advances, however long.
    let (next, _) = advance(
        &s,
        running(CanaryPhase::Progressing, 0, 10, 0),
        &Gate::Wait("x".into()),
        &at(9999),
    );
    assert_eq!(next.step, 0);
}

#[test]
fn the_annotation_promotes_or_aborts_at_once() {
    let s = spec(json!({}));
    let cur = running(CanaryPhase::Progressing, 0, 10, 100);
    let Start::Write(p, Some(note)) = start(&s, Some(1), Some("promote"), Some(&cur), &at(101))
    else {
        panic!("no promotion");
    };
    assert_eq!(
        (p.phase, p.weight, note.reason),
        (CanaryPhase::Promoted, 100, "CanaryPromoted")
    );
    let Start::Write(a, Some(note)) = start(&s, Some(1), Some("abort"), Some(&p), &at(102)) else {
        panic!("no abort");
    };
    assert_eq!(
        (a.phase, a.weight, note.reason),
        (CanaryPhase::Aborted, 0, "CanaryAborted")
    );
    // Aborted while the annotation stays, even across spec edits.
    assert_eq!(
        start(&s, Some(1), Some("abort"), Some(&a), &at(103)),
        Start::Keep
    );
    assert!(matches!(
        start(&s, Some(2), Some("abort"), Some(&a), &at(103)),
        Start::Write(
            CanaryStatus {
                phase: CanaryPhase::Aborted,
                ..
            },
            None
        )
    ));
    // An abort before anything ran never sends the candidate a request.
    assert!(matches!(
        start(&s, Some(1), Some("abort"), None, &at(1)),
        Start::Write(
            CanaryStatus {
                phase: CanaryPhase::Aborted,
                weight: 0,
                ..
            },
            Some(_)
        )
    ));
    // Another value is no override.
    assert!(matches!(
        start(&s, Some(1), Some("yes"), Some(&cur), &at(101)),
        Start::Run(_)
    ));
}

#[test]
fn steps_shortened_under_a_running_canary_clamp_its_position() {
    let s = spec(json!({"steps": [20]}));
    let cur = running(CanaryPhase::Progressing, 3, 75, 100);
    let st = run(start(&s, Some(2), None, Some(&cur), &at(101)));
    assert_eq!(
        (st.step, st.weight, st.observed_generation),
        (0, 20, Some(2))
    );
}

#[test]
fn the_gate_queries_separate_the_candidate_from_the_routes_own_backends() {
    let sel = route_selector("chat", Some("team-a"));
    let q = Queries::new(&sel, "next", "gpt-5", Duration::from_secs(300));
    assert_eq!(
        q.candidate_failures,
        r#"sum(increase(llmesh_attempts_total{route="chat",namespace="team-a",provider="next",model="gpt-5",outcome!="ok",outcome!="hedge_cancelled"}[300s]))"#
    );
    assert!(q.own_attempts.contains(r#"unless on(provider, model) increase(llmesh_attempts_total{route="chat",namespace="team-a",provider="next",model="gpt-5""#));
    assert!(q.own_p95.starts_with("histogram_quantile(0.95, sum by (le) (rate(llmesh_attempt_first_byte_seconds_bucket{route=\"chat\",namespace=\"team-a\"}[300s]) unless"));
    // Label values are PromQL string literals.
    assert_eq!(lit(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(route_selector("chat", None), r#"route="chat""#);
}
