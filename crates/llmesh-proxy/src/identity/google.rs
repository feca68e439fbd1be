//! Google: access tokens from a service-account key (an RS256-signed JWT
//! exchanged at the key's token endpoint) or from the GKE metadata server.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::Method;
use serde_json::{json, Value};

use super::exchange;
use crate::upstream::UpstreamClient;

/// The scope Vertex AI calls need.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A signed JWT for `key` (a service-account JSON key) with audience
/// `aud`, issued at `now`.
fn assertion(key: &Value, aud: &str, now: u64) -> Result<String, String> {
    let field = |k: &str| {
        key.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the service-account key has no {k}"))
    };
    let email = field("client_email")?;
    let pem = field("private_key")?;
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Ok(kid) = field("private_key_id") {
        header["kid"] = kid.into();
    }
    let claims = json!({
        "iss": email,
        "scope": SCOPE,
        "aud": aud,
        "iat": now,
        "exp": now + 3600,
    });
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let signing_input = format!("{}.{}", enc(&header), enc(&claims));
    let der = rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("the service-account key's private_key: {e}"))?
        .ok_or("the service-account key's private_key holds no PEM key")?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_der()).map_err(|e| {
        format!("the service-account key's private_key is not an RSA PKCS#8 key: {e}")
    })?;
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the service-account JWT failed".to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// Exchanges a service-account JWT for an access token.
pub async fn service_account_token(
    client: &UpstreamClient,
    key_json: &str,
    token_uri: Option<&str>,
) -> Result<(String, SystemTime), String> {
    let key: Value = serde_json::from_str(key_json)
        .map_err(|e| format!("the service-account key is not JSON: {e}"))?;
    let uri = match token_uri {
        Some(u) => u.to_string(),
        None => key
            .get("token_uri")
            .and_then(Value::as_str)
            .unwrap_or("https://oauth2.googleapis.com/token")
            .to_string(),
    };
    let now = crate::clock::wall()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // The audience is the key's own token_uri, wherever the JWT is sent.
    let aud = key
        .get("token_uri")
        .and_then(Value::as_str)
        .unwrap_or(&uri)
        .to_string();
    let jwt = assertion(&key, &aud, now)?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &jwt)
        .finish();
    exchange::oauth_token(client, &uri, form).await
}

/// An access token of the pod's Google service account from the metadata
/// server (GKE Workload Identity).
pub async fn metadata_token(
    client: &UpstreamClient,
    endpoint: &str,
) -> Result<(String, SystemTime), String> {
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token",
        endpoint.trim_end_matches('/')
    );
    let (status, body) = exchange::call(
        client,
        Method::GET,
        &url,
        &[("metadata-flavor", "Google")],
        None,
    )
    .await?;
    exchange::oauth_answer(&url, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_is_a_clear_error() {
        let key = json!({"client_email": "a@b", "private_key": "not a pem"});
        let e = assertion(&key, "https://oauth2.googleapis.com/token", 0).unwrap_err();
        assert!(e.contains("private_key"), "{e}");
        let e = assertion(&json!({}), "x", 0).unwrap_err();
        assert!(e.contains("client_email"), "{e}");
    }
}
