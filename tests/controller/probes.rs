//! Golden prompts (`spec.probes`): the controller's prober sends them to
//! every backend of a route through a sidecar of its own, writes
//! `ProbesPassing` per backend in `status.backends`, raises Events on a
//! change, counts tokens and cost with `traffic="probe"`, stops at its
//! daily budget, and the canary's `probes` gate reads its verdicts.

use llmesh_mock::{Behavior, MockConfig, MockServer};
use llmesh_tests::KEY;

use super::*;

const NS: &str = "probing";
/// In every prompt: it must reach no status, Event or metric.
const MARKER: &str = "golden-prompt-text-7f3a";

async fn mock(default: Value) -> MockServer {
    MockServer::start(MockConfig {
        api_key: Some(KEY.to_string()),
        default: serde_json::from_value::<Behavior>(default).unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn provider(name: &str, schema: &str, url: &str, key: &std::path::Path) -> String {
    let base = format!("{url}/v1");
    let _ = schema;
    format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: {name}, namespace: {NS}}}, spec: {{schema: {schema}, baseUrl: '{base}', credential: {{file: '{}'}}, models: [{{name: m-old, pricing: {{input: 1000, output: 1000}}}}]}}}}",
        key.display()
    )
}

/// Three prompts asking for JSON; `zero-shot` alone has no earlier
/// assistant turn, so a mock that answers JSON only from the first
/// assistant turn on answers it with prose: a third of its answers are
/// invalid.
fn route(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  models: [chat]
  backends: [{{provider: old, model: m-old}}]
  canary:
    backend: {{provider: next, model: m-new}}
    steps: [50]
    hold: 1h
    gates: {{probes: true}}
  probes:
    interval: 1s
    {extra}
    prompts:
      - name: few-shot-a
        messages:
          - {{role: user, content: "{MARKER} first"}}
          - {{role: assistant, content: '{{"count": 0}}'}}
          - {{role: user, content: "{MARKER} again"}}
        expect: &json
          jsonSchema: {{type: object, properties: {{count: {{type: integer}}}}, required: [count]}}
      - name: few-shot-b
        messages:
          - {{role: system, content: "{MARKER} answer in JSON"}}
          - {{role: user, content: "{MARKER} one"}}
          - {{role: assistant, content: '{{"count": 1}}'}}
          - {{role: user, content: "{MARKER} two"}}
        expect: *json
      - name: zero-shot
        messages: [{{role: user, content: "{MARKER} give me n"}}]
        expect: *json
"#
    )
}

