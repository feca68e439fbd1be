#![allow(clippy::unwrap_used)]

use http::HeaderMap;
use llmesh_api::{parse_documents, CredentialRef, ResourceKey, ResourceKind};
use llmesh_policy::{compile, SecretError, SecretSource, TokenCounts};

struct Fixed;
impl SecretSource for Fixed {
    fn resolve(&self, r: &CredentialRef) -> Result<String, SecretError> {
        match r.env.as_deref() {
            Some("GOOD") => Ok("sk-test-123".into()),
            Some(v) => Err(SecretError::EnvNotSet(v.into())),
            None => Err(SecretError::NotExactlyOne),
        }
    }
}

const BASE: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  schema: openai
  credential: {env: GOOD}
  models:
    - name: gpt-4o-mini
      contextWindow: 128000
      pricing: {input: 0.15, output: 0.6, cachedInput: 0.075}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: claude}
spec:
  schema: anthropic
  baseUrl: http://127.0.0.1:9/v1
  credential: {env: GOOD}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  models: [gpt-4o-mini, "gpt-4*"]
  backends:
    - {provider: openai, weight: 3}
    - {provider: claude, model: claude-sonnet-4, weight: 1}
  timeouts: {connect: 2s, total: 1m}
"#;

fn build(text: &str) -> (llmesh_policy::Snapshot, Vec<llmesh_policy::CompileError>) {
    let docs = parse_documents(text).unwrap();
    compile(&docs, "team-a", &Fixed)
}

#[test]
fn compiles_providers_routes_and_lookups() {
    let (snap, errors) = build(BASE);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(snap.model_names, vec!["gpt-4o-mini"]);
    let m = snap.route_for("gpt-4o-mini", &HeaderMap::new()).unwrap();
    assert_eq!((m.index, m.pattern), (0, "gpt-4o-mini"));
    let route = m.route;
    assert_eq!(route.name, "chat");
    assert_eq!(
        snap.route_for("gpt-4.1", &HeaderMap::new())
            .unwrap()
            .pattern,
        "gpt-4*",
        "prefix match"
    );
    assert!(snap.route_for("claude-x", &HeaderMap::new()).is_none());
    assert_eq!(route.timeouts.connect.as_secs(), 2);
    assert_eq!(route.timeouts.total.as_secs(), 60);
    // weights 3:1
    let picks: Vec<_> = (0..4)
        .map(|i| route.pick(i).provider.name.as_str())
        .collect();
    assert_eq!(picks, ["openai", "openai", "openai", "claude"]);
    let openai = &snap.providers["openai"];
    let (h, v) = openai.auth.as_ref().unwrap();
    assert_eq!(h, "authorization");
    assert_eq!(v.to_str().unwrap(), "Bearer sk-test-123");
    let claude = &snap.providers["claude"];
    assert_eq!(claude.auth.as_ref().unwrap().0, "x-api-key");
    assert!(claude.headers.iter().any(|(k, _)| k == "anthropic-version"));
    let price = openai.model("gpt-4o-mini").unwrap().price.unwrap();
    let cost = price.cost(TokenCounts {
        input: 1_000_000,
        output: 1_000_000,
        ..TokenCounts::default()
    });
    assert!((cost - 0.75).abs() < 1e-9, "{cost}");
    let cached = price.cost(TokenCounts {
        input: 1_000_000,
        cached: 1_000_000,
        ..TokenCounts::default()
    });
    assert!((cached - 0.075).abs() < 1e-9, "{cached}");
    // OpenAI charges no cache-write premium: unset, writes cost `input`.
    assert!((price.cache_write * 1e6 - 0.15).abs() < 1e-12);
}

/// Anthropic's published shape: writes at 1.25x input, reads at 0.1x.
const CLAUDE_PRICED: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: claude}
spec:
  schema: anthropic
  baseUrl: http://127.0.0.1:9/v1
  credential: {env: GOOD}
  models:
    - name: claude-sonnet-4-5
      pricing: {input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75}
"#;

