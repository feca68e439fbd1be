//! The request context: everything known about a request once it is
//! admitted, owned, created once and shared (`Arc`) by every later stage:
//! the attempts, the answer, the stream body, a continuation, and the
//! accounting of each call.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use llmesh_policy::Route;
use llmesh_wire::Dialect;

use crate::shared::Shared;
use crate::table::Table;
use crate::upstream::Operation;

/// One admitted request (see the module doc).
pub struct RequestCtx {
    /// Shared state of the sidecar.
    pub shared: Arc<Shared>,
    /// The table the request started with: every stage reads this one, so
    /// a request never sees two policies.
    pub table: Arc<Table>,
    /// Position of the route in `table`.
    pub route_index: usize,
    /// The route.
    pub route: Arc<Route>,
    /// Which entry of `route.models` matched (see [`RequestCtx::pattern`]).
    pub pattern_index: usize,
    /// The API the client speaks.
    pub client: Dialect,
    /// Chat or embeddings.
    pub op: Operation,
    /// Streaming asked for.
    pub stream: bool,
    /// The client asked for the usage chunk.
    pub include_usage: bool,
    /// The model a downgrade quota routed the request as, if one did (see
    /// [`RequestCtx::requested`]).
    pub downgraded_to: Option<Arc<str>>,
    /// The model named in the client's body.
    pub body_model: String,
    /// The body sent upstream (the data policy's rewrite, if it made one).
    pub raw: Bytes,
    /// The client's headers.
    pub headers: HeaderMap,
    /// Request id (also sent as `x-request-id`).
    pub request_id: HeaderValue,
    /// When the request arrived (on [`crate::clock::now`]).
    pub start: Instant,
    /// The route's total deadline.
    pub deadline: tokio::time::Instant,
    /// `max_tokens` (or `max_completion_tokens`) asked for, 0 if none.
    pub max_output: u64,
    /// Data classes the chosen provider must be cleared for.
    pub restricted: Vec<String>,
    /// Redacted values to put back into the answer.
    pub vault: Option<Arc<llmesh_dlp::Vault>>,
    /// What the data policy found, for the audit line.
    pub audit: Option<Arc<crate::dataguard::Audit>>,
    /// What the request holds against its quotas; every call billed for it
    /// adds its usage, and it is settled when the context is dropped.
    pub charge: Option<Arc<crate::quota::Charge>>,
    /// The prompt's token count, counted at most once (admission or the
    /// context-window preflight).
    pub prompt_tokens: OnceLock<u64>,
    /// The request's span: the answer and a continuation run after the
    /// handler returned, and their work belongs under it.
    pub span: tracing::Span,
    /// Responses API: this request's place in its conversation.
    pub turn: Option<Arc<crate::conversation::Turn>>,
    /// Where the answer is cached, when the route caches this request.
    pub cache: Option<crate::cache::Pending>,
    /// The JSON schema the answer must match (the request asked for one
    /// and the route validates).
    pub schema: Option<Arc<jsonschema::Validator>>,
}

impl RequestCtx {
    /// The route entry that matched (the `request_model` metric label).
    pub fn pattern(&self) -> &str {
        self.route
            .models
            .get(self.pattern_index)
            .map_or("", String::as_str)
    }

    /// The model the request is routed as: a downgrade quota's target, else
    /// the client's.
    pub fn requested(&self) -> &str {
        self.downgraded_to.as_deref().unwrap_or(&self.body_model)
    }

    /// The prompt's tokens, counted once (on a blocking thread: the
    /// tokenizer is too slow for the runtime) and kept.
    pub async fn prompt_tokens(&self) -> Result<u64, crate::error::ProxyError> {
        if let Some(n) = self.prompt_tokens.get() {
            return Ok(*n);
        }
        let n = crate::tokens::count_prompt(self.client, self.raw.clone()).await?;
        Ok(*self.prompt_tokens.get_or_init(|| n))
    }

    /// The attempt plan of this request: the retry, failover and hedge
    /// decisions, seeded afresh.
    pub fn plan(&self) -> crate::plan::Plan {
        crate::plan::Plan::new(
            self.table.clone(),
            self.route_index,
            crate::plan::PlanInput {
                restricted: self.restricted.clone(),
                deadline: self.deadline.into_std(),
                pacing: self.pacing().cloned(),
                seed: rand::random(),
                pin: self.turn.as_ref().and_then(|t| t.pin.clone()),
            },
        )
    }

    /// The same request with another body (a structured-output retry):
    /// everything else, the quota charge and the cache slot included, is
    /// shared; the prompt is counted again.
    pub fn with_raw(&self, raw: Bytes) -> RequestCtx {
        RequestCtx {
            shared: self.shared.clone(),
            table: self.table.clone(),
            route_index: self.route_index,
            route: self.route.clone(),
            pattern_index: self.pattern_index,
            client: self.client,
            op: self.op,
            stream: self.stream,
            include_usage: self.include_usage,
            downgraded_to: self.downgraded_to.clone(),
            body_model: self.body_model.clone(),
            raw,
            headers: self.headers.clone(),
            request_id: self.request_id.clone(),
            start: self.start,
            deadline: self.deadline,
            max_output: self.max_output,
            restricted: self.restricted.clone(),
            vault: self.vault.clone(),
            audit: self.audit.clone(),
            charge: self.charge.clone(),
            prompt_tokens: OnceLock::new(),
            span: self.span.clone(),
            turn: self.turn.clone(),
            cache: self.cache.clone(),
            schema: self.schema.clone(),
        }
    }

    /// The same request as a shadow call (see `shadow`): unstreamed, with
    /// its own deadline (reset when the call starts), and nothing of the
    /// client's request attached: no quota charge, no cache slot, no
    /// conversation, no redaction vault.
    pub fn for_shadow(&self, raw: Bytes) -> RequestCtx {
        let mut c = self.with_raw(raw);
        c.stream = false;
        c.include_usage = false;
        c.charge = None;
        c.cache = None;
        c.turn = None;
        c.vault = None;
        c.audit = None;
        c.start = crate::clock::now();
        c.deadline = tokio::time::Instant::now() + self.route.timeouts.total;
        c
    }

    /// The quota engine, when providers publish limits to pace under.
    pub fn pacing(&self) -> Option<&Arc<llmesh_quota::QuotaEngine>> {
        self.table.quota.as_ref().filter(|e| e.paces_any())
    }
}
