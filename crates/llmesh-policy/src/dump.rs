//! The snapshot as a document for `/config_dump`, with every secret masked.

use serde_json::{json, Map, Value};

use crate::route::Route;
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
            "notEnforced": self.dump_resources,
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
                    json!({"input": pr.input * 1e6, "output": pr.output * 1e6, "cachedInput": pr.cached_input * 1e6}),
                );
            }
            Value::Object(o)
        })
        .collect();
    json!({
        "name": p.name,
        "namespace": p.namespace,
        "schema": p.schema,
        "baseUrl": p.base_url.original,
        "providerName": p.provider_name,
        "credential": p.credential_source.as_ref().map(|s| format!("{s} (value masked)")),
        "caFile": p.ca_file.as_ref().map(|f| f.display().to_string()),
        "headers": p.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "models": models,
    })
}

fn route(r: &Route) -> Value {
    json!({
        "name": r.name,
        "namespace": r.namespace,
        "models": r.models,
        "backends": r.backends.iter().map(|b| json!({
            "provider": b.provider.name,
            "model": b.model,
            "weight": b.weight,
        })).collect::<Vec<_>>(),
        "timeouts": {
            "connect": format!("{:?}", r.timeouts.connect),
            "firstByte": format!("{:?}", r.timeouts.first_byte),
            "idle": format!("{:?}", r.timeouts.idle),
            "total": format!("{:?}", r.timeouts.total),
        },
    })
}