/// The `ProbesPassing` condition of the backend `key` in the route's
/// status.
fn probe_condition(kube: &FakeKube, name: &str, key: &str) -> Option<Value> {
    let obj = kube.object(NS, "llmroutes", name)?;
    obj["status"]["backends"].as_array()?.iter().find(|b| {
        let k = match b["model"].as_str() {
            Some(m) => format!("{}/{m}", b["provider"].as_str().unwrap_or("")),
            None => b["provider"].as_str().unwrap_or("").to_string(),
        };
        k == key
    })?["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "ProbesPassing")
        .cloned()
}

async fn until_probe(kube: &FakeKube, name: &str, key: &str, status: &str) -> Value {
    until(&format!("{name} {key} ProbesPassing={status}"), || {
        probe_condition(kube, name, key).filter(|c| c["status"] == status)
    })
    .await
}

fn probe_events(kube: &FakeKube, name: &str) -> Vec<(String, String)> {
    events_for(kube, name)
        .iter()
        .filter(|e| e["action"] == "Probe")
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

struct Setup {
    kube: FakeKube,
    old: MockServer,
    next: MockServer,
    _dir: tempfile::TempDir,
}

/// `old` answers JSON at once (OpenAI); `next` (Anthropic, so the
/// prober's sidecar translates) only from the first assistant turn.
async fn setup() -> Setup {
    let kube = FakeKube::start().await;
    let old = mock(json!({"json_reply": {"count": 1}})).await;
    let next = mock(json!({"json_reply": {"count": 1}, "json_reply_after_turns": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, KEY).unwrap();
    kube.apply_yaml(&provider("old", "openai", &old.url(), &key));
    kube.apply_yaml(&provider("next", "anthropic", &next.url(), &key));
    Setup {
        kube,
        old,
        next,
        _dir: dir,
    }
}

fn probe_config(identity: &str) -> ControllerConfig {
    let mut cfg = config(identity);
    cfg.canary.interval = Duration::from_millis(100);
    cfg.probes.tick = Duration::from_millis(100);
    cfg
}

#[tokio::test]
async fn probes_catch_a_candidate_answering_invalid_json_a_third_of_the_time_and_hold_its_canary() {
    let s = setup().await;
    let kube = &s.kube;
    kube.apply_yaml(&route("chat", ""));
    let c = start_with(kube, probe_config("one")).await;

    let old = until_probe(kube, "chat", "old/m-old", "True").await;
    assert_eq!(old["reason"], "ProbesPassed");
    assert_eq!(old["message"], "3 of 3 probes pass");
    let next = until_probe(kube, "chat", "next/m-new", "False").await;
    assert_eq!(next["reason"], "ProbesFailed");
    // Over Anthropic the sidecar asks for the schema as a forced tool, so
    // the prose answer arrives as an object without the required field.
    const FAILED: &str =
        "1 of 3 probes fail: zero-shot: the answer does not match jsonSchema at / (/required)";
    assert_eq!(next["message"], FAILED);
    let obj = kube.object(NS, "llmroutes", "chat").unwrap();
    assert!(obj["status"]["backends"][0]["lastProbeTime"].is_string());
    // Each backend got the three prompts, the candidate in its own API.
    assert!(s.old.request_count() >= 3);
    assert!(s
        .next
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/v1/messages")));

    // The canary's probes gate reads the verdict.
    let canary = until("canary paused by the probes", || {
        kube.object(NS, "llmroutes", "chat")
            .map(|o| o["status"]["canary"].clone())
            .filter(|c| c["phase"] == "Paused")
    })
    .await;
    let why = canary["message"].as_str().unwrap();
    assert!(why.contains("probes fail on next/m-new"), "{why}");

    let events = until("both probe events", || {
        Some(probe_events(kube, "chat")).filter(|e| e.len() >= 2)
    })
    .await;
    assert!(events.contains(&(
        "ProbesPassing".into(),
        "probes pass on old/m-old: 3 of 3 probes pass".into()
    )));
    assert!(events.contains(&(
        "ProbesFailing".into(),
        format!("probes fail on next/m-new: {FAILED}")
    )));

    let m = metrics(&c).await;
    fn labels(provider: &'static str, model: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("namespace", NS),
            ("route", "chat"),
            ("provider", provider),
            ("model", model),
        ]
    }
    let mut fail = labels("next", "m-new");
    fail.push(("result", "fail"));
    assert!(
        metric_value(&m, "llmesh_probe_runs_total", &fail).unwrap() >= 1.0,
        "{m}"
    );
    let mut zero = labels("next", "m-new");
    zero.extend([("probe", "zero-shot"), ("result", "fail")]);
    assert!(metric_value(&m, "llmesh_probe_results_total", &zero).unwrap() >= 1.0);
    assert_eq!(
        metric_value(&m, "llmesh_probe_passing", &labels("next", "m-new")),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&m, "llmesh_probe_passing", &labels("old", "m-old")),
        Some(1.0)
    );
    let mut out = labels("old", "m-old");
    out.extend([("type", "output"), ("traffic", "probe")]);
    assert!(
        metric_value(&m, "llmesh_probe_tokens_total", &out).unwrap() > 0.0,
        "{m}"
    );
    let mut cost = labels("old", "m-old");
    cost.push(("traffic", "probe"));
    assert!(
        metric_value(&m, "llmesh_probe_cost_usd_total", &cost).unwrap() > 0.0,
        "{m}"
    );

    // The candidate is fixed: the next run says so, and the canary resumes.
    s.next.set_model_behavior(
        "m-new",
        serde_json::from_value(json!({"json_reply_after_turns": 0})).unwrap(),
    );
    let fixed = until_probe(kube, "chat", "next/m-new", "True").await;
    assert_ne!(fixed["lastTransitionTime"], next["lastTransitionTime"]);
    until("canary resumed", || {
        kube.object(NS, "llmroutes", "chat")
            .filter(|o| o["status"]["canary"]["phase"] == "Progressing")
    })
    .await;
    until("the candidate's passing event", || {
        probe_events(kube, "chat")
            .into_iter()
            .find(|(r, n)| r == "ProbesPassing" && n.contains("next/m-new"))
    })
    .await;

    // Every probe family has its place in the dashboard's Golden prompts
    // row (the sidecar's families are checked in tests/observability.rs).
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/llmesh/dashboards/llmesh.json"),
    )
    .unwrap();
    for family in m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE llmesh_probe_"))
    {
        let name = format!("llmesh_probe_{}", family.split_whitespace().next().unwrap());
        assert!(dashboard.contains(&name), "{name} is not on the dashboard");
    }

    // No prompt text anywhere a person or a scraper reads.
    let stored = kube.object(NS, "llmroutes", "chat").unwrap();
    assert!(!stored["status"].to_string().contains(MARKER));
    assert!(!serde_json::to_string(&kube.events())
        .unwrap()
        .contains(MARKER));
    assert!(!metrics(&c).await.contains(MARKER));
    c.shutdown().await;
}

#[tokio::test]
async fn probes_stop_for_the_day_once_their_budget_is_spent() {
    let s = setup().await;
    let kube = &s.kube;
    // The first run on `old` costs more than the whole day's budget.
    kube.apply_yaml(&route("budget", "maxCostPerDay: '0.000001'"));
    let c = start_with(kube, probe_config("one")).await;
    until_probe(kube, "budget", "old/m-old", "True").await;
    let spent = until("the budget event", || {
        probe_events(kube, "budget")
            .into_iter()
            .find(|(r, _)| r == "ProbeBudgetSpent")
    })
    .await;
    assert!(spent.1.contains("maxCostPerDay"), "{spent:?}");
    let calls = s.old.request_count() + s.next.request_count();
    // Several more intervals: nothing more is sent, and skipped runs count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.old.request_count() + s.next.request_count(), calls);
    let m = metrics(&c).await;
    let skipped = [
        ("namespace", NS),
        ("route", "budget"),
        ("provider", "old"),
        ("model", "m-old"),
        ("result", "skipped_budget"),
    ];
    assert!(
        metric_value(&m, "llmesh_probe_runs_total", &skipped).unwrap() >= 2.0,
        "{m}"
    );
    // The verdict written before stays.
    assert_eq!(
        probe_condition(kube, "budget", "old/m-old").unwrap()["status"],
        "True"
    );
    let budget_events = probe_events(kube, "budget")
        .iter()
        .filter(|(r, _)| r == "ProbeBudgetSpent")
        .count();
    assert_eq!(budget_events, 1, "one Event a day");
    c.shutdown().await;
}

#[tokio::test]
async fn bad_probes_are_refused_and_an_unreachable_credential_is_unknown_not_failing() {
    let s = setup().await;
    let kube = &s.kube;
    // Valid for the CRD schema: the compiler's checks say which field.
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: bad, namespace: {NS}}}, spec: {{models: [chat], backends: [{{provider: old, model: m-old}}], probes: {{prompts: [{{name: p, messages: [{{role: user, content: hi}}], expect: {{regex: '(', toolCalled: f}}}}]}}}}}}"
    ));
    // `n` unquoted, as a user writes it: kubectl reads `false`.
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: yaml11, namespace: {NS}}}, spec: {{models: [chat], backends: [{{provider: old, model: m-old}}], probes: {{prompts: [{{name: p, messages: [{{role: user, content: hi}}], expect: {{jsonSchema: {{type: object, properties: {{n: {{type: integer}}}}, required: [n]}}}}}}]}}}}}}"
    ));
    let c = start_with(kube, probe_config("one")).await;
    let accepted = until_condition(kube, NS, "llmroutes", "yaml11", "Accepted", "False", 1).await;
    let msg = accepted["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.probes.prompts[0].expect.jsonSchema: is not a valid JSON Schema"),
        "{msg}"
    );
    assert!(msg.contains("quote property names like 'n'"), "{msg}");
    let accepted = until_condition(kube, NS, "llmroutes", "bad", "Accepted", "False", 1).await;
    let msg = accepted["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.probes.prompts[0].expect.regex: is not a valid regex"),
        "{msg}"
    );
    assert!(
        msg.contains("spec.probes.prompts[0].expect.toolCalled"),
        "{msg}"
    );

    // A provider whose Secret the controller has not mounted.
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: locked, namespace: {NS}}}, spec: {{schema: openai, baseUrl: '{}/v1', credential: {{secretKeyRef: {{name: not-mounted, key: api-key}}}}}}}}",
        s.old.url()
    ));
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: locked, namespace: {NS}}}, spec: {{models: [chat], backends: [{{provider: locked}}], probes: {{interval: 1s, prompts: [{{name: p, messages: [{{role: user, content: hi}}]}}]}}}}}}"
    ));
    let unknown = until_probe(kube, "locked", "locked", "Unknown").await;
    assert_eq!(unknown["reason"], "ProbeError");
    let why = unknown["message"].as_str().unwrap();
    assert!(why.contains("not-mounted"), "{why}");
    until("the probe error event", || {
        probe_events(kube, "locked")
            .into_iter()
            .find(|(r, _)| r == "ProbeError")
    })
    .await;
    // Counted as an error, with no passing figure to page on.
    let m = metrics(&c).await;
    let locked = [
        ("namespace", NS),
        ("route", "locked"),
        ("provider", "locked"),
        ("model", ""),
    ];
    let mut error = locked.to_vec();
    error.push(("result", "error"));
    assert!(
        metric_value(&m, "llmesh_probe_runs_total", &error).unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "llmesh_probe_passing", &locked),
        None,
        "{m}"
    );
    c.shutdown().await;
}

