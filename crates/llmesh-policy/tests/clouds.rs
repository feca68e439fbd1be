//! Cloud providers: Azure OpenAI, Bedrock and Vertex AI addressing, and
//! the credentials the sidecar obtains itself (defaults from the sidecar's
//! environment, misplaced or incomplete settings named by field).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use llmesh_api::{parse_documents, CredentialRef};
use llmesh_policy::{compile, Identity, SecretError, SecretSource};

struct Env(HashMap<&'static str, &'static str>);

impl SecretSource for Env {
    fn resolve(&self, r: &CredentialRef) -> Result<String, SecretError> {
        match (&r.env, &r.file) {
            (Some(v), None) => self
                .0
                .get(v.as_str())
                .map(|s| s.to_string())
                .ok_or_else(|| SecretError::EnvNotSet(v.clone())),
            (None, Some(f)) if f == "sa.json" => Ok(r#"{"type":"service_account","client_email":"llm@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}"#.into()),
            (None, Some(f)) if f == "not-a-key.json" => Ok("{}".into()),
            _ => Err(SecretError::NotExactlyOne),
        }
    }
    fn env(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|s| s.to_string())
    }
}

fn env(pairs: &[(&'static str, &'static str)]) -> Env {
    Env(pairs.iter().copied().collect())
}

fn errors(text: &str, src: &Env) -> Vec<String> {
    let docs = parse_documents(text).unwrap();
    let (_, errs) = compile(&docs, "team-a", src);
    errs.iter().map(ToString::to_string).collect()
}

/// The snapshot of `text` for namespace `team-a`, and its errors one a line.
fn compiled(text: &str, src: &Env) -> (llmesh_policy::Snapshot, String) {
    let docs = parse_documents(text).unwrap();
    let (snap, errs) = compile(&docs, "team-a", src);
    let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
    (snap, all.join("\n"))
}

const CLOUDS: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: azure}
spec:
  schema: azure-openai
  baseUrl: https://contoso.openai.azure.com
  credential: {azureWorkloadIdentity: {}}
  models:
    - {name: gpt-4o, deployment: gpt4o-prod}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: bedrock}
spec:
  schema: bedrock
  region: us-east-1
  credential: {awsWebIdentity: {}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: vertex}
spec:
  schema: vertex
  region: us-east5
  project: acme-llm
  credential: {gkeMetadata: {}}
"#;

#[test]
fn cloud_providers_take_their_addresses_and_identities_from_the_environment() {
    let src = env(&[
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "client-1"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/token"),
        ("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/llm"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/aws/token"),
        ("AWS_REGION", "us-east-1"),
        ("POD_NAME", "chat-7d9f-abcde"),
    ]);
    let docs = parse_documents(CLOUDS).unwrap();
    let (snap, errs) = compile(&docs, "team-a", &src);
    assert!(errs.is_empty(), "{errs:?}");
    let azure = &snap.providers["azure"];
    assert_eq!(azure.cloud.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(azure.provider_name, "azure.ai.openai");
    assert_eq!(
        azure.models["gpt-4o"].deployment.as_deref(),
        Some("gpt4o-prod")
    );
    // Azure serves OpenAI's models, priced from the catalog.
    assert!(azure.model("gpt-4o").unwrap().price.is_some());
    match azure.identity.as_ref().unwrap() {
        Identity::AzureWorkloadIdentity {
            tenant_id,
            client_id,
            authority_host,
            scope,
            ..
        } => {
            assert_eq!(
                (tenant_id.as_str(), client_id.as_str()),
                ("tenant-1", "client-1")
            );
            assert_eq!(authority_host, "https://login.microsoftonline.com");
            assert_eq!(scope, "https://cognitiveservices.azure.com/.default");
        }
        other => panic!("{other:?}"),
    }
    assert!(azure.auth.is_none());

    let bedrock = &snap.providers["bedrock"];
    assert_eq!(
        bedrock.base_url.original,
        "https://bedrock-runtime.us-east-1.amazonaws.com"
    );
    match bedrock.identity.as_ref().unwrap() {
        Identity::AwsWebIdentity {
            role_arn,
            session_name,
            sts_endpoint,
            ..
        } => {
            assert_eq!(role_arn, "arn:aws:iam::111122223333:role/llm");
            assert_eq!(session_name, "llmesh-chat-7d9f-abcde");
            assert_eq!(sts_endpoint, "https://sts.us-east-1.amazonaws.com");
        }
        other => panic!("{other:?}"),
    }
    // Bedrock's Anthropic ids are priced as Anthropic's own models.
    let claude = bedrock
        .model("us.anthropic.claude-3-5-haiku-20241022-v1:0")
        .expect("a catalog entry for the Bedrock id");
    assert!(claude.price.is_some());

    let vertex = &snap.providers["vertex"];
    assert_eq!(
        vertex.base_url.original,
        "https://us-east5-aiplatform.googleapis.com"
    );
    assert_eq!(vertex.cloud.project.as_deref(), Some("acme-llm"));
    assert_eq!(
        vertex.identity,
        Some(Identity::GkeMetadata {
            endpoint: "http://metadata.google.internal".into()
        })
    );
    assert!(vertex.model("gemini-2.0-flash").is_some());
    assert!(vertex.model("claude-3-5-haiku@20241022").is_some());

    // The dump names the kind of credential, never a secret.
    let dump = snap.dump().to_string();
    assert!(
        dump.contains("aws-web-identity:arn:aws:iam::111122223333:role/llm"),
        "{dump}"
    );
    assert!(dump.contains("\"apiVersion\":\"2024-10-21\""), "{dump}");
    assert!(dump.contains("gpt4o-prod"), "{dump}");
}

#[test]
fn missing_environment_and_misplaced_settings_are_named() {
    // No environment: each default that cannot be had is named with its
    // variable.
    let errs = errors(CLOUDS, &env(&[]));
    let all = errs.join("\n");
    for want in [
        "spec.credential.azureWorkloadIdentity.tenantId: not set, and AZURE_TENANT_ID is not set",
        "spec.credential.azureWorkloadIdentity.clientId",
        "spec.credential.awsWebIdentity.roleArn: not set, and AWS_ROLE_ARN is not set",
        "spec.credential.awsWebIdentity.tokenFile",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }

    let bad = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: b1}
spec:
  schema: bedrock
  credential: {env: KEY}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: b2}
spec:
  schema: bedrock
  region: us-east-1
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: v1}
spec:
  schema: vertex
  region: us-east5
  credential: {awsPodIdentity: {endpoint: "http://169.254.170.23/v1/credentials"}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: o1}