#[test]
fn cache_writes_and_reads_are_priced_apart() {
    let (snap, errors) = build(CLAUDE_PRICED);
    assert!(errors.is_empty(), "{errors:?}");
    let price = snap.providers["claude"]
        .model("claude-sonnet-4-5")
        .unwrap()
        .price
        .unwrap();
    // 1M prompt tokens: 200k read, 500k written, 300k plain; 10k output.
    let t = TokenCounts {
        input: 1_000_000,
        cached: 200_000,
        cache_write: 500_000,
        output: 10_000,
    };
    let want = 0.3 * 3.0 + 0.2 * 0.3 + 0.5 * 3.75 + 0.01 * 15.0;
    let cost = price.cost(t);
    assert!((cost - want).abs() < 1e-9, "{cost} != {want}");
    let saved = price.cache_savings(t);
    assert!((saved - 0.2 * (3.0 - 0.3)).abs() < 1e-9, "{saved}");
    let text = serde_json::to_string(&snap.dump()).unwrap();
    assert!(text.contains("\"cacheWrite\":3.75"), "{text}");
}

#[test]
fn cache_counts_beyond_the_prompt_are_never_billed_twice() {
    let (snap, _) = build(CLAUDE_PRICED);
    let price = snap.providers["claude"]
        .model("claude-sonnet-4-5")
        .unwrap()
        .price
        .unwrap();
    // An upstream claiming more cache reads and writes than prompt tokens:
    // reads first, then writes, each capped by what is left.
    let t = TokenCounts {
        input: 100,
        cached: 80,
        cache_write: 80,
        output: 0,
    };
    let want = 80.0 * 0.3e-6 + 20.0 * 3.75e-6;
    assert!((price.cost(t) - want).abs() < 1e-15, "{}", price.cost(t));
    let reads = TokenCounts {
        input: 100,
        cached: 500,
        ..TokenCounts::default()
    };
    let saved = price.cache_savings(reads);
    assert!((saved - 100.0 * (3.0e-6 - 0.3e-6)).abs() < 1e-15, "{saved}");
}

#[test]
fn a_cached_price_above_input_saves_nothing() {
    let text = CLAUDE_PRICED.replace("cachedInput: 0.3", "cachedInput: 4");
    let (snap, errors) = build(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let price = snap.providers["claude"]
        .model("claude-sonnet-4-5")
        .unwrap()
        .price
        .unwrap();
    let t = TokenCounts {
        input: 2_000,
        cached: 1_000,
        ..TokenCounts::default()
    };
    assert_eq!(price.cache_savings(t), 0.0);
}

#[test]
fn negative_cache_write_prices_are_refused() {
    let text = CLAUDE_PRICED.replace("cacheWrite: 3.75", "cacheWrite: -1");
    let (_, errors) = build(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("spec.models[0].pricing")),
        "{errors:?}"
    );
}

#[test]
fn dump_masks_secrets() {
    let (snap, _) = build(BASE);
    let text = serde_json::to_string(&snap.dump()).unwrap();
    assert!(!text.contains("sk-test-123"), "{text}");
    assert!(text.contains("env:GOOD"), "{text}");
}

#[test]
fn bad_resources_are_left_out_with_field_errors() {
    let text = format!(
        "{BASE}---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: nokey}}
spec: {{schema: openai, credential: {{env: MISSING}}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: compat}}
spec: {{schema: openai-compatible}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: broken}}
spec:
  models: [other]
  backends: [{{provider: nokey}}]
  timeouts: {{connect: 5 parsecs}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: thief}}
spec:
  models: [gpt-4o-mini]
  backends: [{{provider: openai}}]
"
    );
    let (snap, errors) = build(&text);
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
    assert!(
        has("LLMProvider/team-a/nokey: spec.credential: environment variable MISSING is not set"),
        "{msgs:#?}"
    );
    assert!(
        has("LLMProvider/team-a/compat: spec.baseUrl: required"),
        "{msgs:#?}"
    );
    assert!(
        has("LLMRoute/team-a/broken: spec.backends[0].provider"),
        "{msgs:#?}"
    );
    assert!(
        has("LLMRoute/team-a/broken: spec.timeouts.connect"),
        "{msgs:#?}"
    );
    assert!(has("LLMRoute/team-a/thief: spec.models[0]: model \"gpt-4o-mini\" is already served by route chat with the same order and headers"), "{msgs:#?}");
    // The parts are typed: no need to split the text to find the object.
    let e = errors
        .iter()
        .find(|e| e.field == "spec.backends[0].provider")
        .unwrap();
    assert_eq!(
        (e.kind, e.namespace.as_str(), e.name.as_str()),
        (ResourceKind::Route, "team-a", "broken")
    );
    assert_eq!(e.reason, "no valid LLMProvider named \"nokey\"");
    assert_eq!(e.key(), ResourceKey::new(ResourceKind::Route, "broken"));
    // the good ones still compile
    assert_eq!(snap.routes.len(), 1);
    assert_eq!(snap.providers.len(), 2);
}

