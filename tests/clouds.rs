//! Azure OpenAI, AWS Bedrock and Google Vertex AI through the real
//! `llmesh-proxy` and `llmesh-mock` binaries, with the pods' cloud
//! identities (issue 17). tests/clouds/cloud_front.py plays STS, the EKS
//! Pod Identity agent, Google's token endpoint and metadata server and
//! Microsoft Entra, and stands in front of the mock checking every request's
//! credentials with implementations that are not ours: SigV4 recomputed by
//! botocore, service-account JWTs verified by google-auth, bearer tokens
//! against what it issued (and their expiry).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use llmesh_tests::*;
use serde_json::{json, Value};

const IRSA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.irsa-web-identity";
const POD_TOKEN: &str = "pod-identity-token-1";
const AZURE_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.azure-federated";
const ROLE: &str = "arn:aws:iam::111122223333:role/llm";
const AKID: &str = "AKIDSTATICEXAMPLE";
const AWS_SECRET: &str = "static/secret+key";

/// The policy: one provider per cloud and credential kind, one route per
/// provider, and a route that falls back from Azure to Bedrock.
const POLICY: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: azure-wi}
spec:
  schema: azure-openai
  baseUrl: FRONT/azure
  credential:
    azureWorkloadIdentity: {tenantId: tenant-1, clientId: client-1, tokenFile: DIR/azure-token, authorityHost: FRONT/azure}
  models:
    - {name: gpt-4o, deployment: gpt4o-prod}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: azure-key}
spec:
  schema: azure-openai
  baseUrl: FRONT/azure
  apiVersion: v1
  credential: {file: azure-key.txt}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: vertex-sa}
spec:
  schema: vertex
  baseUrl: FRONT/vertex
  region: us-east5
  project: test-project
  credential:
    googleServiceAccount: {keyFile: sa.json}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: vertex-gke}
spec:
  schema: vertex
  baseUrl: FRONT/vertex
  region: us-east5
  project: test-project
  credential:
    gkeMetadata: {endpoint: FRONT}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: bedrock-irsa}
spec:
  schema: bedrock
  baseUrl: FRONT/bedrock
  region: BEDROCK_REGION
  credential:
    # roleArn and tokenFile come from AWS_ROLE_ARN and
    # AWS_WEB_IDENTITY_TOKEN_FILE, as EKS sets them.
    awsWebIdentity: {stsEndpoint: FRONT/aws/sts}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: bedrock-pod}
spec:
  schema: bedrock
  baseUrl: FRONT/bedrock
  region: us-east-1
  credential:
    awsPodIdentity: {endpoint: FRONT/aws/pod-identity, tokenFile: DIR/pod-token}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: bedrock-keys}
spec:
  schema: bedrock
  baseUrl: FRONT/bedrock
  region: us-east-1
  credential:
    awsKeys:
      accessKeyId: {file: aws-akid.txt}
      secretAccessKey: {file: aws-secret.txt}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: azure}
spec:
  models: [azure-gpt]
  backends: [{provider: azure-wi, model: gpt-4o}]
  timeouts: {firstByte: 5s, total: 20s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: azure-v1}
spec:
  models: [azure-v1-gpt]
  backends: [{provider: azure-key, model: gpt-4o-mini}]
  timeouts: {firstByte: 5s, total: 20s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: vertex-gemini}
spec:
  models: [vx-gemini]
  backends: [{provider: vertex-sa, model: gemini-2.0-flash}]
  timeouts: {firstByte: 5s, total: 20s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: vertex-claude}
spec:
  models: [vx-claude]
  backends: [{provider: vertex-gke, model: "claude-3-5-haiku@20241022"}]
  timeouts: {firstByte: 5s, total: 20s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: bedrock-irsa}
spec:
  models: [br-irsa]
  backends: [{provider: bedrock-irsa, model: "anthropic.claude-3-5-haiku-20241022-v1:0"}]
  timeouts: {firstByte: 5s, total: 20s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: bedrock-pod}
spec:
  models: [br-pod]
  backends: [{provider: bedrock-pod, model: "amazon.nova-lite-v1:0"}]
  timeouts: {firstByte: 5s, total: 20s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: bedrock-keys}
spec:
  models: [br-keys, "missing.*"]
  backends: [{provider: bedrock-keys}]
  timeouts: {firstByte: 5s, total: 20s}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: failover}
spec:
  models: [fo]
  backends:
    - {provider: azure-wi, model: gpt-4o, priority: 0}
    - {provider: bedrock-keys, model: "meta.llama3-70b-instruct-v1:0", priority: 1}
  timeouts: {firstByte: 5s, total: 20s}
