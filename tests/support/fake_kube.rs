//! A fake Kubernetes API server for the llmesh kinds: enough of the real
//! list/watch protocol for kube-rs reflectors, over plain HTTP on loopback.
//!
//! - `GET /apis/llmesh.io/v1alpha1/namespaces/{ns}/{plural}` lists, with the
//!   collection's `metadata.resourceVersion`.
//! - The same with `watch=true&resourceVersion=N` streams newline-delimited
//!   watch events after N (`ADDED`, `MODIFIED`, `DELETED`), a `BOOKMARK`
//!   once caught up when `allowWatchBookmarks=true`, and then live events
//!   until `timeoutSeconds` or a forced drop. A resourceVersion older than
//!   the last compaction gets an `ERROR` event with a `410 Gone` status,
//!   which makes the client relist.
//! - The same without `namespaces/{ns}` lists and watches every namespace.
//! - `PATCH .../namespaces/{ns}/{plural}/{name}/status` with a JSON merge
//!   patch changes `status` only: the resourceVersion moves, the generation
//!   does not, and watches get a `MODIFIED` event.
//! - Leases (`coordination.k8s.io/v1`: GET, POST, PUT with resourceVersion
//!   checks answering 409) and Event creation (`events.k8s.io/v1` and core
//!   `v1`), in `fake_kube/control.rs`.
//! - `GET /version`, Secrets and MutatingWebhookConfigurations (the sidecar
//!   injector's certificate and caBundle), in `fake_kube/admission.rs`:
//!   [`FakeKube::put_webhook_configuration`], [`FakeKube::webhook_configuration`],
//!   [`FakeKube::secret`], [`FakeKube::set_minor_version`].
//! - Bodies are decoded as the real server decodes them (`kubectl.rs`): an
//!   llmesh object must pass its CRD's schema with strict field validation
//!   and its CEL rules ([`FakeKube::apply`] panics, [`FakeKube::try_apply`]
//!   returns the refusal; [`FakeKube::apply_yaml`] reads YAML as kubectl
//!   does, YAML 1.1), a status patch must fit the status schema, and a
//!   built-in kind must decode into its Kubernetes type without a field
//!   YAML 1.1 made out of `on` / `yes`.
//! - Tests change objects ([`FakeKube::apply`], [`FakeKube::delete`]),
//!   cut every open watch ([`FakeKube::drop_watches`]), compact history
//!   ([`FakeKube::compact`]) or make every request fail
//!   ([`FakeKube::set_down`]), and read what clients wrote
//!   ([`FakeKube::object`], [`FakeKube::status_patches`],
//!   [`FakeKube::events`], [`FakeKube::lease`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

mod admission;
mod control;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    ns: String,
    plural: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Change>,
    /// Watches resuming from before this get 410 Gone.
    compacted: u64,
    down: bool,
    requests: Vec<String>,
    /// (namespace, plural, name) of every accepted status patch, in order.
    status_patches: Vec<(String, String, String)>,
    /// Leases by (namespace, name).
    leases: BTreeMap<(String, String), Value>,
    /// Events created, in order.
    events: Vec<Value>,
    /// Other objects (Secrets, webhook configurations) by API path.
    plain: BTreeMap<String, Value>,
    /// API paths of accepted JSON patches, in order.
    patches: Vec<String>,
    /// The minor version `GET /version` answers (major is 1).
    minor_version: u32,
}