const ROUTING: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: a}
spec: {schema: openai, credential: {env: GOOD}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: b}
spec: {schema: anthropic, credential: {env: GOOD}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: general}
spec:
  models: [chat, "gpt-*"]
  strategy: {type: least-request}
  backends:
    - {provider: a, model: gpt-4o-mini}
    - {provider: b, model: claude-haiku, priority: 1}
  retries: {attempts: 3, when: [server-error, rate-limited], backoffBase: 50ms, budgetPercent: 10}
  fallbacks:
    - when: [context-length]
      backends: [{provider: b, model: claude-sonnet-4-5}]
  circuitBreaker: {consecutiveFailures: 3, openFor: 10s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: coding}
spec:
  models: [chat]
  headers: {X-LLMesh-Task: coding}
  strategy: {type: latency, explorationPercent: 10}
  backends: [{provider: b, model: claude-sonnet-4-5}]
  retries: {attempts: 0}
"#;

#[test]
fn header_conditions_and_order_pick_the_route() {
    let (snap, errors) = build(ROUTING);
    assert!(errors.is_empty(), "{errors:?}");
    let mut h = HeaderMap::new();
    assert_eq!(snap.route_for("chat", &h).unwrap().route.name, "general");
    h.insert("x-llmesh-task", "coding".parse().unwrap());
    assert_eq!(
        snap.route_for("chat", &h).unwrap().route.name,
        "coding",
        "more headers first"
    );
    h.insert("x-llmesh-task", "writing".parse().unwrap());
    assert_eq!(snap.route_for("chat", &h).unwrap().route.name, "general");
    assert_eq!(snap.model_names, vec!["chat"]);
}

#[test]
fn resilience_settings_compile() {
    use llmesh_api::ErrorClass;
    use llmesh_policy::StrategyKind;
    let (snap, _) = build(ROUTING);
    let general = snap.route_for("gpt-4.1", &HeaderMap::new()).unwrap().route;
    assert_eq!(general.strategy, StrategyKind::LeastRequest);
    assert_eq!(general.backends[1].priority, 1);
    let retry = general.retry.unwrap();
    assert_eq!(retry.attempts, 3);
    assert!(retry.on.contains(ErrorClass::RateLimited));
    assert!(!retry.on.contains(ErrorClass::Timeout));
    assert_eq!(retry.backoff_base.as_millis(), 50);
    assert!((retry.budget_ratio - 0.1).abs() < 1e-9);
    let fb = general.fallback_for(ErrorClass::ContextLength).unwrap();
    assert_eq!(fb.backends[0].model.as_deref(), Some("claude-sonnet-4-5"));
    assert!(general.fallback_for(ErrorClass::RateLimited).is_none());
    let br = general.breaker.unwrap();
    assert_eq!((br.consecutive_failures, br.open_for.as_secs()), (3, 10));
    let mut h = HeaderMap::new();
    h.insert("x-llmesh-task", "coding".parse().unwrap());
    let coding = snap.route_for("chat", &h).unwrap().route;
    assert_eq!(coding.strategy, StrategyKind::Latency { exploration: 0.1 });
    assert!(coding.retry.is_none() && coding.breaker.is_none());
}

#[test]
fn bad_resilience_fields_are_named() {
    let text = ROUTING
        .replace(
            "when: [server-error, rate-limited]",
            "when: [invalid-request]",
        )
        .replace("backoffBase: 50ms", "backoffBase: soon")
        .replace(
            "[{provider: b, model: claude-sonnet-4-5}]\n  circuit",
            "[{provider: ghost}]\n  circuit",
        );
    let (_, errors) = build(&text);
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
    assert!(
        has("spec.retries.when: invalid-request is never retried"),
        "{msgs:#?}"
    );
    assert!(has("spec.retries.backoffBase"), "{msgs:#?}");
    assert!(has("spec.fallbacks[0].backends[0].provider"), "{msgs:#?}");
    let bad = parse_documents(&ROUTING.replace("{type: least-request}", "{type: fastest}"));
    assert!(bad.unwrap_err().to_string().contains("strategy"));
}

