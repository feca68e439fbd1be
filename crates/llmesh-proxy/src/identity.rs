//! Cloud credentials the sidecar obtains itself: AWS keys (static, IRSA
//! through STS, EKS Pod Identity), Google access tokens (a service-account
//! JWT, the GKE metadata server) and Microsoft Entra tokens (workload
//! identity). One [`CredentialSource`] per provider, kept across reloads;
//! a background task fetches the credential and refreshes it before it
//! expires, so requests only read the current one (one atomic load).
//!
//! A source whose credential cannot be had makes its provider unready:
//! the plan skips its backends like an open breaker, and the reason (never
//! the secret) is in the log, the metrics and the 503 when nothing else
//! can serve. Tokens and keys are never logged, dumped or put in errors.

mod aws;
mod exchange;
mod google;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request};
use llmesh_policy::{Identity, Provider};
use prometheus::{IntCounterVec, IntGaugeVec};

use crate::upstream::UpstreamClient;

/// A credential in hand.
#[derive(Clone)]
pub enum Issued {
    /// `Authorization: Bearer <token>`, ready to insert (marked sensitive).
    Bearer(HeaderValue),
    /// AWS keys, to sign each request with.
    Aws(aws::Keys),
}

/// A credential and when it stops being valid (`None`: never).
pub struct Held {
    issued: Issued,
    expires: Option<SystemTime>,
    /// When the refresher fetches the next one.
    refresh_at: Option<SystemTime>,
}

impl Held {
    fn new(issued: Issued, expires: Option<SystemTime>) -> Held {
        let now = crate::clock::wall();
        // Refresh when a third of the lifetime is left (at most 5 minutes
        // before expiry): early enough that a slow or failing token
        // endpoint is retried while the old credential still works.
        let refresh_at = expires.map(|e| {
            let left = e.duration_since(now).unwrap_or_default();
            e - (left / 3).min(Duration::from_secs(300))
        });
        Held {
            issued,
            expires,
            refresh_at,
        }
    }

    /// Whether it can still be sent (with a margin for the trip).
    fn valid(&self, now: SystemTime) -> bool {
        self.expires
            .is_none_or(|e| e.duration_since(now).unwrap_or_default() > Duration::from_millis(500))
    }
}

/// The credential metric families.
#[derive(Clone)]
pub struct CredentialMetrics {
    /// llmesh_provider_credential_ready
    pub ready: IntGaugeVec,
    /// llmesh_provider_credential_refreshes_total
    pub refreshes: IntCounterVec,
}

/// One provider's credential, fetched and refreshed in the background.
pub struct CredentialSource {
    provider: String,
    identity: Identity,
    region: Option<String>,
    client: UpstreamClient,
    current: ArcSwapOption<Held>,
    /// Why the last fetch failed (no secret in it); `None` after a success.
    error: ArcSwapOption<String>,
    /// Whether a fetch has finished, well or not.
    tried: AtomicBool,
    changed: tokio::sync::Notify,
    started: AtomicBool,
    /// Whether the last fetch (or the first) left a valid credential.
    was_ready: AtomicBool,
    metrics: Option<CredentialMetrics>,
    events: Option<Arc<crate::events::Events>>,
    /// The provider object's namespace, for Events.
    namespace: String,
}

