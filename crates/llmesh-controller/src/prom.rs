//! Instant queries against a Prometheus HTTP API (`/api/v1/query`), for
//! the canary's metric gates.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Longest wait for one query's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Why a query has no figure.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The server could not be reached or did not answer in time.
    #[error("Prometheus at {url} unreachable: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// It answered with an error or a body that is not a query result.
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
}

/// A Prometheus server's query API.
#[derive(Clone)]
pub struct Prometheus {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("base", &self.base)
            .finish()
    }
}

impl Prometheus {
    /// The server at `url` (`http://prometheus:9090`, a path prefix
    /// allowed). Only plain HTTP: in-cluster Prometheus services are.
    pub fn new(url: &str) -> Result<Prometheus, String> {
        let base = url.trim_end_matches('/');
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: expected an http:// URL"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{url:?}: no host"));
        }
        base.parse::<http::Uri>()
            .map_err(|e| format!("{url:?}: {e}"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Ok(Prometheus {
            base: base.to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The value of the first series `query` returns now, or `None` when
    /// it returns none (no traffic yet). A scalar result counts as one
    /// series; `NaN` reads as `None`.
    pub async fn value(&self, query: &str) -> Result<Option<f64>, QueryError> {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish();
        let uri: http::Uri = format!("{}/api/v1/query?{q}", self.base)
            .parse()
            .map_err(|e: http::uri::InvalidUri| QueryError::Refused(e.to_string()))?;
        let unreachable = |reason: String| QueryError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, QueryError>((status, body))
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {QUERY_TIMEOUT:?}")))??;
        let (status, body) = answer;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| QueryError::Refused(format!("HTTP {status}, not a query result")))?;
        if v["status"] != "success" {
            let e = v["error"].as_str().unwrap_or("no error given");
            return Err(QueryError::Refused(format!("HTTP {status}: {e}")));
        }
        parse_result(&v["data"])
    }
}

/// The first sample of a `vector` or `scalar` result.
fn parse_result(data: &Value) -> Result<Option<f64>, QueryError> {
    let sample = match data["resultType"].as_str() {
        Some("vector") => match data["result"].as_array() {
            Some(series) => series.first().map(|s| &s["value"]),
            None => return Err(QueryError::Refused("a vector without result".into())),
        },
        Some("scalar") => Some(&data["result"]),
        other => {
            return Err(QueryError::Refused(format!(
                "expected a vector or scalar result, got {other:?}"
            )))
        }
    };
    let Some(sample) = sample else {
        return Ok(None);
    };
    let text = sample[1]
        .as_str()
        .ok_or_else(|| QueryError::Refused("a sample without a value".into()))?;
    let x: f64 = text
        .parse()
        .map_err(|_| QueryError::Refused(format!("a sample value {text:?}")))?;
    Ok(x.is_finite().then_some(x))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn results_read_as_prometheus_writes_them() {
        let v = |d: Value| parse_result(&d).ok().flatten();
        assert_eq!(
            v(json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]})),
            Some(0.25)
        );
        assert_eq!(v(json!({"resultType": "vector", "result": []})), None);
        assert_eq!(
            v(json!({"resultType": "scalar", "result": [1.0, "3"]})),
            Some(3.0)
        );
        assert_eq!(
            v(json!({"resultType": "vector", "result": [{"value": [1.0, "NaN"]}]})),
            None
        );
        assert!(parse_result(&json!({"resultType": "matrix", "result": []})).is_err());
        assert!(
            parse_result(&json!({"resultType": "vector", "result": [{"value": [1]}]})).is_err()
        );
    }

    #[test]
    fn only_plain_http_urls_with_a_host_are_taken() {
        assert!(Prometheus::new("http://prometheus.monitoring:9090/").is_ok());
        assert!(Prometheus::new("http://127.0.0.1:9090/prom").is_ok());
        for bad in ["https://p:9090", "prometheus:9090", "http://", "http:///x"] {
            assert!(Prometheus::new(bad).is_err(), "{bad}");
        }
    }
}
