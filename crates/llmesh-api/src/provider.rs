//! `LLMProvider`: an upstream API, its key, its models and their prices.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{CLASS_NAME, HEADER_NAME, OBJECT_NAME, SECRET_KEY};
use crate::status::PolicyStatus;

/// Wire format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApiSchema {
    /// OpenAI's own API.
    Openai,
    /// Any OpenAI-compatible API: DeepSeek, Mistral, Qwen, vLLM, Groq...
    OpenaiCompatible,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini generateContent API.
    Gemini,
    /// Azure OpenAI: the OpenAI API on deployment URLs
    /// (`{baseUrl}/openai/deployments/{deployment}/...?api-version=...`) or
    /// on the v1 surface (`{baseUrl}/openai/v1/...`, `apiVersion: v1`).
    AzureOpenai,
    /// AWS Bedrock's Converse and ConverseStream APIs, signed with SigV4.
    Bedrock,
    /// Google Vertex AI: Gemini models (`generateContent`) and Anthropic
    /// models (`rawPredict`, for model names starting with `claude`) on a
    /// regional endpoint of a project.
    Vertex,
}

/// Where the provider's credential comes from: a static key (`env`,
/// `file` or `secretKeyRef`), static AWS keys, or a workload identity the
/// sidecar exchanges for short-lived tokens and refreshes before they
/// expire. Exactly one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "has(self.awsKeys) || has(self.awsWebIdentity) || has(self.awsPodIdentity) || has(self.googleServiceAccount) || has(self.gkeMetadata) || has(self.azureWorkloadIdentity) || [has(self.env), has(self.file), has(self.secretKeyRef)].filter(x, x).size() == 1"
).message("set exactly one of env, file or secretKeyRef"))]
#[x_kube(validation = Rule::new(
    "[has(self.env) || has(self.file) || has(self.secretKeyRef), has(self.awsKeys), has(self.awsWebIdentity), has(self.awsPodIdentity), has(self.googleServiceAccount), has(self.gkeMetadata), has(self.azureWorkloadIdentity)].filter(x, x).size() <= 1"
).message("set one kind of credential: a key (env, file or secretKeyRef), awsKeys, awsWebIdentity, awsPodIdentity, googleServiceAccount, gkeMetadata or azureWorkloadIdentity"))]
pub struct CredentialRef {
    /// Name of an environment variable of the sidecar holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub env: Option<String>,
    /// Path of a file holding the key (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub file: Option<String>,
    /// A key of a Secret in the provider's namespace. The injector mounts
    /// the Secret into the sidecar, which reads
    /// `/var/run/secrets/llmesh/<name>/<key>`; the app's containers never
    /// see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Header carrying the key instead of the schema's usual one
    /// (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic,
    /// `x-goog-api-key` for Gemini), e.g. `api-key` for Azure OpenAI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HEADER_NAME))]
    pub header: Option<String>,
    /// Static AWS access keys (schema `bedrock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_keys: Option<AwsKeys>,
    /// IRSA: the pod's projected service-account token exchanged with STS
    /// `AssumeRoleWithWebIdentity` (schema `bedrock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_web_identity: Option<AwsWebIdentity>,
    /// EKS Pod Identity: credentials from the Pod Identity agent (schema
    /// `bedrock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_pod_identity: Option<AwsPodIdentity>,
    /// A Google service-account JSON key: a signed JWT exchanged for an
    /// access token (schema `vertex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_service_account: Option<GoogleServiceAccount>,
    /// GKE Workload Identity: access tokens from the metadata server
    /// (schema `vertex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gke_metadata: Option<GkeMetadata>,
    /// Microsoft Entra Workload Identity: the pod's federated token
    /// exchanged for an access token (schema `azure-openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_workload_identity: Option<AzureWorkloadIdentity>,
}

