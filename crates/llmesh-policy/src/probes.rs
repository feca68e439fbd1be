//! `spec.probes` of an `LLMRoute`: what makes a set of golden prompts
//! valid (the sidecar's compiler refuses a bad one, so the controller's
//! `Accepted` says why), the chat request each prompt becomes, and the
//! verdict on an answer. The controller's prober runs them; nothing here
//! does I/O.
//!
//! Verdicts name the probe and the check, never the prompt's or the
//! answer's text: they go into `status`, Events and logs.

use std::collections::HashSet;
use std::time::Duration;

use llmesh_api::{GoldenPrompt, LLMRouteSpec, MirrorBackend, ProbeChecks, ProbesSpec};
use regex::{Regex, RegexBuilder};
use serde_json::{json, Value};

use crate::duration::parse_duration;

/// Time between runs when `spec.probes.interval` is unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// The shortest interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Wait for one answer when `spec.probes.timeout` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Compiled size limit of a probe's `regex`.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A route's golden prompts, ready to run.
#[derive(Debug)]
pub struct ProbeSet {
    /// Time between two runs against each backend.
    pub interval: Duration,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// The model name requested.
    pub model: String,
    /// USD the route's probes may spend per UTC day.
    pub max_cost_per_day: Option<f64>,
    /// The prompts, in the spec's order.
    pub prompts: Vec<Probe>,
}

/// One golden prompt: its request and its checks.
#[derive(Debug)]
pub struct Probe {
    /// `spec.probes.prompts[].name`.
    pub name: String,
    /// The OpenAI chat completions request sent (through the sidecar's
    /// translation to the backend's API).
    pub body: Value,
    checks: Checks,
}

#[derive(Debug)]
struct Checks {
    schema: Option<jsonschema::Validator>,
    regex: Option<Regex>,
    contains: Vec<String>,
    not_contains: Vec<String>,
    max_tokens: Option<u32>,
    tool_called: Option<String>,
}

/// A field of `spec.probes` and what is wrong with it.
pub type FieldError = (String, String);

fn duration_field(
    text: Option<&str>,
    field: &str,
    default: Duration,
    min: Duration,
    errors: &mut Vec<FieldError>,
) -> Duration {
    let Some(t) = text else { return default };
    match parse_duration(t) {
        Ok(d) if d >= min && !d.is_zero() => d,
        Ok(_) => {
            errors.push((
                field.to_string(),
                format!("must be at least {}s", min.as_secs().max(1)),
            ));
            default
        }
        Err(e) => {
            errors.push((field.to_string(), e.to_string()));
            default
        }
    }
}

fn matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

/// Checks `spec.probes` of `route` and builds the set; every error at
/// once, each with its field.
pub fn build(route: &LLMRouteSpec, spec: &ProbesSpec) -> Result<ProbeSet, Vec<FieldError>> {
    let mut errors = Vec::new();
    let interval = duration_field(
        spec.interval.as_deref(),
        "spec.probes.interval",
        DEFAULT_INTERVAL,
        MIN_INTERVAL,
        &mut errors,
    );
    let timeout = duration_field(
        spec.timeout.as_deref(),
        "spec.probes.timeout",
        DEFAULT_TIMEOUT,
        Duration::from_millis(1),
        &mut errors,
    );
    let max_cost_per_day = match &spec.max_cost_per_day {
        None => None,
        Some(t) => match crate::quota::parse_usd(t) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(("spec.probes.maxCostPerDay".into(), e.to_string()));
                None
            }
        },
    };
    let model = match &spec.model {
        Some(m) if m.is_empty() => {
            errors.push(("spec.probes.model".into(), "must not be empty".into()));
            String::new()
        }
        Some(m) => {
            if !route.models.iter().any(|p| matches(p, m)) {
                errors.push((
                    "spec.probes.model".into(),
                    format!("{m:?} is not one of the route's spec.models"),
                ));
            }
            m.clone()
        }
        None => match route.models.iter().find(|m| !m.ends_with('*')) {
            Some(m) => m.clone(),
            None => {
                errors.push((
                    "spec.probes.model".into(),
                    "required when every entry of spec.models is a pattern".into(),
                ));
                String::new()
            }
        },
    };
    if spec.prompts.is_empty() {
        errors.push((
            "spec.probes.prompts".into(),
            "must hold at least one prompt".into(),
        ));
    }
    if spec.prompts.len() > 20 {
        errors.push(("spec.probes.prompts".into(), "at most 20 prompts".into()));
    }
    let mut names = HashSet::new();
    let mut prompts = Vec::with_capacity(spec.prompts.len());
    for (i, p) in spec.prompts.iter().enumerate() {
        let at = format!("spec.probes.prompts[{i}]");
        if !names.insert(p.name.as_str()) {
            errors.push((format!("{at}.name"), format!("{:?} is used twice", p.name)));
        }
        let name_ok = (1..=63).contains(&p.name.len())
            && p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.name.starts_with('-')
            && !p.name.ends_with('-');
        if !name_ok {
            errors.push((
                format!("{at}.name"),
                "must be 1 to 63 lowercase letters, digits or `-`, not starting or ending with `-`"
                    .into(),
            ));
        }
        if let Some(probe) = build_prompt(&model, p, &at, &mut errors) {
            prompts.push(probe);
        }
    }
    if errors.is_empty() {
        Ok(ProbeSet {
            interval,
            timeout,
            model,
            max_cost_per_day,
            prompts,
        })
    } else {
        Err(errors)
    }
}

