//! Shared by the quota tests: policies compiled the real way, admissions
//! built in one line, and a real redis-server on a free loopback port.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llmesh_api::parse_documents;
use llmesh_policy::{compile, EnvFileSecrets, Snapshot};
use llmesh_quota::{
    Admission, AnyStore, CallerId, Decision, MemoryStore, QuotaEngine, QuotaRuntime, Reservation,
};

pub const NS: &str = "team-a";

/// Compiles `yaml` as namespace `team-a`; any error fails the test.
pub fn snapshot(yaml: &str) -> Snapshot {
    let docs = parse_documents(yaml).unwrap();
    let (snap, errors) = compile(&docs, NS, &EnvFileSecrets::default());
    assert!(errors.is_empty(), "{errors:?}");
    snap
}

/// A quota document named `name` with `spec` (YAML, indented by 2).
pub fn quota(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: llmesh.io/v1alpha1\nkind: LLMQuota\nmetadata: {{name: {name}}}\nspec:\n{spec}\n---\n"
    )
}

pub fn memory_runtime() -> QuotaRuntime {
    QuotaRuntime::new(AnyStore::Memory(MemoryStore::new()))
}

pub fn engine(rt: &QuotaRuntime, yaml: &str) -> QuotaEngine {
    QuotaEngine::from_snapshot(&snapshot(yaml), rt)
}

/// 2026-11-22T10:00:00Z plus `secs`.
pub fn at(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_341_600) + Duration::from_secs_f64(secs)
}

/// An admission, fields set by the builder methods.
#[derive(Clone)]
pub struct Req {
    pub workload: String,
    pub pod: String,
    pub model: String,
    pub input: u64,
    pub output: u64,
    pub cost: f64,
    pub now: SystemTime,
    pub callers: Vec<(String, CallerId)>,
}

pub fn req(now: SystemTime) -> Req {
    Req {
        workload: "checkout".into(),
        pod: "checkout-1".into(),
        model: "gpt-4o".into(),
        input: 10,
        output: 20,
        cost: 0.0,
        now,
        callers: Vec::new(),
    }
}

impl Req {
    pub fn workload(mut self, w: &str) -> Self {
        self.workload = w.into();
        self
    }
    pub fn pod(mut self, p: &str) -> Self {
        self.pod = p.into();
        self
    }
    pub fn model(mut self, m: &str) -> Self {
        self.model = m.into();
        self
    }
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.input = input;
        self.output = output;
        self
    }
    pub fn cost(mut self, usd: f64) -> Self {
        self.cost = usd;
        self
    }
    pub fn caller(mut self, header: &str, id: CallerId) -> Self {
        self.callers.push((header.into(), id));
        self
    }

    pub async fn admit(&self, e: &QuotaEngine) -> Decision {
        let callers: Vec<(&str, CallerId)> =
            self.callers.iter().map(|(h, c)| (h.as_str(), *c)).collect();
        e.admit(&Admission {
            namespace: NS,
            workload: &self.workload,
            pod: &self.pod,
            callers: &callers,
            model: &self.model,
            input_tokens: self.input,
            output_tokens: self.output,
            est_cost_usd: self.cost,
            now: self.now,
        })
        .await
    }
}

/// The reservation of an admitted request; panics on a rejection.
pub fn admitted(d: Decision) -> Reservation {
    match d {
        Decision::Reject(r) => panic!("rejected: {r:?}"),
        d => d.into_reservation().unwrap(),
    }
}

pub fn is_reject(d: &Decision) -> bool {
    matches!(d, Decision::Reject(_))
}

// === a real redis-server ===

mod redis_server;
// (Unused by the memory tests.)
#[allow(unused_imports)]
pub use redis_server::RedisServer;

pub fn arc<T>(v: T) -> Arc<T> {
    Arc::new(v)
}
