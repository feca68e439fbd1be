//! The Grafana dashboard as the tests see it: every query of every panel,
//! with Grafana's variables replaced the way Grafana would.

use std::path::PathBuf;

use serde_json::Value;

/// Path of a file from the repository root.
pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

pub const DASHBOARD: &str = "charts/llmesh/dashboards/llmesh.json";
pub const RULES: &str = "charts/llmesh/prometheus/llmesh-rules.yaml";

pub fn load() -> Value {
    let text = std::fs::read_to_string(repo_file(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel, rows' nested panels (collapsed rows) included.
pub fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// One query of one panel.
pub struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

pub fn queries(dash: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                panel: p["title"].as_str().unwrap_or("").to_string(),
                ref_id: t["refId"].as_str().unwrap_or("").to_string(),
                expr: t["expr"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    out
}

/// The dashboard's query variables (name, `label_values(...)` definition).
pub fn query_variables(dash: &Value) -> Vec<(String, String)> {
    dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["definition"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Splits `label_values(selector, label)` into its selector and label.
pub fn parse_label_values(def: &str) -> Option<(String, String)> {
    let inner = def
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_string(), label.trim().to_string()))
}

/// Replaces Grafana's built-in interval variables with fixed windows (the
/// test's Prometheus scrapes every second, so these hold several samples)
/// and `$name` / `${name}` by `values`. Longer names go first, so `$pod`
/// cannot eat the start of a longer name.
pub fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = vec![
        ("__rate_interval", "30s"),
        ("__interval", "5s"),
        ("__range", "5m"),
    ];
    all.extend_from_slice(values);
    all.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_string();
    for (name, value) in all {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}