/// A secret value from the sidecar's environment, a file or a Secret.
/// Exactly one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "[has(self.env), has(self.file), has(self.secretKeyRef)].filter(x, x).size() == 1"
).message("set exactly one of env, file or secretKeyRef"))]
pub struct ValueSource {
    /// Name of an environment variable of the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub env: Option<String>,
    /// Path of a file (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub file: Option<String>,
    /// A key of a Secret in the provider's namespace, mounted into the
    /// sidecar only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

impl ValueSource {
    /// The same source as a [`CredentialRef`], to resolve it.
    pub fn as_credential(&self) -> CredentialRef {
        CredentialRef {
            env: self.env.clone(),
            file: self.file.clone(),
            secret_key_ref: self.secret_key_ref.clone(),
            ..CredentialRef::default()
        }
    }
}

/// Static AWS keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsKeys {
    /// The access key id.
    pub access_key_id: ValueSource,
    /// The secret access key.
    pub secret_access_key: ValueSource,
    /// A session token, for temporary keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<ValueSource>,
}

/// IRSA settings; each defaults from the variables EKS sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsWebIdentity {
    /// The role to assume; default `$AWS_ROLE_ARN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub role_arn: Option<String>,
    /// The projected token; default `$AWS_WEB_IDENTITY_TOKEN_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub token_file: Option<String>,
    /// `RoleSessionName`; default `llmesh-<pod name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 64))]
    pub session_name: Option<String>,
    /// The STS endpoint; default `https://sts.<region>.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#]+"))]
    pub sts_endpoint: Option<String>,
}

/// EKS Pod Identity settings; each defaults from the variables EKS sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsPodIdentity {
    /// The agent's URL; default `$AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#]+"))]
    pub endpoint: Option<String>,
    /// The token sent to the agent; default
    /// `$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub token_file: Option<String>,
}

/// A Google service-account key. Exactly one of `keyFile` and
/// `secretKeyRef` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.keyFile), has(self.secretKeyRef)].filter(x, x).size() == 1")
    .message("set exactly one of keyFile or secretKeyRef"))]
pub struct GoogleServiceAccount {
    /// Path of the JSON key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub key_file: Option<String>,
    /// The JSON key in a Secret, mounted into the sidecar only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// The token endpoint; default the key's `token_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#]+"))]
    pub token_uri: Option<String>,
}

/// GKE Workload Identity settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GkeMetadata {
    /// The metadata server; default `http://$GCE_METADATA_HOST`, else
    /// `http://metadata.google.internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#]+"))]
    pub endpoint: Option<String>,
}

/// Microsoft Entra Workload Identity settings; each defaults from the
/// variables the Azure workload identity webhook sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureWorkloadIdentity {
    /// Default `$AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tenant_id: Option<String>,
    /// Default `$AZURE_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_id: Option<String>,
    /// The projected federated token; default `$AZURE_FEDERATED_TOKEN_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub token_file: Option<String>,
    /// Default `$AZURE_AUTHORITY_HOST`, else
    /// `https://login.microsoftonline.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#]+"))]
    pub authority_host: Option<String>,
    /// Default `https://cognitiveservices.azure.com/.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub scope: Option<String>,
}

/// One key of a Kubernetes Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.key != '.' && self.key != '..'")
    .message("key must not be . or .."))]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(pattern(OBJECT_NAME), length(max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(pattern(SECRET_KEY), length(max = 253))]
    pub key: String,
}

/// Price of a model in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pricing {
    /// Uncached input (prompt) tokens.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub input: f64,
    /// Output (completion) tokens.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub output: f64,
    /// Input tokens served from the provider's prompt cache; the input price
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cached_input: Option<f64>,
    /// Input tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, billed at a premium: 1.25 times
    /// `input` for the 5-minute cache, 2 times for the 1-hour one); the
    /// input price when unset, as for OpenAI, which charges nothing extra
    /// for caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cache_write: Option<f64>,
    /// Fraction of these prices paid for calls made through the provider's
    /// Batch API (`0.5` for OpenAI's and Anthropic's half price); 1 when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub batch: Option<f64>,
}