/// The fake API server. Dropping it stops it.
pub struct FakeKube {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Wakes watches on every change; `true` tells them to close.
    notify: broadcast::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let _ = self.notify.send(true);
        self.task.abort();
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "llmproviders" => "LLMProvider",
        "llmroutes" => "LLMRoute",
        "llmquotas" => "LLMQuota",
        "llmdatapolicies" => "LLMDataPolicy",
        _ => "Unknown",
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            minor_version: 33,
            ..State::default()
        }));
        let (notify, _) = broadcast::channel(1024);
        let (s, n) = (state.clone(), notify.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (s, n) = (s.clone(), n.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (s, n) = (s.clone(), n.clone());
                        async move { Ok::<_, Infallible>(handle(req, s, n).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FakeKube {
            addr,
            state,
            notify,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file text pointing at this server with `namespace`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: tester, namespace: {namespace}}}\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Creates or replaces an object given as YAML/JSON text of one llmesh
    /// resource (`metadata.namespace` must be set), read as `kubectl apply`
    /// reads it (YAML 1.1). Returns its new resourceVersion; panics with the
    /// API server's message if it would refuse the object.
    pub fn apply_yaml(&self, text: &str) -> u64 {
        let mut docs = crate::kubectl::read_as_kubectl(text)
            .unwrap_or_else(|e| panic!("kubectl cannot read the object: {e}"));
        assert_eq!(docs.len(), 1, "fake_kube takes one YAML object");
        self.apply(docs.remove(0))
    }

    /// Stores an object the generated CRD would refuse, as a cluster whose
    /// CRD is older or laxer than the sidecar's (version skew, a CRD
    /// installed by hand) stores it: for the tests of what the sidecar and
    /// the controller do with a wrongly shaped object.
    pub fn apply_yaml_past_the_schema(&self, text: &str) -> u64 {
        let mut docs = crate::kubectl::read_as_kubectl(text)
            .unwrap_or_else(|e| panic!("kubectl cannot read the object: {e}"));
        assert_eq!(docs.len(), 1, "fake_kube takes one YAML object");
        assert!(
            crate::kubectl::admit(&docs[0]).is_err(),
            "the API server accepts this object: use apply_yaml"
        );
        self.store(docs.remove(0))
    }

    /// Creates or replaces an object (server fields are filled in). As on a
    /// real API server with a status subresource, the status in `obj` is
    /// ignored and the stored one kept, and the generation moves only when
    /// the spec changes. Panics with the API server's message if it would
    /// refuse the object (see [`FakeKube::try_apply`]).
    pub fn apply(&self, obj: Value) -> u64 {
        match self.try_apply(obj) {
            Ok(rv) => rv,
            Err(message) => panic!("the API server refuses the object: {message}"),
        }
    }

    /// [`FakeKube::apply`], or the API server's refusal: strict decoding
    /// against the CRD's schema (unknown fields, types, bounds) and its CEL
    /// rules.
    pub fn try_apply(&self, obj: Value) -> Result<u64, String> {
        if let Err(errors) = crate::kubectl::admit(&obj) {
            return Err(format!(
                "{} {:?} is invalid: {}",
                obj["kind"].as_str().unwrap_or("?"),
                obj["metadata"]["name"].as_str().unwrap_or("?"),
                errors.join("; ")
            ));
        }
        Ok(self.store(obj))
    }

    fn store(&self, mut obj: Value) -> u64 {
        let ns = obj["metadata"]["namespace"].as_str().unwrap().to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let kind = obj["kind"].as_str().unwrap().to_string();
        let plural = match kind.as_str() {
            "LLMProvider" => "llmproviders",
            "LLMRoute" => "llmroutes",
            "LLMQuota" => "llmquotas",
            "LLMDataPolicy" => "llmdatapolicies",
            other => panic!("unknown kind {other}"),
        }
        .to_string();
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let key = (ns.clone(), plural.clone(), name.clone());
        let previous = st.objects.get(&key).cloned();
        let generation = match &previous {
            None => 1,
            Some(p) => {
                let g = p["metadata"]["generation"].as_i64().unwrap_or(1);
                if p.get("spec") == obj.get("spec") {
                    g
                } else {
                    g + 1
                }
            }
        };
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
            if let Some(st) = previous.as_ref().and_then(|p| p.get("status")) {
                map.insert("status".into(), st.clone());
            }
        }
        let meta = &mut obj["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(generation);
        meta["uid"] = json!(format!("uid-{ns}-{plural}-{name}"));
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        st.objects.insert(key, obj.clone());
        st.log.push(Change {
            rv,
            ns,
            plural: plural.clone(),
            kind: if previous.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            object: obj,
        });
        drop(st);
        let _ = self.notify.send(false);
        rv
    }

    /// Deletes an object; no-op if absent.
    pub fn delete(&self, ns: &str, plural: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        let key = (ns.to_string(), plural.to_string(), name.to_string());
        let Some(mut obj) = st.objects.remove(&key) else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.log.push(Change {
            rv,
            ns: ns.to_string(),
            plural: plural.to_string(),
            kind: "DELETED",
            object: obj,
        });
        drop(st);
        let _ = self.notify.send(false);
    }

    /// Closes every open watch (clients re-watch from their last version).
    pub fn drop_watches(&self) {
        let _ = self.notify.send(true);
    }

    /// Forgets history: watches resuming from an older version get
    /// `410 Gone` and must relist. Also drops open watches.
    pub fn compact(&self) {
        {
            let mut st = self.state.lock().unwrap();
            st.compacted = st.rv;
            st.log.clear();
        }
        self.drop_watches();
    }

    /// While down, every request gets a 503 and open watches are closed.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
        if down {
            self.drop_watches();
        }
    }

    /// Request lines seen (`GET /apis/...?...`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The stored object, status included.
    pub fn object(&self, ns: &str, plural: &str, name: &str) -> Option<Value> {
        let key = (ns.to_string(), plural.to_string(), name.to_string());
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    /// Merge-patches the object's status as another client would (counted
    /// in [`FakeKube::status_patches`], seen by watches).
    pub fn patch_status(&self, ns: &str, plural: &str, name: &str, patch: Value) {
        let body = patch.to_string();
        let r = patch_status(
            ns.to_string(),
            plural.to_string(),
            name.to_string(),
            "application/merge-patch+json",
            body.as_bytes(),
            &self.state,
            &self.notify,
        );
        assert_eq!(r.status(), StatusCode::OK, "no such object");
    }

    /// How many status patches the object has received.
    pub fn status_patches(&self, ns: &str, plural: &str, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .status_patches
            .iter()
            .filter(|(n, p, o)| n == ns && p == plural && o == name)
            .count()
    }

    /// How many status patches were accepted, on every object.
    pub fn status_patch_count(&self) -> usize {
        self.state.lock().unwrap().status_patches.len()
    }

    /// Events created so far (both API groups), each with its namespace in
    /// `metadata.namespace`.
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// Stores a MutatingWebhookConfiguration (as `kubectl apply` would).
    pub fn put_webhook_configuration(&self, mut obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut st = self.state.lock().unwrap();
        admission::stamp(&mut st, &mut obj);
        st.plain.insert(admission::webhook_key(&name), obj);
    }

    /// The stored MutatingWebhookConfiguration.
    pub fn webhook_configuration(&self, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.plain.get(&admission::webhook_key(name)).cloned()
    }

    /// The stored Secret.
    pub fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.plain.get(&admission::secret_key(ns, name)).cloned()
    }

    /// How many JSON patches were accepted (webhook configurations).
    pub fn json_patch_count(&self) -> usize {
        self.state.lock().unwrap().patches.len()
    }

    /// The Kubernetes minor version `GET /version` reports (default 33).
    pub fn set_minor_version(&self, minor: u32) {
        self.state.lock().unwrap().minor_version = minor;
    }

    /// The stored Lease.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        let key = (ns.to_string(), name.to_string());
        self.state.lock().unwrap().leases.get(&key).cloned()
    }

    /// Writes a Lease as another client would (creating or replacing it,
    /// new resourceVersion), e.g. to take it away from a leader.
    pub fn put_lease(&self, mut lease: Value) {
        let ns = lease["metadata"]["namespace"].as_str().unwrap().to_string();
        let name = lease["metadata"]["name"].as_str().unwrap().to_string();
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        lease["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        st.leases.insert((ns, name), lease);
    }
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes,
/// anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().unwrap();
    for (k, v) in fields {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Decodes a body as the API server does for a built-in kind: into the
/// Kubernetes type (a field of the wrong type is a 400), refusing the
/// `true` / `false` keys YAML 1.1 makes of an unquoted `on` or `yes`
/// (strict field validation knows no such field).
fn decode_builtin<T: serde::de::DeserializeOwned>(
    kind: &str,
    body: &[u8],
) -> Result<Value, Box<Response<Body>>> {
    let refuse = |m: String| {
        Box::new(json_response(
            StatusCode::BAD_REQUEST,
            &status(400, "BadRequest", &m),
        ))
    };
    let v: Value =
        serde_json::from_slice(body).map_err(|e| refuse(format!("the body is not JSON: {e}")))?;
    if let Err(e) = serde_json::from_value::<T>(v.clone()) {
        return Err(refuse(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {e}"
        )));
    }
    let mut unknown = Vec::new();
    boolean_keys("", &v, &mut unknown);
    if !unknown.is_empty() {
        return Err(refuse(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        )));
    }
    Ok(v)
}

fn boolean_keys(path: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let free_form = path.ends_with("labels")
                    || path.ends_with("annotations")
                    || path.ends_with("data");
                if matches!(k.as_str(), "true" | "false" | "null") && !free_form {
                    out.push(format!("unknown field \"{at}\""));
                }
                boolean_keys(&at, child, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                boolean_keys(&format!("{path}[{i}]"), item, out);
            }
        }
        _ => {}
    }
}

