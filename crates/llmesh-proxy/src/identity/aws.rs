//! AWS: keys from STS `AssumeRoleWithWebIdentity` (IRSA) or the EKS Pod
//! Identity agent, and SigV4 signatures made by AWS's own signer
//! (`aws-sigv4`).

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use serde_json::Value;

use super::exchange;
use crate::body::UpstreamBody;
use crate::upstream::UpstreamClient;

/// AWS keys (the secret parts never printed).
#[derive(Clone)]
pub struct Keys {
    /// The access key id (not a secret; shown in signatures).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary keys.
    pub session_token: Option<String>,
}

/// Signs `req` (whose body is `body`) for `service` in `region` at `time`:
/// adds `x-amz-date`, `authorization` and, for temporary keys,
/// `x-amz-security-token`. Signs `host`, `content-type` and the `x-amz-*`
/// headers; the others may be changed on the way without breaking it.
pub fn sign(
    req: &mut Request<UpstreamBody>,
    body: &Bytes,
    keys: &Keys,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let identity = aws_credential_types::Credentials::new(
        keys.access_key_id.clone(),
        keys.secret_access_key.clone(),
        keys.session_token.clone(),
        None,
        "llmesh",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let uri = req.uri().to_string();
    let signed: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str() == "content-type" || n.as_str().starts_with("x-amz-"))
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("SigV4: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("SigV4: {e}"))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    for h in headers {
        let mut v = HeaderValue::try_from(h.value())
            .map_err(|_| format!("SigV4 header {} is not a header value", h.name()))?;
        if h.sensitive() || matches!(h.name(), "authorization" | "x-amz-security-token") {
            v.set_sensitive(true);
        }
        let name = http::HeaderName::try_from(h.name())
            .map_err(|_| format!("SigV4 header {} is not a header name", h.name()))?;
        req.headers_mut().insert(name, v);
    }
    Ok(())
}

/// IRSA: exchanges the projected web-identity token for temporary keys.
pub async fn assume_role_with_web_identity(
    client: &UpstreamClient,
    sts_endpoint: &str,
    role_arn: &str,
    session_name: &str,
    token: &str,
) -> Result<(Keys, SystemTime), String> {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRoleWithWebIdentity")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role_arn)
        .append_pair("RoleSessionName", session_name)
        .append_pair("WebIdentityToken", token)
        .finish();
    let url = format!("{}/", sts_endpoint.trim_end_matches('/'));
    let (status, body) = exchange::call(client, Method::POST, &url, &[], Some(form)).await?;
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        let code = xml_text(&text, "Code").unwrap_or_default();
        let mut message = xml_text(&text, "Message").unwrap_or_default();
        message.truncate(300);
        return Err(format!("STS {url} answered {status} {code}: {message}"));
    }
    let get =
        |tag: &str| xml_text(&text, tag).ok_or_else(|| format!("STS {url} answered no {tag}"));
    let keys = Keys {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: get("SecretAccessKey")?,
        session_token: Some(get("SessionToken")?),
    };
    let expires = parse_time(&get("Expiration")?)?;
    Ok((keys, expires))
}

/// EKS Pod Identity: keys from the agent, with the pod's token.
pub async fn pod_identity(
    client: &UpstreamClient,
    endpoint: &str,
    token: Option<&str>,
) -> Result<(Keys, Option<SystemTime>), String> {
    let headers: Vec<(&'static str, &str)> =
        token.map(|t| ("authorization", t)).into_iter().collect();
    let (status, body) = exchange::call(client, Method::GET, endpoint, &headers, None).await?;
    let shown = exchange::url_shown(endpoint);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let mut message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        message.truncate(300);
        return Err(
            format!("the Pod Identity agent {shown} answered {status} {message}")
                .trim_end()
                .to_string(),
        );
    }
    let get = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("the Pod Identity agent {shown} answered no {k}"))
    };
    let keys = Keys {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: get("SecretAccessKey")?,
        session_token: get("Token").ok(),
    };
    let expires = match v.get("Expiration").and_then(Value::as_str) {
        Some(t) => Some(parse_time(t)?),
        None => None,
    };
    Ok((keys, expires))
}

fn parse_time(t: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("the credential's expiry {t:?} is not an RFC 3339 time: {e}"))
}

/// The text of the first `<tag>` element (XML entities decoded).
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sts_answers() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>s/e+c=</SecretAccessKey><SessionToken>t&amp;k</SessionToken><Expiration>2026-12-07T16:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_text(xml, "SessionToken").as_deref(), Some("t&k"));
        assert_eq!(xml_text(xml, "SecretAccessKey").as_deref(), Some("s/e+c="));
        assert!(parse_time("2026-12-07T16:00:00Z").is_ok());
        assert!(xml_text(xml, "Missing").is_none());
    }

    #[test]
    fn signs_with_the_security_token_of_temporary_keys() {
        let mut req = Request::new(UpstreamBody::new(Bytes::from_static(b"{}"), None));
        *req.method_mut() = Method::POST;
        *req.uri_mut() =
            "http://127.0.0.1:9/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
                .parse()
                .unwrap();
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let keys = Keys {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("session".into()),
        };
        sign(
            &mut req,
            &Bytes::from_static(b"{}"),
            &keys,
            "us-east-1",
            "bedrock",
            crate::clock::wall(),
        )
        .unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
        assert!(
            auth.contains("content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert_eq!(req.headers()["x-amz-security-token"], "session");
        assert!(req.headers()["authorization"].is_sensitive());
    }
}