/// How long a request waits for a provider's first credential.
const FIRST_WAIT: Duration = Duration::from_secs(10);
/// Timeout of one token exchange.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl CredentialSource {
    /// A source for `provider`'s identity; [`start`](Self::start) its
    /// refresher once it is in an `Arc`.
    pub fn new(
        provider: &Provider,
        identity: Identity,
        client: UpstreamClient,
        metrics: Option<CredentialMetrics>,
        events: Option<Arc<crate::events::Events>>,
    ) -> CredentialSource {
        CredentialSource {
            was_ready: AtomicBool::new(true),
            events,
            namespace: provider.namespace.clone(),
            provider: provider.name.clone(),
            region: provider.cloud.region.clone(),
            identity,
            client,
            current: ArcSwapOption::empty(),
            error: ArcSwapOption::empty(),
            tried: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            started: AtomicBool::new(false),
            metrics,
        }
    }

    /// The key under which a source is kept across reloads: the provider
    /// and a hash of its identity (a rotated key makes a new source).
    pub fn key(provider: &Provider, identity: &Identity) -> String {
        let mut h = DefaultHasher::new();
        identity.hash(&mut h);
        provider.cloud.region.hash(&mut h);
        format!("{}/{}/{:x}", provider.namespace, provider.name, h.finish())
    }

    /// Starts the refresher (once), if a runtime is running; else the
    /// first request starts it.
    pub fn start(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(refresher(Arc::downgrade(self)));
    }

    /// Whether the plan may pick the provider's backends: a valid
    /// credential is held, or none has been tried yet (the request then
    /// waits for the first one).
    pub fn usable(&self) -> bool {
        match self.current.load().as_deref() {
            Some(h) if h.valid(crate::clock::wall()) => true,
            _ => !self.tried.load(Ordering::Acquire),
        }
    }

    /// Why the credential is not available, for the 503 and logs.
    pub fn unready_reason(&self) -> String {
        match self.error.load().as_deref() {
            Some(e) => format!(
                "provider {}: {} credential unavailable: {e}",
                self.provider,
                self.identity.kind()
            ),
            None => format!(
                "provider {}: {} credential expired",
                self.provider,
                self.identity.kind()
            ),
        }
    }

    /// The credential to send now, waiting (bounded by `deadline`) for the
    /// first one to arrive.
    pub async fn current(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Result<Issued, String> {
        self.start();
        let until = deadline.min(tokio::time::Instant::now() + FIRST_WAIT);
        loop {
            let waiting = self.changed.notified();
            if let Some(h) = self.current.load().as_deref() {
                if h.valid(crate::clock::wall()) {
                    return Ok(h.issued.clone());
                }
            }
            if self.tried.load(Ordering::Acquire) && self.error.load().is_some() {
                return Err(self.unready_reason());
            }
            if tokio::time::timeout_at(until, waiting).await.is_err() {
                return Err(format!(
                    "provider {}: waited {} ms for its {} credential",
                    self.provider,
                    FIRST_WAIT.as_millis(),
                    self.identity.kind()
                ));
            }
        }
    }

    /// Adds the credential to an upstream request whose body is `body`:
    /// a bearer token, or an AWS SigV4 signature.
    pub async fn authorize(
        self: &Arc<Self>,
        req: &mut Request<crate::body::UpstreamBody>,
        body: &Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        match self.current(deadline).await? {
            Issued::Bearer(v) => {
                req.headers_mut().insert(http::header::AUTHORIZATION, v);
                Ok(())
            }
            Issued::Aws(keys) => {
                let region = self.region.as_deref().unwrap_or("us-east-1");
                aws::sign(req, body, &keys, region, "bedrock", crate::clock::wall())
            }
        }
    }

    async fn fetch(&self) -> Result<Held, String> {
        let fetching = async {
            match &self.identity {
                Identity::AwsKeys {
                    access_key_id,
                    secret_access_key,
                    session_token,
                } => Ok(Held::new(
                    Issued::Aws(aws::Keys {
                        access_key_id: access_key_id.clone(),
                        secret_access_key: secret_access_key.expose().to_string(),
                        session_token: session_token.as_ref().map(|t| t.expose().to_string()),
                    }),
                    None,
                )),
                Identity::AwsWebIdentity {
                    role_arn,
                    token_file,
                    session_name,
                    sts_endpoint,
                } => {
                    let token = exchange::read_token(token_file)?;
                    let (keys, exp) = aws::assume_role_with_web_identity(
                        &self.client,
                        sts_endpoint,
                        role_arn,
                        session_name,
                        &token,
                    )
                    .await?;
                    Ok(Held::new(Issued::Aws(keys), Some(exp)))
                }
                Identity::AwsPodIdentity {
                    endpoint,
                    token_file,
                } => {
                    let token = match token_file {
                        Some(f) => Some(exchange::read_token(f)?),
                        None => None,
                    };
                    let (keys, exp) =
                        aws::pod_identity(&self.client, endpoint, token.as_deref()).await?;
                    Ok(Held::new(Issued::Aws(keys), exp))
                }
                Identity::GoogleServiceAccount {
                    key_json,
                    token_uri,
                } => {
                    let (token, exp) = google::service_account_token(
                        &self.client,
                        key_json.expose(),
                        token_uri.as_deref(),
                    )
                    .await?;
                    Ok(Held::new(bearer(&token)?, Some(exp)))
                }
                Identity::GkeMetadata { endpoint } => {
                    let (token, exp) = google::metadata_token(&self.client, endpoint).await?;
                    Ok(Held::new(bearer(&token)?, Some(exp)))
                }
                Identity::AzureWorkloadIdentity {
                    tenant_id,
                    client_id,
                    token_file,
                    authority_host,
                    scope,
                } => {
                    let assertion = exchange::read_token(token_file)?;
                    let url = format!("{authority_host}/{tenant_id}/oauth2/v2.0/token");
                    let form = form_urlencoded::Serializer::new(String::new())
                        .append_pair("client_id", client_id)
                        .append_pair("scope", scope)
                        .append_pair(
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        )
                        .append_pair("client_assertion", &assertion)
                        .append_pair("grant_type", "client_credentials")
                        .finish();
                    let (token, exp) = exchange::oauth_token(&self.client, &url, form).await?;
                    Ok(Held::new(bearer(&token)?, Some(exp)))
                }
            }
        };
        match tokio::time::timeout(FETCH_TIMEOUT, fetching).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the token endpoint did not answer within {} s",
                FETCH_TIMEOUT.as_secs()
            )),
        }
    }

    fn count(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.refreshes
                .with_label_values(&[&self.provider, self.identity.kind(), result])
                .inc();
        }
    }

    fn set_ready(&self, ready: bool) {
        let was = self.was_ready.swap(ready, Ordering::AcqRel);
        if let (Some(events), true) = (&self.events, was != ready) {
            let (type_, reason, note) = if ready {
                (
                    "Normal",
                    "CredentialObtained",
                    format!(
                        "the sidecar holds a {} credential again",
                        self.identity.kind()
                    ),
                )
            } else {
                (
                    "Warning",
                    "CredentialUnavailable",
                    format!(
                        "{}; its backends are skipped until it is obtained",
                        self.unready_reason()
                    ),
                )
            };
            events.raise(crate::events::Note {
                kind: "LLMProvider",
                name: &self.provider,
                namespace: &self.namespace,
                type_,
                reason,
                action: "Refresh",
                note,
            });
        }
        if let Some(m) = &self.metrics {
            m.ready
                .with_label_values(&[&self.provider, self.identity.kind()])
                .set(i64::from(ready));
        }
    }
}

