//! The dashboard and the alert rules against the real thing: the sidecar's
//! `/metrics` through `promtool check metrics`, the rule file through
//! `promtool check rules` and its unit tests, and a real Prometheus
//! scraping a real sidecar (the `llmesh-proxy` and `llmesh-mock` binaries)
//! while traffic runs, asked every query of every dashboard panel and every
//! alert expression.
//!
//! Without `promtool` / `prometheus` on the PATH these tests fail, unless
//! `LLMESH_ALLOW_MISSING_PROMETHEUS=1` (then they say loudly that they
//! skipped). `make deps` installs Debian's `prometheus` package.
#![allow(clippy::unwrap_used)]

// A crate root's modules are looked up beside it, hence the paths.
#[path = "observability/dashboard.rs"]
mod dashboard;
#[path = "observability/prometheus.rs"]
mod prometheus;
#[path = "observability/traffic.rs"]
mod traffic;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use dashboard::{repo_file, DASHBOARD, RULES};
use llmesh_tests::*;
use prometheus::{promtool, sample_value, tool, unix_now, Prometheus};

/// The pod identity the injector would give the sidecar.
const NAMESPACE: &str = "shop";
const WORKLOAD: &str = "checkout";
const POD: &str = "checkout-7d9f-abcde";
/// The scrape job, named as the rules' `up` alert expects.
const JOB: &str = "llmesh-sidecar";

/// Panel queries allowed to return nothing after the test's traffic, each
/// with the reason: (panel title, refId, why). Every other query must
/// return at least one finite sample. The traffic provokes even hedges,
/// continuations and outlier ejections. A panel for a rare
/// event the test cannot provoke cheaply goes here.
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[
    (
        "Trace export failures",
        "A",
        "the family exists only on sidecars exporting traces (--otlp-endpoint); tests/tracing.rs checks it",
    ),
    // The golden-prompt row reads the controller's families, which this
    // stack (sidecar only) does not run; tests/controller/probes.rs checks
    // them on a real controller.
    ("Probes passing per backend", "A", CONTROLLER),
    ("Probe verdicts", "A", CONTROLLER),
    ("Probe spend (traffic=\"probe\")", "A", CONTROLLER),
    ("Probe spend (traffic=\"probe\")", "B", CONTROLLER),
    ("Probe spend (traffic=\"probe\")", "C", CONTROLLER),
    ("Probe latency p95", "A", CONTROLLER),
    ("Probe runs by result", "A", CONTROLLER),
];
const CONTROLLER: &str = "a controller family, checked in tests/controller/probes.rs";

/// The mock and the proxy binaries, wired by a policy in a temporary folder.
struct Stack {
    _mock: Proc,
    mock_url: String,
    proxy: ProxyProc,
    dir: tempfile::TempDir,
    http: Http,
}

impl Stack {
    async fn start() -> Stack {
        let (mock, mock_url) = spawn_mock(KEY);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.txt"), KEY).unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, traffic::policy(&mock_url)).unwrap();
        let proxy = spawn_proxy(
            proxy_command(&policy)
                .env("POD_NAMESPACE", NAMESPACE)
                .env("POD_NAME", POD)
                .env("LLMESH_WORKLOAD", WORKLOAD)
                .env("LLMESH_LOG", "warn"),
        );
        let http = Http::new();
        traffic::set_faults(&http, &mock_url).await;
        Stack {
            _mock: mock,
            mock_url,
            proxy,
            dir,
            http,
        }
    }

    /// `host:port` of the metrics listener.
    fn metrics_addr(&self) -> &str {
        self.proxy.metrics.trim_start_matches("http://")
    }