#[test]
fn semantic_caches_compile_and_bad_ones_name_their_field() {
    let route = |semantic: &str| {
        format!(
            "{BASE}---\napiVersion: llmesh.io/v1alpha1\nkind: LLMRoute\nmetadata: {{name: faq}}\nspec:\n  models: [faq]\n  backends: [{{provider: openai}}]\n  cache: {{semantic: {semantic}}}\n"
        )
    };
    let (snap, errors) = build(&route(
        "{embedding: {provider: openai, model: text-embedding-3-small}}",
    ));
    assert!(errors.is_empty(), "{errors:?}");
    let faq = snap.routes.iter().find(|r| r.name == "faq").unwrap();
    let s = faq.semantic_cache.as_ref().unwrap();
    assert_eq!((s.threshold, s.max_entries), (0.95, 1000));
    assert_eq!(s.mode, llmesh_api::CacheMode::Always);
    assert!(faq.cache.is_none());
    for (semantic, field, says) in [
        (
            "{embedding: {provider: nobody, model: m}}",
            "spec.cache.semantic.embedding.provider",
            "no valid LLMProvider",
        ),
        (
            "{embedding: {provider: claude, model: m}}",
            "spec.cache.semantic.embedding.provider",
            "OpenAI API",
        ),
        (
            "{embedding: {provider: openai, model: m}, ttl: soon}",
            "spec.cache.semantic.ttl",
            "",
        ),
        (
            "{embedding: {provider: openai, model: m}, threshold: 0.2}",
            "spec.cache.semantic.threshold",
            "between 0.5 and 1",
        ),
        (
            "{embedding: {provider: openai, model: m}, timeout: 0s}",
            "spec.cache.semantic.timeout",
            "",
        ),
    ] {
        let (_, errors) = build(&route(semantic));
        let e = errors
            .iter()
            .find(|e| e.to_string().contains(field))
            .unwrap_or_else(|| panic!("{semantic}: {errors:?}"));
        assert!(e.to_string().contains(says), "{e}");
    }
    // A cache with neither part says so.
    let (_, errors) = build(&route("null").replace("cache: {semantic: null}", "cache: {}"));
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("needs exact, semantic or both")),
        "{errors:?}"
    );
}

const SCHEMA_ROUTE: &str = r#"
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: extract}
spec:
  models: [extractor]
  backends: [{provider: openai}]
  structuredOutput:
    retries: 2
    name: invoice
    schema:
      type: object
      required: [total]
      properties:
        total: {type: number}
"#;

