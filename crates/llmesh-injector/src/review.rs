//! One AdmissionReview (admission.k8s.io/v1) in, one out: decide whether the
//! pod is selected, apply and validate its overrides, answer with a patch,
//! with no patch, or with a refusal that says what to fix.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::config::SidecarConfig;
use crate::mutate;
use crate::overrides::{self, Selection};

/// Namespaces never injected, whatever their labels or pods say.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The injector's decision-making, shared by every request.
#[derive(Debug, Clone)]
pub struct Injector {
    /// The sidecar before per-pod overrides (validated).
    pub sidecar: SidecarConfig,
    /// Whether the sidecar goes in as a native sidecar.
    pub native: bool,
    /// The injector's own namespace, never injected.
    pub own_namespace: String,
}

/// Why a review got the answer it got (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// Not selected, already injected, or not a pod CREATE: left untouched.
    Skipped(&'static str),
    /// Selected but refused (a bad override, an unsupported pod).
    Rejected,
}

impl Outcome {
    /// A short label (`injected`, `skipped`, `rejected`).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped(_) => "skipped",
            Outcome::Rejected => "rejected",
        }
    }
}

/// A request body that is not an AdmissionReview.
#[derive(Debug, thiserror::Error)]
#[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
pub struct BadReview(String);

impl Injector {
    /// Answers one AdmissionReview. `namespace_enabled` says the namespace
    /// carries `llmesh.io/injection=enabled`: the webhook configuration
    /// sends those namespaces' pods to a path of their own, so the injector
    /// needs no namespace lookups.
    pub fn review(
        &self,
        body: &[u8],
        namespace_enabled: bool,
    ) -> Result<(Value, Outcome), BadReview> {
        let review: Value = serde_json::from_slice(body).map_err(|e| BadReview(e.to_string()))?;
        let request = review
            .get("request")
            .ok_or_else(|| BadReview("no request".into()))?;
        let uid = request
            .get("uid")
            .and_then(Value::as_str)
            .ok_or_else(|| BadReview("no request.uid".into()))?;
        let api_version = review
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("admission.k8s.io/v1");
        let (response, outcome) = self.decide(uid, request, namespace_enabled);
        let answer = json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "response": response,
        });
        Ok((answer, outcome))
    }

    fn decide(&self, uid: &str, request: &Value, namespace_enabled: bool) -> (Value, Outcome) {
        let allow =
            |why: &'static str| (json!({"uid": uid, "allowed": true}), Outcome::Skipped(why));
        let kind = request.pointer("/kind/kind").and_then(Value::as_str);
        let group = request
            .pointer("/kind/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind != Some("Pod") || !group.is_empty() {
            return allow("not a pod");
        }
        if request.get("operation").and_then(Value::as_str) != Some("CREATE") {
            return allow("not a create");
        }
        if request
            .get("subResource")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return allow("a subresource");
        }
        let Some(pod) = request.get("object").filter(|o| o.is_object()) else {
            return allow("no object");
        };
        // The pod's namespace: the request's, or the pod's own when set.
        let namespace = request
            .get("namespace")
            .and_then(Value::as_str)
            .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
            .unwrap_or("default");
        if namespace == self.own_namespace || SYSTEM_NAMESPACES.contains(&namespace) {
            return allow("excluded namespace");
        }
        let annotations = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object);
        let selected = match overrides::selection(annotations) {
            Ok(Selection::Yes) => true,
            Ok(Selection::No) => false,
            Ok(Selection::Unset) => namespace_enabled,
            Err(e) => return reject(uid, &e.to_string()),
        };
        if !selected {
            return allow("not selected");
        }
        if mutate::already_injected(pod) {
            return allow("already injected");
        }
        if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
            return reject(
                uid,
                "hostNetwork pods cannot get the llmesh sidecar: its loopback ports would be the node's; \
                 remove llmesh.io/inject or set it to \"false\"",
            );
        }
        let cfg = match overrides::effective(&self.sidecar, annotations) {
            Ok(c) => c,
            Err(e) => return reject(uid, &e.to_string()),
        };
        let m = mutate::patch(pod, &cfg, self.native);
        let patch = match serde_json::to_vec(&m.ops) {
            Ok(p) => p,
            Err(e) => return reject(uid, &format!("internal error encoding the patch: {e}")),
        };
        let mut response = json!({
            "uid": uid,
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(patch),
        });
        if !m.warnings.is_empty() {
            response["warnings"] = json!(m.warnings);
        }
        (response, Outcome::Injected)
    }
}

fn reject(uid: &str, message: &str) -> (Value, Outcome) {
    (
        json!({
            "uid": uid,
            "allowed": false,
            "status": {
                "code": 400,
                "reason": "BadRequest",
                "message": format!("llmesh sidecar injection refused: {message}"),
            },
        }),
        Outcome::Rejected,
    )
}
