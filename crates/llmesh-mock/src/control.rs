//! HTTP control API under `/_mock/`, so shell scripts and the binary can be
//! driven the same way tests drive the library handle. Never authenticated:
//! the mock only ever listens on loopback in this project.

use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::behavior::Behavior;
use crate::body::{push_json_str, push_num, MockBody};
use crate::server::{json_response, Shared};

const MAX_CONTROL_BODY: usize = 1 << 20;

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let mut out = String::from("{\"error\":{\"message\":");
    push_json_str(&mut out, message);
    out.push_str(",\"type\":\"mock_control_error\"}}");
    json_response(status, out)
}

fn to_json<T: serde::Serialize>(v: &T) -> Response<MockBody> {
    match serde_json::to_vec(v) {
        Ok(b) => json_response(StatusCode::OK, b),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Minimal %XX decoding for model names in the path (e.g. `org%2Fmodel`).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_behavior(body: Incoming) -> Result<Behavior, Response<MockBody>> {
    let bytes = Limited::new(body, MAX_CONTROL_BODY)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("unreadable body: {e}")))?
        .to_bytes();
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    Behavior::from_json(bytes).map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))
}

pub(crate) async fn handle(
    sh: &Arc<Shared>,
    method: &Method,
    rest: &str,
    body: Incoming,
) -> Response<MockBody> {
    let m = method.as_str();
    match (m, rest) {
        ("GET", "health") => json_response(StatusCode::OK, "{\"status\":\"ok\"}"),
        ("GET", "stats") => {
            let mut out = String::from("{\"requests\":");
            push_num(&mut out, sh.count.load(Ordering::Relaxed));
            out.push_str(",\"active\":");
            push_num(&mut out, sh.active.load(Ordering::Relaxed));
            out.push('}');
            json_response(StatusCode::OK, out)
        }
        ("GET", "behavior") => to_json(&*sh.default.load_full()),
        ("PUT" | "POST", "behavior") => match read_behavior(body).await {
            Ok(b) => {
                let r = to_json(&b);
                sh.default.store(Arc::new(b));
                r
            }
            Err(r) => r,
        },
        ("GET", "models") => {
            let map = sh.models.load();
            let view: std::collections::BTreeMap<&str, &Behavior> =
                map.iter().map(|(k, v)| (k.as_str(), &**v)).collect();
            to_json(&view)
        }
        ("DELETE", "models") => {
            sh.models.store(Arc::default());
            json_response(StatusCode::OK, "{\"cleared\":true}")
        }
        ("GET", "requests") => {
            let log = sh.log().clone();
            to_json(&log)
        }
        ("DELETE", "requests") => {
            sh.log().clear();
            sh.count.store(0, Ordering::Relaxed);
            json_response(StatusCode::OK, "{\"cleared\":true}")
        }
        (_, r) if r.starts_with("models/") && r.len() > "models/".len() => {
            let model = percent_decode(&r["models/".len()..]);
            match m {
                "PUT" | "POST" => match read_behavior(body).await {
                    Ok(b) => {
                        let r = to_json(&b);
                        sh.set_model(&model, b);
                        r
                    }
                    Err(r) => r,
                },
                "DELETE" => {
                    sh.remove_model(&model);
                    json_response(StatusCode::OK, "{\"cleared\":true}")
                }
                "GET" => match sh.models.load().get(&model) {
                    Some(b) => to_json(&**b),
                    None => error(StatusCode::NOT_FOUND, "no rule for this model"),
                },
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("unknown control endpoint {m} /_mock/{rest}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes() {
        assert_eq!(percent_decode("org%2Fmodel"), "org/model");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("x%zz"), "x%zz");
    }
}