fn bearer(token: &str) -> Result<Issued, String> {
    let mut v = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
        "the token endpoint answered a token that is not a header value".to_string()
    })?;
    v.set_sensitive(true);
    Ok(Issued::Bearer(v))
}

/// Fetches, stores, sleeps until the refresh time (or a back-off after a
/// failure), and stops once the source is no longer used.
async fn refresher(weak: Weak<CredentialSource>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(src) = weak.upgrade() else { return };
        let result = src.fetch().await;
        let now = crate::clock::wall();
        let sleep = match result {
            Ok(held) => {
                let next = held.refresh_at;
                src.current.store(Some(Arc::new(held)));
                if src.error.swap(None).is_some() {
                    tracing::info!(provider = %src.provider, kind = src.identity.kind(), "credential obtained again");
                }
                src.tried.store(true, Ordering::Release);
                src.count("ok");
                src.set_ready(true);
                backoff = Duration::from_millis(500);
                match next {
                    // Static keys: nothing to refresh.
                    None => {
                        src.changed.notify_waiters();
                        return;
                    }
                    Some(at) => at
                        .duration_since(now)
                        .unwrap_or_default()
                        .max(Duration::from_millis(200)),
                }
            }
            Err(e) => {
                tracing::warn!(provider = %src.provider, kind = src.identity.kind(), error = %e, "cannot obtain the provider's credential");
                src.error.store(Some(Arc::new(e)));
                src.tried.store(true, Ordering::Release);
                src.count("error");
                let still = src.current.load().as_deref().is_some_and(|h| h.valid(now));
                if !still {
                    src.current.store(None);
                }
                src.set_ready(still);
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                // Retry before the held credential expires.
                match src.current.load().as_deref().and_then(|h| h.expires) {
                    Some(e) => wait.min(e.duration_since(now).unwrap_or_default()),
                    None => wait,
                }
                .max(Duration::from_millis(100))
            }
        };
        src.changed.notify_waiters();
        drop(src);
        tokio::time::sleep(sleep).await;
    }
}
