//! Azure OpenAI: the deployment URLs
//! (`/openai/deployments/{deployment}/chat/completions?api-version=...`,
//! `/embeddings`) and the v1 surface (`/openai/v1/chat/completions`,
//! `/embeddings`, `/responses`), answered by the OpenAI handlers; these are
//! Azure's own errors.

use serde_json::json;

/// What an Azure path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Embeddings,
    Responses,
}

/// 400 for a deployment URL without `?api-version=`.
pub(crate) fn missing_api_version() -> String {
    json!({"error": {
        "code": "MissingApiVersionParameter",
        "message": "The api-version query parameter (?api-version=) is required for all requests.",
    }})
    .to_string()
}

/// 404 for an unknown deployment (behavior `model_not_found`).
pub(crate) fn deployment_not_found() -> String {
    json!({"error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
    }})
    .to_string()
}

/// 400 for a prompt the content filter refused (behavior
/// `prompt_filtered`).
pub(crate) fn content_filter() -> String {
    let ok = json!({"filtered": false, "severity": "safe"});
    json!({"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
        "type": null,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": ok,
                "jailbreak": {"filtered": false, "detected": false},
                "self_harm": ok,
                "sexual": ok,
                "violence": {"filtered": true, "severity": "medium"},
            },
        },
    }})
    .to_string()
}
