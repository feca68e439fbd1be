//! What the sidecar injector asks of the API server: `GET /version`,
//! Secrets (`GET`, `POST`, `PUT` with resourceVersion checks) and
//! MutatingWebhookConfigurations (`GET`, and `PATCH` with an RFC 6902 JSON
//! patch, whose `test` operations fail the whole patch with 422 as on a
//! real server). Objects are kept by their API path.

use std::sync::Mutex;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;

use super::{decode_builtin, json_response, not_found, status, Body, State};

/// The path an object of these paths is stored under.
pub(super) fn secret_key(ns: &str, name: &str) -> String {
    format!("api/v1/namespaces/{ns}/secrets/{name}")
}

pub(super) fn webhook_key(name: &str) -> String {
    format!("apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
}

fn bad(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        &status(code, reason, message),
    )
}

/// Fills server fields on a stored object.
pub(super) fn stamp(st: &mut State, obj: &mut Value) {
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    if obj["metadata"].get("uid").is_none() {
        obj["metadata"]["uid"] = json!(format!("uid-{}", st.rv));
    }
}

/// Routes the injector's requests; `None` when the path is not one of them.
pub(super) fn route(
    parts: &[&str],
    method: &Method,
    content_type: &str,
    body: &[u8],
    state: &Mutex<State>,
) -> Option<Response<Body>> {
    let mut st = state.lock().unwrap();
    match parts {
        ["version"] => Some(json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": st.minor_version.to_string(), "gitVersion": format!("v1.{}.0", st.minor_version),
                    "platform": "linux/amd64"}),
        )),
        ["api", "v1", "namespaces", ns, "secrets", rest @ ..] => {
            Some(match (method, rest.first()) {
                (&Method::GET, Some(name)) => match st.plain.get(&secret_key(ns, name)) {
                    Some(s) => json_response(StatusCode::OK, s),
                    None => not_found(),
                },
                (&Method::POST, None) => {
                    let mut obj = match decode_builtin::<Secret>("Secret", body) {
                        Ok(o) => o,
                        Err(r) => return Some(*r),
                    };
                    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                        return Some(bad(400, "BadRequest", "metadata.name is required"));
                    };
                    let key = secret_key(ns, &name);
                    if st.plain.contains_key(&key) {
                        return Some(bad(
                            409,
                            "AlreadyExists",
                            &format!("secrets \"{name}\" already exists"),
                        ));
                    }
                    obj["metadata"]["namespace"] = json!(ns);
                    stamp(&mut st, &mut obj);
                    st.plain.insert(key, obj.clone());
                    json_response(StatusCode::CREATED, &obj)
                }
                (&Method::PUT, Some(name)) => {
                    let mut obj = match decode_builtin::<Secret>("Secret", body) {
                        Ok(o) => o,
                        Err(r) => return Some(*r),
                    };
                    let key = secret_key(ns, name);
                    let stored_rv = st
                        .plain
                        .get(&key)
                        .map(|o| o["metadata"]["resourceVersion"].clone());
                    match stored_rv {
                    None => not_found(),
                    Some(rv) if rv != obj["metadata"]["resourceVersion"] => {
                        bad(409, "Conflict", "the object has been modified; please apply your changes to the latest version")
                    }
                    Some(_) => {
                        obj["metadata"]["namespace"] = json!(ns);
                        stamp(&mut st, &mut obj);
                        st.plain.insert(key, obj.clone());
                        json_response(StatusCode::OK, &obj)
                    }
                }
                }
                _ => bad(405, "MethodNotAllowed", "not supported by the fake"),
            })
        }
        ["apis", "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", name] => {
            let key = webhook_key(name);
            Some(match *method {
                Method::GET => match st.plain.get(&key) {
                    Some(o) => json_response(StatusCode::OK, o),
                    None => not_found(),
                },
                Method::PATCH => {
                    if content_type != "application/json-patch+json" {
                        return Some(bad(
                            415,
                            "UnsupportedMediaType",
                            "the fake takes JSON patches only",
                        ));
                    }
                    let Some(mut obj) = st.plain.get(&key).cloned() else {
                        return Some(not_found());
                    };
                    let patch: json_patch::Patch = match serde_json::from_slice(body) {
                        Ok(p) => p,
                        Err(e) => {
                            return Some(bad(400, "BadRequest", &format!("not a JSON patch: {e}")))
                        }
                    };
                    if let Err(e) = json_patch::patch(&mut obj, &patch) {
                        return Some(bad(
                            422,
                            "Invalid",
                            &format!("the patch does not apply: {e}"),
                        ));
                    }
                    if let Err(r) = decode_builtin::<MutatingWebhookConfiguration>(
                        "MutatingWebhookConfiguration",
                        obj.to_string().as_bytes(),
                    ) {
                        return Some(*r);
                    }
                    stamp(&mut st, &mut obj);
                    st.patches.push(key.clone());
                    st.plain.insert(key, obj.clone());
                    json_response(StatusCode::OK, &obj)
                }
                _ => bad(405, "MethodNotAllowed", "not supported by the fake"),
            })
        }
        _ => None,
    }
}