fn build_prompt(
    model: &str,
    p: &GoldenPrompt,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Probe> {
    let before = errors.len();
    if p.messages.is_empty() {
        errors.push((
            format!("{at}.messages"),
            "must hold at least one message".into(),
        ));
    }
    if p.max_tokens == Some(0) {
        errors.push((format!("{at}.maxTokens"), "must be > 0".into()));
    }
    let mut tools = HashSet::new();
    for (j, t) in p.tools.iter().enumerate() {
        if !tools.insert(t.name.as_str()) {
            errors.push((
                format!("{at}.tools[{j}].name"),
                format!("{:?} is used twice", t.name),
            ));
        }
        if t.parameters.as_ref().is_some_and(|v| !v.is_object()) {
            errors.push((
                format!("{at}.tools[{j}].parameters"),
                "must be a JSON Schema object".into(),
            ));
        }
    }
    let checks = build_checks(&p.expect, &tools, &format!("{at}.expect"), errors);
    if errors.len() > before {
        return None;
    }
    let mut body = json!({
        "model": model,
        "messages": p.messages.iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect::<Vec<_>>(),
    });
    if let Some(n) = p.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(schema) = &p.expect.json_schema {
        body["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": "probe", "schema": schema}});
    }
    if !p.tools.is_empty() {
        body["tools"] = p
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name,
                    "parameters": t.parameters.clone().unwrap_or_else(|| json!({"type": "object"}))});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
    }
    Some(Probe {
        name: p.name.clone(),
        body,
        checks: checks?,
    })
}

