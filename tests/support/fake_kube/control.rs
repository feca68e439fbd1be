//! What a controller writes besides its resources: Leases (leader
//! election) and Events.

use std::sync::Mutex;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use k8s_openapi::api::coordination::v1::Lease;

use super::{decode_builtin, json_response, not_found, status, Body, State};

fn bad_request(message: &str) -> Response<Body> {
    json_response(StatusCode::BAD_REQUEST, &status(400, "BadRequest", message))
}

/// `GET`/`PUT .../leases/{name}`, `POST .../leases`. A `PUT` must carry the
/// stored resourceVersion, else 409 Conflict, as optimistic concurrency
/// requires.
pub(super) fn leases(
    method: &Method,
    ns: &str,
    name: Option<&str>,
    body: &[u8],
    state: &Mutex<State>,
) -> Response<Body> {
    let mut st = state.lock().unwrap();
    match (method, name) {
        (&Method::GET, Some(name)) => match st.leases.get(&(ns.to_string(), name.to_string())) {
            Some(l) => json_response(StatusCode::OK, l),
            None => not_found(),
        },
        (&Method::POST, None) => {
            let mut lease = match decode_builtin::<Lease>("Lease", body) {
                Ok(l) => l,
                Err(r) => return *r,
            };
            let Some(name) = lease["metadata"]["name"].as_str().map(str::to_string) else {
                return bad_request("metadata.name is required");
            };
            let key = (ns.to_string(), name.clone());
            if st.leases.contains_key(&key) {
                return json_response(
                    StatusCode::CONFLICT,
                    &status(
                        409,
                        "AlreadyExists",
                        &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                    ),
                );
            }
            st.rv += 1;
            let meta = &mut lease["metadata"];
            meta["namespace"] = json!(ns);
            meta["resourceVersion"] = json!(st.rv.to_string());
            meta["uid"] = json!(format!("uid-lease-{ns}-{name}"));
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            st.leases.insert(key, lease.clone());
            json_response(StatusCode::CREATED, &lease)
        }
        (&Method::PUT, Some(name)) => {
            let mut lease = match decode_builtin::<Lease>("Lease", body) {
                Ok(l) => l,
                Err(r) => return *r,
            };
            let key = (ns.to_string(), name.to_string());
            let Some(stored) = st.leases.get(&key) else {
                return not_found();
            };
            if lease["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return json_response(
                    StatusCode::CONFLICT,
                    &status(
                        409,
                        "Conflict",
                        &format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                    ),
                );
            }
            st.rv += 1;
            lease["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            st.leases.insert(key, lease.clone());
            json_response(StatusCode::OK, &lease)
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(405, "MethodNotAllowed", "not supported by the fake"),
        ),
    }
}

/// `POST .../events`: recorded for [`super::FakeKube::events`].
pub(super) fn create_event(
    method: &Method,
    ns: &str,
    body: &[u8],
    state: &Mutex<State>,
) -> Response<Body> {
    if method != Method::POST {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(405, "MethodNotAllowed", "the fake only creates events"),
        );
    }
    let decoded = if serde_json::from_slice::<Value>(body)
        .is_ok_and(|e| e["apiVersion"] == "events.k8s.io/v1")
    {
        decode_builtin::<k8s_openapi::api::events::v1::Event>("Event", body)
    } else {
        decode_builtin::<k8s_openapi::api::core::v1::Event>("Event", body)
    };
    let mut event = match decoded {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let mut st = state.lock().unwrap();
    st.rv += 1;
    event["metadata"]["namespace"] = json!(ns);
    event["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    st.events.push(event.clone());
    json_response(StatusCode::CREATED, &event)
}