spec:
  schema: openai
  region: us-east-1
  apiVersion: "2024-10-21"
  credential: {googleServiceAccount: {keyFile: sa.json}}
  models: [{name: gpt-4o, deployment: x}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: v2}
spec:
  schema: vertex
  region: us-east5
  project: acme-llm
  credential: {googleServiceAccount: {keyFile: not-a-key.json}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: a1}
spec:
  schema: azure-openai
  credential: {env: KEY, header: api-key}
"#;
    let all = errors(bad, &env(&[("KEY", "k")])).join("\n");
    for want in [
        "LLMProvider/team-a/b1: spec.region: required for schemas bedrock and vertex",
        "LLMProvider/team-a/b1: spec.credential: schema bedrock signs requests with AWS credentials",
        "LLMProvider/team-a/b2: spec.credential: schema bedrock signs requests with AWS credentials",
        "LLMProvider/team-a/v1: spec.project: required for schema vertex",
        "LLMProvider/team-a/v1: spec.credential.awsPodIdentity: this credential is for schema bedrock, not vertex",
        "LLMProvider/team-a/o1: spec.region: only schemas bedrock and vertex have a region",
        "LLMProvider/team-a/o1: spec.apiVersion: only schema azure-openai has an apiVersion",
        "LLMProvider/team-a/o1: spec.credential.googleServiceAccount: this credential is for schema vertex, not openai",
        "LLMProvider/team-a/o1: spec.models[0].deployment: only schema azure-openai has deployments",
        "LLMProvider/team-a/v2: spec.credential.googleServiceAccount: is not a service-account JSON key",
        "LLMProvider/team-a/a1: spec.baseUrl: required for schema azure-openai",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
    // Nothing secret in any message.
    assert!(!all.contains("BEGIN PRIVATE KEY"));
}

#[test]
fn azure_api_key_and_the_v1_surface() {
    let text = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: azure}
spec:
  schema: azure-openai
  baseUrl: https://contoso.openai.azure.com
  apiVersion: v1
  credential: {env: KEY}
"#;
    let docs = parse_documents(text).unwrap();
    let (snap, errs) = compile(&docs, "team-a", &env(&[("KEY", "azkey")]));
    assert!(errs.is_empty(), "{errs:?}");
    let p = &snap.providers["azure"];
    assert_eq!(p.cloud.api_version, None, "v1: no api-version query");
    let (name, value) = p.auth.as_ref().unwrap();
    assert_eq!(name, "api-key");
    assert_eq!(
        value, "azkey",
        "the api-key header carries the key itself, no Bearer"
    );
}

#[test]
fn a_mirror_compiles_and_its_bad_fields_are_named() {
    let text = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: oai}