fn query_map(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    notify: broadcast::Sender<bool>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = query_map(req.uri().query());
    {
        let mut st = state.lock().unwrap();
        st.requests.push(format!(
            "{} {}{}",
            req.method(),
            path,
            req.uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ));
        if st.down {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &status(503, "ServiceUnavailable", "the fake API server is down"),
            );
        }
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(r) = admission::route(&parts, &method, &content_type, &body, &state) {
        return r;
    }
    match parts.as_slice() {
        ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", rest @ ..] => {
            return control::leases(&method, ns, rest.first().copied(), &body, &state);
        }
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]
        | ["api", "v1", "namespaces", ns, "events"] => {
            return control::create_event(&method, ns, &body, &state);
        }
        _ => {}
    }
    // apis / llmesh.io / v1alpha1 / [namespaces / {ns} /] {plural} [/ {name} [/ status]]
    let (ns, plural, name, sub) = match parts.as_slice() {
        ["apis", "llmesh.io", "v1alpha1", plural] => (None, plural.to_string(), None, None),
        ["apis", "llmesh.io", "v1alpha1", "namespaces", ns, plural, rest @ ..]
            if rest.len() <= 2 =>
        {
            (
                Some(ns.to_string()),
                plural.to_string(),
                rest.first().map(|n| n.to_string()),
                rest.get(1).copied(),
            )
        }
        _ => return not_found(),
    };
    if kind_of(&plural) == "Unknown" {
        return not_found();
    }
    if let Some(name) = name {
        let ns = ns.unwrap_or_default();
        return match (sub, &method) {
            (None, &http::Method::GET) => {
                let key = (ns, plural, name);
                match state.lock().unwrap().objects.get(&key) {
                    Some(o) => json_response(StatusCode::OK, o),
                    None => not_found(),
                }
            }
            (Some("status"), &http::Method::PATCH) => {
                patch_status(ns, plural, name, &content_type, &body, &state, &notify)
            }
            _ => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &status(405, "MethodNotAllowed", "not supported by the fake"),
            ),
        };
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(ns, plural, &query, state, notify);
    }
    let st = state.lock().unwrap();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((n, p, _), _)| ns.as_ref().is_none_or(|ns| n == ns) && *p == plural)
        .map(|(_, v)| v.clone())
        .collect();
    let list = json!({
        "apiVersion": "llmesh.io/v1alpha1",
        "kind": format!("{}List", kind_of(&plural)),
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &list)
}