// Multi-threaded: the fake API server and the mock must keep answering
// while this test blocks on the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_binary_probes_with_a_secret_from_its_probe_secrets_dir() {
    let kube = FakeKube::start().await;
    let mock = mock(json!({"json_reply": {"count": 1}})).await;
    // A Secret mounted as the chart mounts controller.probes.secrets.
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir(secrets.path().join("probe-key")).unwrap();
    std::fs::write(secrets.path().join("probe-key/api-key"), KEY).unwrap();
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMProvider, metadata: {{name: old, namespace: {NS}}}, spec: {{schema: openai, baseUrl: '{}/v1', credential: {{secretKeyRef: {{name: probe-key, key: api-key}}}}}}}}",
        mock.url()
    ));
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: bin, namespace: {NS}}}, spec: {{models: [chat], backends: [{{provider: old}}], probes: {{interval: 1s, prompts: [{{name: p, messages: [{{role: user, content: '{MARKER}'}}], expect: {{jsonSchema: {{type: object, required: [count]}}}}}}]}}}}}}"
    ));
    let (mut proc, _dir) = super::deploy::spawn_binary(
        &kube,
        &["--probe-secrets-dir", secrets.path().to_str().unwrap()],
    );
    proc.wait_line("llmesh-controller listening ");
    let passing = until_probe(&kube, "bin", "old", "True").await;
    assert_eq!(passing["message"], "1 of 1 probes pass");
    // The key reached the provider from the mounted file.
    let sent = mock.requests();
    assert!(!sent.is_empty());
    assert!(sent[0]
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == &format!("Bearer {KEY}")));
    let status = proc.terminate();
    assert!(status.success(), "{status:?}\n{}", proc.output());
    let out = proc.output();
    assert!(!out.contains(MARKER), "prompt text in the logs");
    assert!(!out.contains(KEY), "the key in the logs");
}