fn build_checks(
    e: &ProbeChecks,
    tools: &HashSet<&str>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Checks> {
    let schema = match &e.json_schema {
        None => None,
        Some(s) if !s.is_object() => {
            errors.push((
                format!("{at}.jsonSchema"),
                "must be a JSON Schema object".into(),
            ));
            None
        }
        Some(s) => match jsonschema::validator_for(s) {
            Ok(v) => Some(v),
            Err(err) => {
                errors.push((
                    format!("{at}.jsonSchema"),
                    format!("is not a valid JSON Schema: {err}{}", yaml11_hint(s)),
                ));
                None
            }
        },
    };
    let regex = match &e.regex {
        None => None,
        Some(r) => match RegexBuilder::new(r).size_limit(REGEX_SIZE_LIMIT).build() {
            Ok(re) => Some(re),
            Err(err) => {
                errors.push((
                    format!("{at}.regex"),
                    format!("is not a valid regex: {err}"),
                ));
                None
            }
        },
    };
    for (field, list) in [("contains", &e.contains), ("notContains", &e.not_contains)] {
        if list.iter().any(String::is_empty) {
            errors.push((format!("{at}.{field}"), "entries must not be empty".into()));
        }
    }
    if e.max_tokens == Some(0) {
        errors.push((format!("{at}.maxTokens"), "must be > 0".into()));
    }
    if let Some(t) = &e.tool_called {
        if !tools.contains(t.as_str()) {
            errors.push((
                format!("{at}.toolCalled"),
                format!("{t:?} is not one of the prompt's tools"),
            ));
        }
    }
    Some(Checks {
        schema,
        regex,
        contains: e.contains.clone(),
        not_contains: e.not_contains.clone(),
        max_tokens: e.max_tokens,
        tool_called: e.tool_called.clone(),
    })
}

/// A hint when a schema holds what YAML 1.1 (kubectl, Helm) makes of an
/// unquoted `n`, `y`, `no`, `on`...: a `true`/`false` property name or a
/// boolean in `required`.
fn yaml11_hint(schema: &Value) -> &'static str {
    fn has(v: &Value) -> bool {
        match v {
            Value::Object(o) => o.iter().any(|(k, v)| {
                k == "true"
                    || k == "false"
                    || (k == "required"
                        && v.as_array()
                            .is_some_and(|a| a.iter().any(Value::is_boolean)))
                    || has(v)
            }),
            Value::Array(a) => a.iter().any(has),
            _ => false,
        }
    }
    if has(schema) {
        " (kubectl and Helm read YAML 1.1: an unquoted y, n, yes, no, on or off is a boolean; quote property names like 'n')"
    } else {
        ""
    }
}

/// The backends a route's probes run against: its own, its fallback
/// chains', then the mirror's and the canary's candidates, each
/// `provider`/`model` once.
pub fn targets(route: &LLMRouteSpec) -> Vec<MirrorBackend> {
    let mut out: Vec<MirrorBackend> = Vec::new();
    let own = route
        .backends
        .iter()
        .chain(route.fallbacks.iter().flat_map(|f| f.backends.iter()))
        .map(|b| MirrorBackend {
            provider: b.provider.clone(),
            model: b.model.clone(),
        });
    let extra = route
        .mirror
        .iter()
        .map(|m| m.backend.clone())
        .chain(route.canary.iter().map(|c| c.backend.clone()));
    for b in own.chain(extra) {
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

impl Probe {
    /// What fails in the answer a chat completions call returned with
    /// `status` and body `answer` (empty: every check holds). Each entry
    /// names the check, never the text.
    pub fn check(&self, status: u16, answer: &Value) -> Vec<String> {
        if status != 200 {
            let e = &answer["error"];
            let kind = e["type"]
                .as_str()
                .or_else(|| e["code"].as_str())
                .unwrap_or("no error type");
            return vec![format!("HTTP {status} ({kind})")];
        }
        let c = &self.checks;
        let mut failed = Vec::new();
        let message = &answer["choices"][0]["message"];
        let text = message["content"].as_str().unwrap_or("");
        if let Some(v) = &c.schema {
            match serde_json::from_str::<Value>(text) {
                Err(_) => failed.push("the answer is not JSON".to_string()),
                Ok(doc) => {
                    if let Some(err) = v.iter_errors(&doc).next() {
                        let at = err.instance_path().to_string();
                        let at = if at.is_empty() { "/".to_string() } else { at };
                        failed.push(format!(
                            "the answer does not match jsonSchema at {at} ({})",
                            err.schema_path()
                        ));
                    }
                }
            }
        }
        if let Some(re) = &c.regex {
            if !re.is_match(text) {
                failed.push("the answer does not match regex".to_string());
            }
        }
        for s in &c.contains {
            if !text.contains(s.as_str()) {
                failed.push(format!("the answer does not contain {s:?}"));
            }
        }
        for s in &c.not_contains {
            if text.contains(s.as_str()) {
                failed.push(format!("the answer contains {s:?}"));
            }
        }
        if let Some(max) = c.max_tokens {
            let used = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            if used > u64::from(max) {
                failed.push(format!("{used} output tokens (at most {max})"));
            }
        }
        if let Some(tool) = &c.tool_called {
            let called = message["tool_calls"].as_array().is_some_and(|calls| {
                calls
                    .iter()
                    .any(|t| t["function"]["name"].as_str() == Some(tool.as_str()))
            });
            if !called {
                failed.push(format!("{tool:?} was not called"));
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests;