/// The status subresource: only `status` of the patch is applied.
fn patch_status(
    ns: String,
    plural: String,
    name: String,
    content_type: &str,
    body: &[u8],
    state: &Mutex<State>,
    notify: &broadcast::Sender<bool>,
) -> Response<Body> {
    if !content_type.starts_with("application/merge-patch+json") {
        return json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &status(
                415,
                "UnsupportedMediaType",
                "the fake takes JSON merge patches only",
            ),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status(400, "BadRequest", "the patch is not JSON"),
        );
    };
    let mut st = state.lock().unwrap();
    let key = (ns.clone(), plural.clone(), name.clone());
    let Some(mut obj) = st.objects.get(&key).cloned() else {
        return not_found();
    };
    if let Some(p) = patch.get("status") {
        let mut current = obj.get("status").cloned().unwrap_or(Value::Null);
        merge_patch(&mut current, p);
        if let Err(errors) = crate::kubectl::admit_status(kind_of(&plural), &current) {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &status(
                    422,
                    "Invalid",
                    &format!(
                        "{} {name:?} is invalid: {}",
                        kind_of(&plural),
                        errors.join("; ")
                    ),
                ),
            );
        }
        obj["status"] = current;
    }
    st.rv += 1;
    let rv = st.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.objects.insert(key, obj.clone());
    st.status_patches.push((ns.clone(), plural.clone(), name));
    st.log.push(Change {
        rv,
        ns,
        plural,
        kind: "MODIFIED",
        object: obj.clone(),
    });
    drop(st);
    let _ = notify.send(false);
    json_response(StatusCode::OK, &obj)
}

fn watch(
    ns: Option<String>,
    plural: String,
    query: &BTreeMap<String, String>,
    state: Arc<Mutex<State>>,
    notify: broadcast::Sender<bool>,
) -> Response<Body> {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let mut wake = notify.subscribe();
    tokio::spawn(async move {
        let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
        let mut seen = from;
        {
            let st = state.lock().unwrap();
            if from != 0 && from < st.compacted {
                let gone = status(410, "Expired", "too old resource version");
                let _ = tx.try_send(line(json!({"type": "ERROR", "object": gone})));
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut first = true;
        loop {
            let pending: Vec<Change> = {
                let st = state.lock().unwrap();
                if st.down {
                    return;
                }
                let out = st
                    .log
                    .iter()
                    .filter(|c| {
                        c.rv > seen
                            && ns.as_ref().is_none_or(|ns| c.ns == *ns)
                            && c.plural == plural
                    })
                    .cloned()
                    .collect();
                seen = seen.max(st.rv);
                out
            };
            for c in pending {
                if tx
                    .send(line(json!({"type": c.kind, "object": c.object})))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if first && bookmarks {
                first = false;
                let mark = json!({"type": "BOOKMARK", "object": {
                    "apiVersion": "llmesh.io/v1alpha1", "kind": kind_of(&plural),
                    "metadata": {"resourceVersion": seen.to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}});
                if tx.send(line(mark)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                msg = wake.recv() => match msg {
                    Ok(true) | Err(broadcast::error::RecvError::Closed) => return,
                    _ => {}
                },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream_from(rx);
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