#[tokio::test]
async fn a_verdict_whose_write_fails_is_written_when_the_api_server_is_back_without_probing_again()
{
    let s = setup().await;
    let kube = &s.kube;
    s.old.set_default(
        serde_json::from_value(json!({"json_reply": {"count": 1}, "latency_ms": 800})).unwrap(),
    );
    kube.apply_yaml(&format!(
        "{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: retry, namespace: {NS}}}, spec: {{models: [chat], backends: [{{provider: old, model: m-old}}], probes: {{interval: 1h, prompts: [{{name: p, messages: [{{role: user, content: hi}}]}}]}}}}}}"
    ));
    let mut cfg = probe_config("one");
    // The Lease outlives the outage: the same leader keeps its verdict.
    cfg.lease.duration = Duration::from_secs(30);
    let c = start_with(kube, cfg).await;
    until("the probe in flight", || {
        (s.old.active_requests() == 1).then_some(())
    })
    .await;
    // The client retries the 503s of its patch, and the prober keeps a
    // verdict it could not write for the next tick: either way it lands.
    kube.set_down(true);
    until("the probe answered", || {
        (s.old.request_count() == 1 && s.old.active_requests() == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(probe_condition(kube, "retry", "old/m-old").is_none());
    kube.set_down(false);
    let passing = until_probe(kube, "retry", "old/m-old", "True").await;
    assert_eq!(passing["message"], "1 of 1 probes pass");
    assert_eq!(s.old.request_count(), 1, "written without probing again");
    until("the event once written", || {
        probe_events(kube, "retry")
            .into_iter()
            .find(|(r, _)| r == "ProbesPassing")
    })
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_slow_backend_delays_only_its_own_route() {
    let s = setup().await;
    let kube = &s.kube;
    s.next.set_default(
        serde_json::from_value(json!({"json_reply": {"count": 1}, "latency_ms": 3000})).unwrap(),
    );
    let route = |name: &str, backend: &str| {
        format!(
            "{{apiVersion: llmesh.io/v1alpha1, kind: LLMRoute, metadata: {{name: {name}, namespace: {NS}}}, spec: {{models: [{name}], backends: [{backend}], probes: {{interval: 1h, prompts: [{{name: p, messages: [{{role: user, content: hi}}]}}]}}}}}}"
        )
    };
    // "a-slow" sorts first: a prober taking routes in turn would wait 3 s
    // on it before "b-fast".
    kube.apply_yaml(&route("a-slow", "{provider: next, model: m-new}"));
    kube.apply_yaml(&route("b-fast", "{provider: old, model: m-old}"));
    let c = start_with(kube, probe_config("one")).await;
    until_probe(kube, "b-fast", "old/m-old", "True").await;
    assert!(
        probe_condition(kube, "a-slow", "next/m-new").is_none(),
        "the slow route is still running"
    );
    assert_eq!(s.next.active_requests(), 1);
    let t0 = Instant::now();
    loop {
        if probe_condition(kube, "a-slow", "next/m-new").is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the slow route never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}