    async fn metrics(&self) -> String {
        let (s, _, body) = self
            .http
            .get(&format!("{}/metrics", self.proxy.metrics))
            .await;
        assert_eq!(s, 200);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Waits until every needle is in `/metrics` (the outlier pass runs
    /// once a second, a reload a moment after the write).
    async fn wait_metrics(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let m = self.metrics().await;
            let missing: Vec<_> = needles.iter().filter(|n| !m.contains(**n)).collect();
            if missing.is_empty() {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "never appeared in /metrics: {missing:?}\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a policy the proxy refuses and waits until it says so.
    async fn refuse_a_policy_edit(&self) {
        std::fs::write(
            self.dir.path().join("policy.yaml"),
            traffic::broken_policy(&self.mock_url),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let m = self.metrics().await;
            if metric_value(&m, "llmesh_config_last_reload_successful", &[]) == Some(0.0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the broken policy was not refused:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The promtool unit tests of the rules, under tests/observability.
const RULE_TESTS: &[&str] = &["llmesh-rules.test.yaml", "llmesh-drift-rules.test.yaml"];

/// Families whose samples the traffic must produce, so promtool and the
/// dashboard see them with data.
const FAMILIES_WITH_SAMPLES: &[&str] = &[
    "gen_ai_client_operation_duration_seconds_bucket{",
    "gen_ai_client_token_usage_bucket{",
    "gen_ai_client_operation_time_to_first_chunk_seconds_bucket{",
    "llmesh_requests_total{",
    "llmesh_tokens_total{",
    "llmesh_cost_usd_total{",
    "llmesh_provider_cache_saved_usd_total{",
    "llmesh_unpriced_requests_total{",
    "llmesh_backend_model_version_info{",
    "llmesh_backend_model_version_changes_total{",
    "llmesh_backend_output_tokens_bucket{",
    "llmesh_backend_answers_total{",
    "llmesh_backend_errors_total{",
    "llmesh_provider_credential_ready{",
    "llmesh_provider_credential_refreshes_total{",
    "llmesh_shadow_requests_total{",
    "llmesh_shadow_tokens_total{",
    "llmesh_shadow_cost_usd_total{",
    "llmesh_shadow_latency_seconds_bucket{",
    "llmesh_shadow_output_tokens_bucket{",
    "llmesh_shadow_answers_total{",
    "llmesh_shadow_agreement_total{",
    // Not a family: the cache-write token type, for the cache panels.
    "gen_ai_token_type=\"cache_write\"",
    "llmesh_upstream_errors_total{",
    "llmesh_attempts_total{",
    "llmesh_retries_total{",
    "llmesh_failovers_total{",
    "llmesh_retry_budget_exhausted_total{",
    "llmesh_circuit_breaker_state{",
    "llmesh_outlier_ejections_total{",
    "llmesh_hedges_total{",
    "llmesh_stream_continuations_total{",
    "llmesh_context_preflight_skips_total{",
    "llmesh_passthrough_requests_total{",
    "llmesh_upgrades_total{",
    "llmesh_batch_results_total{",
    "llmesh_cache_lookups_total{",
    "llmesh_cache_saved_usd_total{",
    "llmesh_cache_entries{",
    "llmesh_semantic_cache_lookups_total{",
    "llmesh_semantic_cache_similarity_bucket{",
    "llmesh_structured_outputs_total{",
];

/// Says which Prometheus the checks below use, or that they skip (nextest
/// shows this test's output even when it passes).
#[test]
fn prometheus_tools_in_use() {
    for name in ["promtool", "prometheus"] {
        let Some(bin) = tool(name) else {
            continue;
        };
        let out = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap();
        let version = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let first = version.lines().next().unwrap_or("").to_string();
        eprintln!("{name}: {} ({first})", bin.display());
        assert!(out.status.success(), "{name} --version: {version}");
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_the_agreed_variables() {
    let dash = dashboard::load();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 39);
    assert!(!dash["uid"].as_str().unwrap().is_empty());
    assert!(!dash["title"].as_str().unwrap().is_empty());

    let vars = dash["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let names: Vec<_> = dashboard::query_variables(&dash)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["namespace", "workload", "pod"]);
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let name = &v["name"];
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["allValue"], ".*", "{name}");
        let def = v["definition"].as_str().unwrap();
        assert!(
            dashboard::parse_label_values(def).is_some(),
            "{name}: {def}"
        );
        assert_eq!(v["query"]["query"], def, "{name}");
    }

    let mut ids = HashSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in dashboard::panels(&dash) {
        let title = p["title"].as_str().unwrap().to_string();
        assert!(!title.is_empty());
        let id = p["id"].as_u64().unwrap();
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title.clone(), [x, y, w, h]));
        if p["type"] == "row" {
            continue;
        }
        assert!(
            !p["description"].as_str().unwrap_or("").is_empty(),
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        let mut refs = HashSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
            let expr = t["expr"].as_str().unwrap();
            // Every query follows the dashboard's three filters; the
            // controller's probe families, which belong to a route and no
            // workload or pod, follow the namespace.
            let filters: &[&str] = if expr.contains("llmesh_probe_") {
                &["namespace"]
            } else {
                &["namespace", "workload", "pod"]
            };
            for var in filters {
                assert!(
                    expr.contains(&format!("{var}=~\"${var}\"")),
                    "{title}: {expr} ignores ${var}"
                );
            }
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let root = repo_file("");
    let (ok, out) = promtool(&promtool_bin, &root, &["check", "rules", RULES], b"");
    assert!(ok, "promtool check rules:\n{out}");
    let tests = repo_file("tests/observability");
    // The drift alerts' tests run 8 days of series, in a file of their own
    // evaluated every 5 minutes.
    for file in RULE_TESTS {
        let (ok, out) = promtool(&promtool_bin, &tests, &["test", "rules", file], b"");
        assert!(ok, "promtool test rules {file}:\n{out}");
    }

    // Each alert has what the chart and Alertmanager routes rely on.
    let text = std::fs::read_to_string(repo_file(RULES)).unwrap();
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    let unit_tests: String = RULE_TESTS
        .iter()
        .map(|f| std::fs::read_to_string(tests.join(f)).unwrap())
        .collect();
    for block in text.split("- alert: ").skip(1) {
        let name = block.lines().next().unwrap();
        for needle in ["severity: ", "summary: ", "description: ", "expr: "] {
            assert!(block.contains(needle), "{name} has no {needle}");
        }
        assert!(
            unit_tests.contains(&format!("alertname: {name}\n")),
            "{name} has no unit test"
        );
    }
}

#[tokio::test]
async fn the_sidecars_metrics_pass_promtool_check_metrics() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let stack = Stack::start().await;
    traffic::round(&stack.http, &stack.proxy.llm).await;
    let metrics = stack.wait_metrics(FAMILIES_WITH_SAMPLES).await;
    let (ok, out) = promtool(
        &promtool_bin,
        stack.dir.path(),
        &["check", "metrics"],
        metrics.as_bytes(),
    );
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n\n{metrics}"
    );
}

#[tokio::test]
async fn every_dashboard_query_and_alert_works_on_a_real_prometheus() {
    let Some(prometheus_bin) = tool("prometheus") else {
        return;
    };
    let stack = Stack::start().await;
    // A second target of the job where nothing listens: a sidecar that is
    // down, for the `up` alert. Target labels as Kubernetes discovery
    // would attach them; honor_labels keeps the sidecar's own.
    let dead = format!("127.0.0.1:{}", prometheus::free_port());
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
rule_files: ['{rules}']
scrape_configs:
  - job_name: {JOB}
    honor_labels: true
    static_configs:
      - targets: ['{live}']
        labels: {{namespace: {NAMESPACE}, pod: {POD}}}
      - targets: ['{dead}']
        labels: {{namespace: {NAMESPACE}, pod: checkout-gone}}
",
        rules = repo_file(RULES).display(),
        live = stack.metrics_addr(),
    );
    let prom = Prometheus::start(&prometheus_bin, &config).await;
    let live = stack.metrics_addr().to_string();

    // Two rounds with a scrape between them, so counters and histogram
    // buckets grow between samples and rates are above zero; then an edit
    // the proxy refuses, and two more scrapes.
    prom.wait_scraped_after(&live, 0.0).await;
    traffic::round(&stack.http, &stack.proxy.llm).await;
    stack.wait_metrics(FAMILIES_WITH_SAMPLES).await;
    prom.wait_scraped_after(&live, unix_now()).await;
    traffic::round(&stack.http, &stack.proxy.llm).await;
    stack.refuse_a_policy_edit().await;
    prom.wait_scraped_after(&live, unix_now()).await;
    prom.wait_scraped_after(&live, unix_now()).await;

    let mut problems = Vec::new();

    // Every panel query, with the variables at "All" and at this pod.
    let dash = dashboard::load();
    let all = [("namespace", ".*"), ("workload", ".*"), ("pod", ".*")];
    let this_pod = [
        ("namespace", NAMESPACE),
        ("workload", WORKLOAD),
        ("pod", POD),
    ];
    let queries = dashboard::queries(&dash);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for q in &queries {
        let may_be_empty = MAY_BE_EMPTY
            .iter()
            .any(|(panel, r, _)| *panel == q.panel && *r == q.ref_id);
        for values in [&all[..], &this_pod[..]] {
            let expr = dashboard::substitute(&q.expr, values);
            let at = format!("panel {:?} query {} ({expr})", q.panel, q.ref_id);
            if expr.contains('$') {
                problems.push(format!("{at}: a variable is left"));
                continue;
            }
            match prom.query(&expr).await {
                Err(e) => problems.push(format!("{at}: {e}")),
                Ok(samples) => {
                    let has_data = samples.iter().any(|s| sample_value(s).is_finite());
                    if !has_data && !may_be_empty {
                        problems.push(format!("{at}: no data ({samples:?})"));
                    }
                }
            }
        }
    }

    // The variables list this sidecar, each under the ones before it.
    for (name, def) in dashboard::query_variables(&dash) {
        let (selector, label) = dashboard::parse_label_values(&def).unwrap();
        let want = this_pod.iter().find(|(n, _)| *n == name).unwrap().1;
        for values in [&all[..], &this_pod[..]] {
            let selector = dashboard::substitute(&selector, values);
            match prom.label_values(&label, &selector).await {
                Ok(found) if found.iter().any(|v| v == want) => {}
                other => problems.push(format!(
                    "variable {name} ({selector}, {label}): {other:?}, no {want}"
                )),
            }
        }
    }

    // Every alert expression is valid PromQL on these series.
    let rules_text = std::fs::read_to_string(repo_file(RULES)).unwrap();
    let rules = prom.api("/api/v1/rules").await;
    let mut exprs = BTreeMap::new();
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            exprs.insert(
                r["name"].as_str().unwrap().to_string(),
                r["query"].as_str().unwrap().to_string(),
            );
        }
    }
    // Alerts and the recording rules they read.
    let in_file =
        rules_text.matches("- alert: ").count() + rules_text.matches("- record: ").count();
    if exprs.len() != in_file {
        problems.push(format!(
            "Prometheus loaded {} rules, the file has {in_file}:\n{}",
            exprs.len(),
            prom.log()
        ));
    }
    for (name, expr) in &exprs {
        if let Err(e) = prom.query(expr).await {
            problems.push(format!("alert {name} ({expr}): {e}"));
        }
    }

    // Prometheus evaluates them without error, and the ones this traffic
    // provokes are pending (none can fire: each waits minutes), which shows
    // their selectors match what the sidecar exports.
    let pending: BTreeSet<&str> = [
        "LLMeshHighErrorRatio",
        "LLMeshCircuitBreakerOpen",
        "LLMeshRetryBudgetExhausted",
        "LLMeshConfigReloadFailing",
        "LLMeshSidecarDown",
        "LLMeshQuotaBudgetHigh",
        "LLMeshQuotaBudgetExhausted",
    ]
    .into();
    let deadline = Instant::now() + Duration::from_secs(15);
    let states = loop {
        let rules = prom.api("/api/v1/rules").await;
        let mut states = BTreeMap::new();
        for g in rules["data"]["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                states.insert(
                    r["name"].as_str().unwrap().to_string(),
                    (
                        r["health"].as_str().unwrap_or("").to_string(),
                        r["state"].as_str().unwrap_or("").to_string(),
                        r["lastError"].as_str().unwrap_or("").to_string(),
                        r["type"] == "recording",
                    ),
                );
            }
        }
        // Recording rules (the drift signals) have no state, only health.
        let settled = states.iter().all(|(name, (health, state, _, recording))| {
            health == "ok"
                && (*recording || (state == "pending") == pending.contains(name.as_str()))
        });
        if settled || Instant::now() > deadline {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (name, (health, state, error, recording)) in &states {
        let want = if *recording {
            state.as_str()
        } else if pending.contains(name.as_str()) {
            "pending"
        } else {
            "inactive"
        };
        if health != "ok" || state != want {
            problems.push(format!(
                "alert {name}: health {health} {error}, state {state}, expected {want}"
            ));
        }
    }

    // Every family the sidecar exports shows up in the dashboard or the
    // rules, so a new metric is not forgotten there.
    let metrics = stack.metrics().await;
    let dash_text = std::fs::read_to_string(repo_file(DASHBOARD)).unwrap();
    for family in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split_whitespace().next().unwrap();
        if !dash_text.contains(name) && !rules_text.contains(name) {
            problems.push(format!("{name} is in neither the dashboard nor the rules"));
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