"#;

/// The mock, the front, and a sidecar using them, all real processes.
struct Clouds {
    _mock: Proc,
    mock_url: String,
    front: Proc,
    front_url: String,
    proxy: ProxyProc,
    admin: String,
    dir: tempfile::TempDir,
    http: Http,
}

/// Settings of one stack.
struct Setup {
    token_ttl: u64,
    /// The region the Bedrock IRSA provider signs for (the front wants
    /// us-east-1).
    bedrock_region: &'static str,
    /// What the IRSA token file holds (the front wants IRSA_TOKEN).
    irsa_token: &'static str,
    /// Identity endpoints made to answer 503 before the sidecar starts.
    down: &'static [&'static str],
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            token_ttl: 3600,
            bedrock_region: "us-east-1",
            irsa_token: IRSA_TOKEN,
            down: &[],
        }
    }
}

fn front_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clouds/cloud_front.py")
}

impl Clouds {
    async fn start(setup: Setup) -> Clouds {
        let mock = Proc::spawn(Command::new(bin_path("llmesh-mock")).args([
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            "--record",
        ]));
        let line = mock.wait_line("llmesh-mock listening on ");
        let mock_url = line["llmesh-mock listening on ".len()..].trim().to_string();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port_file = d.join("front-port");
        let config = json!({
            "listen": "127.0.0.1:0",
            "port_file": port_file,
            "upstream": mock_url,
            "token_ttl": setup.token_ttl,
            "aws": {"region": "us-east-1", "static": [[AKID, AWS_SECRET]], "role_arn": ROLE,
                    "web_identity_token": IRSA_TOKEN, "pod_identity_token": POD_TOKEN},
            "google": {"service_account_key_file": d.join("sa.json"), "metadata": true},
            "azure": {"api_key": KEY, "tenant": "tenant-1", "client_id": "client-1",
                      "federated_token": AZURE_TOKEN},
        });
        std::fs::write(d.join("front.json"), config.to_string()).unwrap();
        let front = Proc::spawn(
            Command::new("python3")
                .arg(front_script())
                .arg("--config")
                .arg(d.join("front.json")),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "cloud_front.py did not start:\n{}",
                front.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let front_url = format!("http://127.0.0.1:{port}");
        let made = Command::new("python3")
            .arg(front_script())
            .arg("--make-google-key")
            .arg(d.join("sa.json"))
            .arg("--token-uri")
            .arg(format!("{front_url}/google/token"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        std::fs::write(d.join("azure-token"), AZURE_TOKEN).unwrap();
        std::fs::write(d.join("irsa-token"), setup.irsa_token).unwrap();
        std::fs::write(d.join("pod-token"), POD_TOKEN).unwrap();
        std::fs::write(d.join("azure-key.txt"), KEY).unwrap();
        std::fs::write(d.join("aws-akid.txt"), AKID).unwrap();
        std::fs::write(d.join("aws-secret.txt"), AWS_SECRET).unwrap();
        let policy = POLICY
            .replace("FRONT", &front_url)
            .replace("DIR", &d.display().to_string())
            .replace("BEDROCK_REGION", setup.bedrock_region);
        std::fs::write(d.join("policy.yaml"), policy).unwrap();
        let http = Http::new();
        for e in setup.down {
            let (s, _, _) = http
                .send(
                    Method::POST,
                    &format!("{front_url}/_front/down?endpoint={e}"),
                    Bytes::new(),
                    &[],
                )
                .await;
            assert_eq!(s, StatusCode::OK);
        }
        let proxy = spawn_proxy(
            proxy_command(&d.join("policy.yaml"))
                .env("POD_NAMESPACE", "team-a")
                .env("POD_NAME", "chat-0")
                .env("AWS_ROLE_ARN", ROLE)
                .env("AWS_WEB_IDENTITY_TOKEN_FILE", d.join("irsa-token"))
                .env_remove("LLMESH_QUOTA_STORE"),
        );
        let line = proxy.proc.wait_line("llmesh-proxy listening ");
        let admin = field(&line, "admin").to_string();
        Clouds {
            _mock: mock,
            mock_url,
            front,
            front_url,
            proxy,
            admin,
            dir,
            http,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let (s, text) = self.post_raw(path, body).await;
        let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({s}): {text}"));
        (s, v)
    }

    async fn post_raw(&self, path: &str, body: &Value) -> (StatusCode, String) {
        let (s, _, b) = self
            .http
            .send(
                Method::POST,
                &format!("{}{path}", self.proxy.llm),
                Bytes::from(body.to_string()),
                &[],
            )
            .await;
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    /// The paths (with queries) the mock was asked, and the bodies.
    async fn upstream(&self) -> Vec<(String, Value)> {
        let (s, _, b) = self
            .http
            .get(&format!("{}/_mock/requests", self.mock_url))
            .await;
        assert_eq!(s, StatusCode::OK);
        let reqs: Vec<Value> = serde_json::from_slice(&b).unwrap();
        reqs.iter()
            .map(|r| {
                let body = r["body"]
                    .as_str()
                    .and_then(|b| serde_json::from_str(b).ok());
                (
                    r["path"].as_str().unwrap_or_default().to_string(),
                    body.unwrap_or_else(|| r["body"].clone()),
                )
            })
            .collect()
    }

    async fn stats(&self) -> Value {
        let (s, _, b) = self
            .http
            .get(&format!("{}/_front/stats", self.front_url))
            .await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice(&b).unwrap()
    }

    async fn front(&self, verb: &str, endpoint: &str) {
        let (s, _, _) = self
            .http
            .send(
                Method::POST,
                &format!("{}/_front/{verb}?endpoint={endpoint}", self.front_url),
                Bytes::new(),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }

    async fn metrics(&self) -> String {
        let (s, _, b) = self
            .http
            .get(&format!("{}/metrics", self.proxy.metrics))
            .await;
        assert_eq!(s, StatusCode::OK);
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// What the sidecar and the front printed, for failure messages and
    /// the secrets check.
    fn logs(&self) -> String {
        format!(
            "--- sidecar\n{}\n--- front\n{}",
            self.proxy.proc.output(),
            self.front.output()
        )
    }
}

/// The models of the routes, one per cloud and credential kind.
const MODELS: [&str; 7] = [
    "azure-gpt",
    "azure-v1-gpt",
    "vx-gemini",
    "vx-claude",
    "br-irsa",
    "br-pod",
    "br-keys",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_reaches_each_cloud_with_the_pods_identity() {
    let c = Clouds::start(Setup::default()).await;
    let script = r#"
import json, os, sys, openai
client = openai.OpenAI()
out = {}
for model in sys.argv[1:]:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello cloud"}], max_tokens=16)
    text = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello stream"}], max_tokens=16, stream=True,
        stream_options={"include_usage": True}) if ch.choices)
    resp = client.responses.create(model=model, input="hello responses", max_output_tokens=16)
    out[model] = {"text": r.choices[0].message.content, "usage": r.usage.total_tokens,
                  "finish": r.choices[0].finish_reason, "streamed": text,
                  "responses": resp.output_text, "responses_status": resp.status}
print(json.dumps(out))
"#;
    let mut cmd = sdk_command(&c.proxy.llm);
    cmd.arg("-c")
        .arg(script)
        .args(MODELS)
        .env("OPENAI_API_KEY", "sk-app-key-that-must-not-travel");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    for model in MODELS {
        let r = &results[model];
        assert!(!r["text"].as_str().unwrap_or("").is_empty(), "{model}: {r}");
        assert!(
            !r["streamed"].as_str().unwrap_or("").is_empty(),
            "{model}: {r}"
        );
        assert!(r["usage"].as_u64().unwrap() > 0, "{model}: {r}");
        assert_eq!(r["finish"], "stop", "{model}: {r}");
        // The Responses API too, translated to each cloud's API.
        assert!(
            !r["responses"].as_str().unwrap_or("").is_empty(),
            "{model}: {r}"
        );
        assert_eq!(r["responses_status"], "completed", "{model}: {r}");
    }

    // Every cloud's credential was obtained the way the pod's identity
    // allows, and the front let every call through.
    let stats = c.stats().await;
    for kind in ["sts", "pod_identity", "google_jwt", "gke_metadata", "entra"] {
        assert!(
            stats["issued"][kind].as_u64().unwrap() >= 1,
            "{kind}: {stats}"
        );
    }
    assert_eq!(stats["accepted"]["azure"], 6, "{stats}");
    assert_eq!(stats["accepted"]["vertex"], 6, "{stats}");
    assert_eq!(stats["accepted"]["bedrock"], 9, "{stats}");
    assert_eq!(stats["rejected"], json!([]), "{stats}");

    // Each cloud was called at its own URL shape.
    let paths: Vec<String> = c.upstream().await.into_iter().map(|(p, _)| p).collect();
    for want in [
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21",
        "/openai/v1/chat/completions",
        "/v1/projects/test-project/locations/us-east5/publishers/google/models/gemini-2.0-flash:generateContent",
        "/v1/projects/test-project/locations/us-east5/publishers/google/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        "/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/claude-3-5-haiku@20241022:rawPredict",
        "/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/claude-3-5-haiku@20241022:streamRawPredict",
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
        "/model/amazon.nova-lite-v1%3A0/converse-stream",
        "/model/br-keys/converse",
    ] {
        assert!(paths.iter().any(|p| p == want), "no call to {want} in {paths:#?}");
    }

    // Cost comes from the built-in catalog: no price is in the policy.
    let m = c.metrics().await;
    for route in ["azure", "vertex-gemini", "vertex-claude", "bedrock-irsa"] {
        let cost = metric_sum(&m, "llmesh_cost_usd_total", &[("route", route)]);
        assert!(cost > 0.0, "{route} cost {cost}\n{m}");
    }
    for provider in [
        "azure-wi",
        "vertex-sa",
        "vertex-gke",
        "bedrock-irsa",
        "bedrock-pod",
        "bedrock-keys",
    ] {
        assert_eq!(
            metric_value(
                &m,
                "llmesh_provider_credential_ready",
                &[("provider", provider)]
            ),
            Some(1.0),
            "{provider}"
        );
    }

    // No token, key or secret in the sidecar's log, its metrics or its
    // config dump; the app's own key never reached a cloud.
    let (s, _, dump) = c.http.get(&format!("{}/config_dump", c.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let dump = String::from_utf8_lossy(&dump);
    assert!(
        dump.contains("aws-web-identity:arn:aws:iam::111122223333:role/llm"),
        "{dump}"
    );
    let sa = std::fs::read_to_string(c.dir.path().join("sa.json")).unwrap();
    let sa: Value = serde_json::from_str(&sa).unwrap();
    let private = sa["private_key"].as_str().unwrap();
    let private_line = private.lines().nth(1).unwrap();
    let sidecar_log = c.proxy.proc.output();
    for secret in [
        IRSA_TOKEN,
        POD_TOKEN,
        AZURE_TOKEN,
        AWS_SECRET,
        KEY,
        private_line,
    ] {
        assert!(!dump.contains(secret), "config_dump holds a secret");
        assert!(!m.contains(secret), "metrics hold a secret");
        assert!(
            !sidecar_log.contains(secret),
            "the sidecar's log holds a secret"
        );
    }
    assert!(!c.front.output().contains("sk-app-key-that-must-not-travel"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_reach_claude_on_vertex_and_bedrock() {
    let c = Clouds::start(Setup::default()).await;
    for model in ["vx-claude", "br-irsa"] {
        let (s, v) = c
            .post("/v1/messages", &anthropic_msg(model, "hello claude"))
            .await;
        assert_eq!(s, StatusCode::OK, "{model}: {v}\n{}", c.logs());
        assert_eq!(v["type"], "message", "{v}");
        assert!(v["content"][0]["text"].as_str().unwrap().len() > 1, "{v}");
        assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0, "{v}");
        let mut body = anthropic_msg(model, "hello stream");
        body["stream"] = json!(true);
        let (s, text) = c.post_raw("/v1/messages", &body).await;
        assert_eq!(s, StatusCode::OK, "{model}: {text}");
        assert!(!anthropic_text(&text).is_empty(), "{model}: {text}");
        assert!(text.contains("event: message_stop"), "{model}: {text}");
    }
    // Claude keeps its Messages body on both clouds: rawPredict on Vertex,
    // InvokeModel on Bedrock, the model in the URL and the cloud's version
    // in the body.
    let calls = c.upstream().await;
    for (path, version) in [
        ("/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/claude-3-5-haiku@20241022:rawPredict", "vertex-2023-10-16"),
        ("/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/claude-3-5-haiku@20241022:streamRawPredict", "vertex-2023-10-16"),
        ("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke", "bedrock-2023-05-31"),
        ("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream", "bedrock-2023-05-31"),
    ] {
        let (_, body) = calls
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no call to {path} in {calls:#?}"));
        assert_eq!(body["anthropic_version"], version, "{path}: {body}");
        assert!(body.get("model").is_none(), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_during_the_test_and_are_refreshed_without_a_failed_request() {
    let c = Clouds::start(Setup {
        token_ttl: 3,
        ..Setup::default()
    })
    .await;
    let until = Instant::now() + Duration::from_secs(8);
    let mut calls = 0;
    while Instant::now() < until {
        for model in ["azure-gpt", "vx-gemini", "vx-claude", "br-irsa", "br-pod"] {
            let (s, v) = c
                .post("/v1/chat/completions", &openai_chat(model, "tick"))
                .await;
            assert_eq!(
                s,
                StatusCode::OK,
                "{model} after {calls} calls: {v}\n{}",
                c.logs()
            );
            calls += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let stats = c.stats().await;
    // Tokens of 3 s over 8 s: each was fetched again before it expired.
    for kind in ["sts", "pod_identity", "google_jwt", "gke_metadata", "entra"] {
        let n = stats["issued"][kind].as_u64().unwrap();
        assert!(n >= 3, "{kind} issued {n} times: {stats}");
    }
    assert_eq!(stats["rejected"], json!([]), "{stats}");
    let m = c.metrics().await;
    assert!(
        metric_sum(
            &m,
            "llmesh_provider_credential_refreshes_total",
            &[("result", "ok"), ("provider", "azure-wi")]
        ) >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_is_down_makes_its_provider_unready() {
    let c = Clouds::start(Setup {
        down: &["entra", "sts"],
        ..Setup::default()
    })
    .await;
    // The failover route skips the unready Azure backend for Bedrock's
    // static keys.
    let (s, v) = c
        .post("/v1/chat/completions", &openai_chat("fo", "hi"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}\n{}", c.logs());
    assert_eq!(v["model"], "meta.llama3-70b-instruct-v1:0", "{v}");
    // Nothing else can serve: a clear 503 naming the provider and why.
    for (model, provider) in [("azure-gpt", "azure-wi"), ("br-irsa", "bedrock-irsa")] {
        let (s, v) = c
            .post("/v1/chat/completions", &openai_chat(model, "hi"))
            .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert_eq!(v["error"]["code"], "credential_unavailable", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("provider {provider}")), "{msg}");
        assert!(
            msg.contains("503"),
            "the token endpoint's answer is named: {msg}"
        );
    }
    // In Anthropic's format for an Anthropic client.
    let (s, v) = c
        .post("/v1/messages", &anthropic_msg("azure-gpt", "hi"))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
    let m = c.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "llmesh_provider_credential_ready",
            &[("provider", "azure-wi")]
        ),
        Some(0.0)
    );
    assert!(
        metric_sum(
            &m,
            "llmesh_provider_credential_refreshes_total",
            &[("provider", "azure-wi"), ("result", "error")]
        ) >= 1.0
    );
    assert!(c
        .proxy
        .proc
        .output()
        .contains("cannot obtain the provider's credential"));

    // The endpoints come back: the providers recover by themselves.
    c.front("up", "all").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    for model in ["azure-gpt", "br-irsa"] {
        loop {
            let (s, v) = c
                .post("/v1/chat/completions", &openai_chat(model, "hi"))
                .await;
            if s == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "{model} did not recover: {v}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_web_identity_token_is_a_clear_503() {
    let c = Clouds::start(Setup {
        irsa_token: "an-expired-or-foreign-token",
        ..Setup::default()
    })
    .await;
    let (s, v) = c
        .post("/v1/chat/completions", &openai_chat("br-irsa", "hi"))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("InvalidIdentityToken"), "{msg}");
    assert!(!msg.contains("an-expired-or-foreign-token"), "{msg}");
    // The other clouds are unaffected.
    let (s, v) = c
        .post("/v1/chat/completions", &openai_chat("br-pod", "hi"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_errors_reach_the_client_in_its_format() {
    let c = Clouds::start(Setup {
        bedrock_region: "eu-west-1",
        ..Setup::default()
    })
    .await;
    // Signed for the wrong region: AWS's refusal, translated.
    let (s, v) = c
        .post("/v1/chat/completions", &openai_chat("br-irsa", "hi"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Credential should be scoped to a valid region"),
        "{v}"
    );
    // A Bedrock model id that does not exist: the upstream's 404 in the
    // client's format.
    let (s, v) = c
        .post(
            "/v1/chat/completions",
            &openai_chat("missing.model-v1:0", "hi"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    let (s, v) = c
        .post("/v1/messages", &anthropic_msg("missing.model-v1:0", "hi"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "not_found_error", "{v}");
    // Azure's content-filter refusal is classified as content-filter (the
    // class fallback chains key on) and reaches the client as Azure said it.
    let (s, _, b) = c
        .http
        .send(
            Method::POST,
            &format!("{}/v1/chat/completions", c.proxy.llm),
            Bytes::from(openai_chat("azure-v1-gpt", "hi").to_string()),
            &[("x-mock-prompt-filtered", "true")],
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "content_filter", "{v}");
    let m = c.metrics().await;
    assert!(
        metric_sum(
            &m,
            "llmesh_upstream_errors_total",
            &[("provider", "azure-key"), ("error_type", "content_filter")]
        ) >= 1.0,
        "{m}"
    );
}