spec: {schema: openai, credential: {env: KEY}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: good}
spec:
  models: [good]
  backends: [{provider: oai}]
  mirror: {backend: {provider: oai, model: gpt-4.1-mini}, percent: 2.5, maxRequestsPerMinute: 60, maxCostPerHour: "1.50"}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: bad}
spec:
  models: [bad]
  backends: [{provider: oai}]
  mirror: {backend: {provider: nobody}, percent: 150, maxRequestsPerMinute: 0, maxCostPerHour: "lots"}
"#;
    let (snap, all) = compiled(text, &env(&[("KEY", "k")]));
    let good = snap.routes.iter().find(|r| r.name == "good").unwrap();
    let m = good.mirror.as_ref().unwrap();
    assert_eq!(m.backend.model.as_deref(), Some("gpt-4.1-mini"));
    assert!((m.fraction - 0.025).abs() < 1e-12);
    assert_eq!(
        (m.max_per_minute, m.max_cost_per_hour),
        (Some(60), Some(1.5))
    );
    for want in [
        "LLMRoute/team-a/bad: spec.mirror.backend.provider: no valid LLMProvider named \"nobody\"",
        "LLMRoute/team-a/bad: spec.mirror.percent: must be between 0 and 100",
        "LLMRoute/team-a/bad: spec.mirror.maxRequestsPerMinute: must be > 0",
        "LLMRoute/team-a/bad: spec.mirror.maxCostPerHour:",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
    assert!(snap.dump().to_string().contains("\"mirror\":{"));
}

#[test]
fn pass_through_to_a_cloud_provider_is_refused_by_name() {
    let text = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: bedrock}
spec: {schema: bedrock, region: us-east-1, credential: {awsPodIdentity: {endpoint: "http://169.254.170.23/v1/credentials"}}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: files}
spec:
  models: [files]
  backends: [{provider: bedrock}]
  passthrough: {paths: [/v1/files*], provider: bedrock}
"#;
    let all = errors(text, &env(&[])).join("\n");
    assert!(
        all.contains("LLMRoute/team-a/files: spec.passthrough.provider: LLMProvider \"bedrock\" has schema bedrock"),
        "{all}"
    );
}

#[test]
fn a_canary_compiles_with_the_share_its_status_gives_and_its_bad_fields_are_named() {
    let text = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: oai}
spec: {schema: openai, credential: {env: KEY}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: good, generation: 3}
spec:
  models: [good]
  backends: [{provider: oai, model: gpt-4o}]
  mirror: {backend: {provider: oai, model: gpt-5}}
  canary:
    backend: {provider: oai, model: gpt-5}
    steps: [10, 50]
    hold: 2m
    gates: {maxErrorRatioIncrease: 0.02, maxLatencyRatio: 1.5, probes: true, minShadowAgreement: 0.9, window: 10m}
status:
  conditions: [{type: Accepted, status: "True"}]
  canary: {phase: Paused, candidate: oai/gpt-5, step: 1, weight: 50}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: bad}
spec:
  models: [bad]
  backends: [{provider: oai}]
  canary:
    backend: {provider: nobody}
    steps: [50, 20, 0]
    hold: soon
    gates: {maxErrorRatioIncrease: 2, maxLatencyRatio: 0.5, minShadowAgreement: 0.9, window: 0s}
"#;
    let (snap, all) = compiled(text, &env(&[("KEY", "k")]));
    let good = snap.routes.iter().find(|r| r.name == "good").unwrap();
    let c = good.canary.as_ref().unwrap();
    assert_eq!(c.percent, 50);
    assert_eq!(good.backends[c.index].model.as_deref(), Some("gpt-5"));
    assert_eq!(good.backends.len(), 2);
    for want in [
        "LLMRoute/team-a/bad: spec.canary.backend.provider: no valid LLMProvider named \"nobody\"",
        "LLMRoute/team-a/bad: spec.canary.steps[1]: steps must ascend",
        "LLMRoute/team-a/bad: spec.canary.steps[2]: must be between 1 and 100",
        "LLMRoute/team-a/bad: spec.canary.hold:",
        "LLMRoute/team-a/bad: spec.canary.gates.window: must be > 0",
        "LLMRoute/team-a/bad: spec.canary.gates.maxErrorRatioIncrease: must be between 0 and 1",
        "LLMRoute/team-a/bad: spec.canary.gates.maxLatencyRatio: must be at least 1",
        "LLMRoute/team-a/bad: spec.canary.gates.minShadowAgreement: compares shadow pairs",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
    assert!(snap.dump().to_string().contains("\"canary\":{"));
}