/// One model a provider serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    /// The provider's name for the model.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Context window in tokens (prompt plus completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_window: Option<u64>,
    /// Price per million tokens; requests are still counted without one,
    /// at zero cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// The upstream serves the Responses API (`/v1/responses`) for this
    /// model, so Responses calls pass through untranslated. Default: true
    /// for schema `openai`, false for the others (their Responses calls are
    /// translated to the API they speak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_api: Option<bool>,
    /// Azure OpenAI: the deployment serving this model (default: the
    /// model's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9._-]+$"), length(max = 64))]
    pub deployment: Option<String>,
}

/// The rate limits the provider publishes for the key, so llmesh can stay
/// under them (kept in the compiled policy; not enforced yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.requestsPerMinute) || has(self.tokensPerMinute)")
    .message("set requestsPerMinute or tokensPerMinute"))]
pub struct ProviderLimits {
    /// Requests per minute allowed for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u64>,
    /// Tokens (input plus output) per minute allowed for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
    /// Share of the limits kept free as a safety margin, 0 to 90 (default 20).
    #[serde(default = "default_headroom")]
    #[schemars(range(max = 90))]
    pub headroom_percent: u32,
}

fn default_headroom() -> u32 {
    20
}

/// Spec of an `LLMProvider`.
// Each printcolumn repeats `type_`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "llmesh.io",
    version = "v1alpha1",
    kind = "LLMProvider",
    namespaced,
    status = "PolicyStatus",
    shortname = "llmp",
    category = "llmesh",
    doc = "An upstream LLM API: its wire format, base URL, key, models with prices, published limits and data clearance.",
    printcolumn(name = "Schema", type_ = "string", json_path = ".spec.schema"),
    printcolumn(name = "Base URL", type_ = "string", json_path = ".spec.baseUrl"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.schema != 'openai-compatible' || has(self.baseUrl)")
    .message("baseUrl is required for schema openai-compatible"))]
#[x_kube(validation = Rule::new("self.schema != 'azure-openai' || has(self.baseUrl)")
    .message("baseUrl is required for schema azure-openai (the resource's endpoint, e.g. https://NAME.openai.azure.com)"))]
#[x_kube(validation = Rule::new("!(self.schema in ['bedrock', 'vertex']) || has(self.region)")
    .message("region is required for schemas bedrock and vertex"))]
#[x_kube(validation = Rule::new("self.schema != 'vertex' || has(self.project)")
    .message("project is required for schema vertex"))]
pub struct LLMProviderSpec {
    /// The wire format.
    pub schema: ApiSchema,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`.
    /// Defaults per schema; required for `openai-compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/?#]+"))]
    pub base_url: Option<String>,
    /// The provider's name in metrics (`gen_ai_provider_name`), e.g.
    /// `deepseek`, `mistral_ai`. Defaults from the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub provider_name: Option<String>,
    /// The key. Optional for upstreams without authentication (a local vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
    /// PEM file with extra CA certificates trusted for this upstream, on top
    /// of the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub ca_file: Option<String>,
    /// Static headers added to every upstream request (e.g. `anthropic-version`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Models served, with context windows and prices.
    #[serde(default)]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub models: Vec<ModelSpec>,
    /// Data classes this provider is cleared to receive (built-in ones such
    /// as `email`, custom ones from an `LLMDataPolicy`, or labels such as
    /// `pii`, `confidential`). Kept in the policy; enforced with data
    /// classification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(CLASS_NAME), length(max = 63)), length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub clearance: Vec<String>,
    /// The provider's published rate limits for this key: sidecars pace
    /// their calls under them (less `headroomPercent`) and prefer other
    /// backends once a minute's budget is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ProviderLimits>,
    /// AWS region (schema `bedrock`, e.g. `us-east-1`) or Google Cloud
    /// location (schema `vertex`, e.g. `us-east5`, `global`): the default
    /// base URL and, for Bedrock, the SigV4 signing region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9-]+$"), length(max = 32))]
    pub region: Option<String>,
    /// Google Cloud project id (schema `vertex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"))]
    pub project: Option<String>,
    /// Azure OpenAI `api-version` of deployment URLs (default
    /// `2024-10-21`); `v1` selects the v1 surface (`/openai/v1/...`, the
    /// model in the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(v1|[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?)$"))]
    pub api_version: Option<String>,
}
