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
//! - Tests change objects ([`FakeKube::apply`], [`FakeKube::delete`]),
//!   cut every open watch ([`FakeKube::drop_watches`]), compact history
//!   ([`FakeKube::compact`]) or make every request fail
//!   ([`FakeKube::set_down`]).

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
    /// resource (`metadata.namespace` must be set). Returns its new
    /// resourceVersion.
    pub fn apply_yaml(&self, text: &str) -> u64 {
        let v: Value = serde_yaml_value(text);
        self.apply(v)
    }

    /// Creates or replaces an object (server fields are filled in).
    pub fn apply(&self, mut obj: Value) -> u64 {
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
        let generation = previous
            .as_ref()
            .and_then(|p| p["metadata"]["generation"].as_i64())
            .map_or(1, |g| g + 1);
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
}

fn serde_yaml_value(text: &str) -> Value {
    serde_yaml::from_str(text).expect("fake_kube takes one YAML object")
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
    // apis / llmesh.io / v1alpha1 / namespaces / {ns} / {plural}
    let (ns, plural) = match parts.as_slice() {
        ["apis", "llmesh.io", "v1alpha1", "namespaces", ns, plural] => {
            (ns.to_string(), plural.to_string())
        }
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            )
        }
    };
    if kind_of(&plural) == "Unknown" {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(ns, plural, &query, state, notify);
    }
    let st = state.lock().unwrap();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((n, p, _), _)| *n == ns && *p == plural)
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

fn watch(
    ns: String,
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
                    .filter(|c| c.rv > seen && c.ns == ns && c.plural == plural)
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
