//! The snapshot as a document for `/config_dump`, with every secret masked.

use serde_json::{json, Map, Value};

use crate::route::{Backend, Route};
use crate::snapshot::{Provider, Snapshot};

impl Snapshot {
    /// The active policy as JSON (the admin port renders it as YAML).
    /// Credentials appear only as their source (`env:NAME`), never as values.
    pub fn dump(&self) -> Value {
        json!({
            "generation": self.generation,
            "providers": self.providers.values().map(|p| provider(p)).collect::<Vec<_>>(),
            "routes": self.routes.iter().map(|r| route(r)).collect::<Vec<_>>(),
            "models": self.model_names,
            "quotas": self.dump_resources,
            "dataPolicies": self.dump_data_policies,
        })
    }
}

fn provider(p: &Provider) -> Value {
    let mut models: Vec<_> = p.models.iter().collect();
    models.sort_by(|a, b| a.0.cmp(b.0));
    let models: Vec<Value> = models
        .into_iter()
        .map(|(name, m)| {
            let mut o = Map::new();
            o.insert("name".into(), json!(name));
            if let Some(cw) = m.context_window {
                o.insert("contextWindow".into(), json!(cw));
            }
            if let Some(pr) = m.price {
                o.insert(
                    "pricingPerMTok".into(),
                    json!({"input": pr.input * 1e6, "output": pr.output * 1e6, "cachedInput": pr.cached_input * 1e6, "cacheWrite": pr.cache_write * 1e6, "batch": pr.batch}),
                );
            }
            o.insert(
                "responsesApi".into(),
                json!(p.native_responses(name)),
            );
            // Which figures the built-in catalog gave.
            let from = |catalog: bool, present: bool| match (catalog, present) {
                (true, _) => "catalog",
                (false, true) => "policy",
                (false, false) => "none",
            };
            o.insert(
                "sources".into(),
                json!({
                    "pricing": from(m.from_catalog.price, m.price.is_some()),
                    "contextWindow": from(m.from_catalog.context_window, m.context_window.is_some()),
                }),
            );
            if let Some(d) = &m.deployment {
                o.insert("deployment".into(), json!(d));
            }
            Value::Object(o)
        })
        .collect();
    json!({
        "name": p.name,
        "namespace": p.namespace,
        "schema": p.schema,
        // Unlisted models are priced from this family of the catalog.
        "catalog": p.catalog.map(|f| json!({"family": f, "source": crate::catalog::source()})),
        "baseUrl": p.base_url.original,
        "providerName": p.provider_name,
        "credential": p.credential_source.as_ref().map(|s| format!("{s} (value masked)")),
        "caFile": p.ca_file.as_ref().map(|f| f.display().to_string()),
        "headers": p.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "models": models,
        "clearance": p.clearance,
        "limits": p.limits,
        "region": p.cloud.region,
        "project": p.cloud.project,
        "apiVersion": p.cloud.api_version,
    })
}

fn backend(b: &Backend) -> Value {
    json!({
        "provider": b.provider.name,
        "model": b.model,
        "weight": b.weight,
        "priority": b.priority,
    })
}

fn route(r: &Route) -> Value {
    json!({
        "name": r.name,
        "namespace": r.namespace,
        "models": r.models,
        "headers": r.headers.iter().map(|(k, v)| json!({"name": k.as_str(), "value": v.to_str().unwrap_or("?")})).collect::<Vec<_>>(),
        "order": r.order,
        "strategy": format!("{:?}", r.strategy),
        "backends": r.backends.iter().map(backend).collect::<Vec<_>>(),
        "retries": r.retry.map(|t| json!({
            "attempts": t.attempts,
            "backoffBase": format!("{:?}", t.backoff_base),
            "backoffMax": format!("{:?}", t.backoff_max),
            "budgetPercent": t.budget_ratio * 100.0,
            "budgetMinPerSecond": t.budget_min_per_second,
        })),
        "fallbacks": r.fallbacks.iter().map(|f| json!({
            "backends": f.backends.iter().map(backend).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "circuitBreaker": r.breaker.map(|b| format!("{b:?}")),
        "timeouts": {
            "connect": format!("{:?}", r.timeouts.connect),
            "firstByte": format!("{:?}", r.timeouts.first_byte),
            "idle": format!("{:?}", r.timeouts.idle),
            "total": format!("{:?}", r.timeouts.total),
        },
        "mirror": r.mirror.as_ref().map(|m| json!({
            "backend": backend(&m.backend),
            "percent": m.fraction * 100.0,
            "maxRequestsPerMinute": m.max_per_minute,
            "maxCostPerHour": m.max_cost_per_hour,
        })),
        "canary": r.canary.as_ref().and_then(|c| r.backends.get(c.index).map(|b| json!({
            "backend": backend(b),
            "percent": c.percent,
        }))),
        "passthrough": r.passthrough.as_ref().map(|p| json!({
            "paths": p.paths,
            "provider": p.provider.name,
        })),
        "structuredOutput": match (r.schema_retries, &r.enforced_schema) {
            (Some(n), Some(e)) => json!({"mode": "validate", "retries": n,
                "name": e.name, "schema": e.schema}),
            (Some(n), None) => json!({"mode": "validate", "retries": n}),
            (None, _) => json!({"mode": "ignore"}),
        },
        "cache": (r.cache.is_some() || r.semantic_cache.is_some()).then(|| json!({
            "exact": r.cache.map(|c| json!({
                "ttl": format!("{:?}", c.ttl),
                "mode": c.mode,
                "store": c.store,
                "maxEntries": c.max_entries,
                "maxBytes": c.max_bytes,
            })),
            "semantic": r.semantic_cache.as_ref().map(|s| json!({
                "embedding": {"provider": s.provider.name, "model": s.model, "dimensions": s.dimensions},
                "threshold": s.threshold,
                "ttl": format!("{:?}", s.ttl),
                "mode": s.mode,
                "store": s.store,
                "maxEntries": s.max_entries,
                "timeout": format!("{:?}", s.timeout),
            })),
        })),
    })
}