#[test]
fn a_route_schema_compiles_and_is_dumped() {
    let (snap, errors) = build(&format!("{BASE}{SCHEMA_ROUTE}"));
    assert!(errors.is_empty(), "{errors:?}");
    let route = snap
        .route_for("extractor", &HeaderMap::new())
        .unwrap()
        .route;
    let enforced = route.enforced_schema.as_ref().unwrap();
    assert_eq!(enforced.name, "invoice");
    assert_eq!(enforced.schema["required"][0], "total");
    assert!(enforced
        .validator
        .is_valid(&serde_json::json!({"total": 3.5})));
    assert!(!enforced
        .validator
        .is_valid(&serde_json::json!({"total": "x"})));
    // Routes without one enforce none.
    let chat = snap
        .route_for("gpt-4o-mini", &HeaderMap::new())
        .unwrap()
        .route;
    assert!(chat.enforced_schema.is_none());
    let dump = snap.dump();
    let text = serde_json::to_string(&dump).unwrap();
    assert!(
        text.contains(r#""structuredOutput":{"mode":"validate","name":"invoice","retries":2,"schema":{"properties":{"total":{"type":"number"}},"required":["total"],"type":"object"}}"#),
        "{text}"
    );
    // The name defaults to `response`.
    let (snap, _) = build(&format!(
        "{BASE}{}",
        SCHEMA_ROUTE.replace("    name: invoice\n", "")
    ));
    let route = snap
        .route_for("extractor", &HeaderMap::new())
        .unwrap()
        .route;
    assert_eq!(route.enforced_schema.as_ref().unwrap().name, "response");
}

#[test]
fn a_bad_route_schema_is_refused_with_its_field() {
    let refused = |text: String, field: &str, needle: &str| {
        let (snap, errors) = build(&format!("{BASE}{text}"));
        assert!(snap.route_for("extractor", &HeaderMap::new()).is_none());
        let e = errors
            .iter()
            .find(|e| e.name == "extract")
            .unwrap_or_else(|| panic!("accepted: {text}"));
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains(needle), "{e}");
    };
    refused(
        SCHEMA_ROUTE.replace("total: {type: number}", "total: {type: numeric}"),
        "spec.structuredOutput.schema",
        "is not a valid JSON Schema",
    );
    refused(
        SCHEMA_ROUTE.replace("required: [total]", "required: total"),
        "spec.structuredOutput.schema",
        "is not a valid JSON Schema",
    );
    refused(
        SCHEMA_ROUTE.replace("retries: 2", "mode: ignore"),
        "spec.structuredOutput.schema",
        "mode: ignore",
    );
    refused(
        SCHEMA_ROUTE.replace("name: invoice", "name: \"my invoice\""),
        "spec.structuredOutput.name",
        "letters, digits",
    );
    let no_schema = SCHEMA_ROUTE.split("    schema:").next().unwrap().to_owned();
    refused(no_schema, "spec.structuredOutput.name", "only with");
}

#[test]
fn the_committed_catalog_is_what_the_converter_makes_of_its_source() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("python3")
        .arg(root.join("catalog/convert.py"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed =
        std::fs::read_to_string(root.join("crates/llmesh-policy/src/catalog.json")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "crates/llmesh-policy/src/catalog.json is stale: run `make catalog`"
    );
}

#[test]
fn unlisted_and_unpriced_models_take_the_catalog_figures_and_the_policy_wins() {
    let text = format!(
        "{BASE}---\napiVersion: llmesh.io/v1alpha1\nkind: LLMProvider\nmetadata: {{name: local}}\nspec:\n  schema: openai-compatible\n  baseUrl: http://vllm.internal:8000/v1\n  models: [{{name: gpt-4o}}]\n---\napiVersion: llmesh.io/v1alpha1\nkind: LLMProvider\nmetadata: {{name: ant}}\nspec:\n  schema: anthropic\n  credential: {{env: GOOD}}\n  models: [{{name: claude-sonnet-4-5, contextWindow: 1000}}]\n"
    );
    let (snap, errors) = build(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let oai = snap.providers.get("openai").unwrap();
    // Listed with a price: the policy's; its window: the policy's.
    let listed = oai.model("gpt-4o-mini").unwrap();
    assert!((listed.price.unwrap().input * 1e6 - 0.15).abs() < 1e-9);
    assert!(!listed.from_catalog.price);
    // Not listed: the catalog's.
    let gpt4o = oai.model("gpt-4o").unwrap();
    assert!((gpt4o.price.unwrap().output * 1e6 - 10.0).abs() < 1e-9);
    assert!(gpt4o.from_catalog.price && gpt4o.from_catalog.context_window);
    assert!(oai.model("no-such-model").is_none());
    // A self-hosted OpenAI-compatible server has no catalog prices.
    let local = snap.providers.get("local").unwrap();
    assert!(local.model("gpt-4o").unwrap().price.is_none());
    assert!(local.model("gpt-4o-mini").is_none());
    // The dump says where each figure came from.
    let ant = snap
        .providers
        .get("ant")
        .unwrap()
        .model("claude-sonnet-4-5")
        .unwrap();
    assert_eq!(ant.context_window, Some(1000));
    assert!(ant.from_catalog.price && !ant.from_catalog.context_window);
    let dump = snap.dump().to_string();
    assert!(
        dump.contains(r#""sources":{"contextWindow":"policy","pricing":"catalog"}"#),
        "{dump}"
    );
    assert!(dump.contains(r#""family":"anthropic""#), "{dump}");
}
