//! Accounting at the end of every call: metrics, cost and the one JSON log
//! line per request. Never prompt or completion text.

use std::sync::Arc;
use std::time::Duration;

use llmesh_policy::{Provider, TokenCounts};
use llmesh_wire::Usage;

use crate::context::RequestCtx;
use crate::metrics::{TOKEN_TYPES, UNKNOWN_VERSION};
use crate::runtime::BackendRuntime;
use crate::upstream::Operation;

/// How to estimate output tokens when the upstream reported no usage.
#[derive(Debug)]
pub enum OutputEstimate {
    /// Nothing to estimate from.
    None,
    /// The completion text.
    Text(String),
    /// Streamed content chunks (about one token each).
    Chunks(u64),
}

/// How a call ended.
#[derive(Debug)]
pub struct Outcome {
    /// HTTP status returned to the client (499 when the client went away).
    pub status: u16,
    /// Error class, empty on success.
    pub error_type: &'static str,
    /// Usage reported by the upstream.
    pub usage: Option<Usage>,
    /// Model named in the upstream's response.
    pub response_model: Option<String>,
    /// Time to first streamed chunk.
    pub ttfc: Option<Duration>,
    /// Fallback for missing usage.
    pub output_estimate: OutputEstimate,
    /// The signals of a whole chat answer, when read.
    pub signals: Option<crate::signals::Signals>,
}

impl Outcome {
    /// A failed call: no usage.
    pub fn error(status: u16, error_type: &'static str) -> Outcome {
        Outcome {
            status,
            error_type,
            usage: None,
            response_model: None,
            ttfc: None,
            output_estimate: OutputEstimate::None,
            signals: None,
        }
    }
}

/// One call to a backend, carried to its end: the request's context and
/// what is particular to the backend that answered (or was billed).
pub struct Call {
    /// The request.
    pub ctx: Arc<RequestCtx>,
    /// The provider.
    pub provider: Arc<Provider>,
    /// Model sent upstream.
    pub upstream_model: String,
    /// Model label for per-backend series: the backend's fixed model, or
    /// the route pattern.
    pub model_label: String,
    /// The backend's cached metric series.
    pub series: Arc<crate::metrics::SeriesCache>,
    /// The model version the backend last answered with.
    pub version: Arc<crate::runtime::ModelVersion>,
}

impl Call {
    /// The call of `ctx` on backend `b`.
    pub fn new(ctx: &Arc<RequestCtx>, b: &BackendRuntime) -> Call {
        Call {
            ctx: ctx.clone(),
            provider: b.backend.provider.clone(),
            upstream_model: b.backend.upstream_model(ctx.requested()).to_string(),
            model_label: b
                .backend
                .model
                .clone()
                .unwrap_or_else(|| ctx.pattern().to_string()),
            series: b.series.clone(),
            version: b.version.clone(),
        }
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Chat => "chat",
        Operation::Embeddings => "embeddings",
        Operation::Completions => "text_completion",
    }
}

impl Call {
    /// Records the call. When usage is missing on a successful call the
    /// tokenizer runs on a blocking thread first, never on the runtime.
    pub fn finish(self, outcome: Outcome) {
        let needs_estimate = outcome.usage.is_none() && (200..300).contains(&outcome.status);
        if !needs_estimate {
            self.record(outcome, false);
            return;
        }
        let elapsed_at_end = crate::clock::since(self.ctx.start);
        self.estimate_then(None, move |call, usage| {
            let mut outcome = outcome;
            let output = match &outcome.output_estimate {
                OutputEstimate::None => 0,
                OutputEstimate::Text(t) => crate::tokens::count(t),
                OutputEstimate::Chunks(n) => *n,
            };
            outcome.usage = Some(Usage {
                output_tokens: output,
                ..usage
            });
            call.record_at(outcome, true, elapsed_at_end);
        });
    }

    /// Records the tokens and cost of an upstream attempt that was billed
    /// but did not give the client its answer: a hedge that lost the race
    /// after its request reached the upstream, or a stream that broke and
    /// was continued elsewhere. The request itself is counted once, by the
    /// attempt that answered; this adds only usage, and one access line
    /// marked `billed_attempt`.
    ///
    /// `usage` is what the upstream reported before the attempt ended, if
    /// anything; the prompt is counted locally when it is missing, and
    /// `output` is at least `output_chunks` (about a token each).
    pub fn bill(self, usage: Option<Usage>, output_chunks: u64, reason: &'static str) {
        let finish = move |call: Call, usage: Usage, estimated: bool| {
            let usage = Usage {
                output_tokens: usage.output_tokens.max(output_chunks),
                ..usage
            };
            let cost = call.record_usage(Some(usage), "");
            call.usage_record(&usage, cost, 499);
            let id = call.ctx.shared.identity();
            tracing::info!(
                target: "llmesh::access",
                request_id = call.ctx.request_id.to_str().unwrap_or(""),
                namespace = id.namespace.as_str(),
                workload = id.workload.as_str(),
                pod = id.pod.as_str(),
                route = call.ctx.route.name.as_str(),
                provider = call.provider.name.as_str(),
                model_used = call.upstream_model.as_str(),
                billed_attempt = reason,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                cached_input_tokens = usage.cached_input_tokens,
                cache_write_input_tokens = usage.cache_write_input_tokens,
                tokens_estimated = estimated,
                cost_usd = cost,
                "billed attempt"
            );
        };
        match usage {
            Some(u) if u.input_tokens > 0 => finish(self, u, output_chunks > u.output_tokens),
            _ => self.estimate_then(usage, move |call, u| finish(call, u, true)),
        }
    }

    /// Runs `then` with the usage completed by a local count of the prompt,
    /// on a blocking thread (the tokenizer is too slow for the runtime).
    fn estimate_then(self, known: Option<Usage>, then: impl FnOnce(Call, Usage) + Send + 'static) {
        let task = move || {
            let input = crate::tokens::estimate_prompt(self.ctx.client, &self.ctx.raw);
            let base = known.unwrap_or_default();
            let usage = Usage {
                input_tokens: input,
                ..base
            };
            then(self, usage);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(task);
            }
            Err(_) => task(),
        }
    }

    fn record(self, outcome: Outcome, estimated: bool) {
        let elapsed = crate::clock::since(self.ctx.start);
        self.record_at(outcome, estimated, elapsed);
    }

    /// Tracks the model version the backend answered with: the info
    /// series of the current one, and a counted, logged change when a
    /// backend that answered as one version answers as another (a
    /// provider updating what an alias points to).
    fn note_version(&self, route: &str, provider: &str, model: &str, answered: &str) {
        let Some(previous) = self.version.observe(answered) else {
            return;
        };
        let m = &self.ctx.shared.metrics;
        if let Some(prev) = &previous {
            let _ = m
                .model_version
                .remove_label_values(&[route, provider, model, prev.as_str()]);
            m.model_version_changes
                .with_label_values(&[route, provider, model])
                .inc();
            tracing::warn!(
                route,
                provider,
                model,
                from = prev.as_str(),
                to = answered,
                "the backend answers with another model version"
            );
            if let Some(events) = self.ctx.shared.registry.events.get() {
                events.raise(crate::events::Note {
                    kind: "LLMProvider",
                    name: provider,
                    namespace: &self.provider.namespace,
                    type_: "Normal",
                    reason: "ModelVersionChanged",
                    action: "Answer",
                    note: format!(
                        "model {model} of route {route} now answers as {answered} (was {prev})"
                    ),
                });
            }
        }
        m.model_version
            .with_label_values(&[route, provider, model, answered])
            .set(1);
    }

    /// The drift series of a successful answer (chat calls only), under the
    /// model version the backend answers with (noted already).
    fn drift(&self, output_tokens: Option<u64>, signals: Option<&crate::signals::Signals>) {
        if self.ctx.op != Operation::Chat {
            return;
        }
        let version = self.version.current();
        let labels = [
            self.ctx.route.name.as_str(),
            self.provider.name.as_str(),
            self.model_label.as_str(),
            version.as_deref().map_or(UNKNOWN_VERSION, String::as_str),
        ];
        self.series
            .answered(&self.ctx.shared.metrics, labels, output_tokens, signals);
    }

    /// An answer that did not reach the client because it does not match
    /// the request's schema (it is asked again, or refused): its drift
    /// signals still count for the model version that gave it.
    pub fn rejected_answer(
        &self,
        response_model: Option<&str>,
        usage: Option<Usage>,
        signals: Option<&crate::signals::Signals>,
    ) {
        if let Some(answered) = response_model {
            self.note_version(
                self.ctx.route.name.as_str(),
                self.provider.name.as_str(),
                self.model_label.as_str(),
                truncate(answered, 64),
            );
        }
        self.drift(usage.map(|u| u.output_tokens), signals);
    }

    /// Token and cost series for `usage`; returns the cost in USD.
    fn record_usage(&self, usage: Option<Usage>, response_model: &str) -> f64 {
        let Some(usage) = usage else {
            return 0.0;
        };
        let m = &self.ctx.shared.metrics;
        let op = op_name(self.ctx.op);
        let route = self.ctx.route.name.as_str();
        let provider = self.provider.name.as_str();
        let gen_provider = self.provider.provider_name.as_str();
        let model = self.model_label.as_str();
        let response_model = if response_model.is_empty() {
            model
        } else {
            response_model
        };
        let counts = token_counts(&usage);
        self.series.tokens(m, route, provider, model, counts);
        for (kind, n) in TOKEN_TYPES.into_iter().zip(counts) {
            // Input and output are observed on every call; the cache parts
            // of the input only when there were any, so the histogram of a
            // provider without prompt caching is not full of zeros.
            if matches!(kind, "input" | "output") || n > 0 {
                m.token_usage
                    .with_label_values(&[
                        op,
                        gen_provider,
                        self.ctx.pattern(),
                        response_model,
                        kind,
                        route,
                    ])
                    .observe(n as f64);
            }
        }
        let price = self
            .provider
            .model(&self.upstream_model)
            .and_then(|info| info.price);
        let cost = match price {
            Some(price) => {
                let tokens = priced(&usage);
                let cost = price.cost(tokens);
                self.series.cost(m, route, provider, model, cost);
                let saved = price.cache_savings(tokens);
                if saved > 0.0 {
                    self.series.cache_saved(m, route, provider, model, saved);
                }
                cost
            }
            None => {
                m.unpriced
                    .with_label_values(&[route, provider, self.upstream_model.as_str()])
                    .inc();
                0.0
            }
        };
        if let Some(c) = &self.ctx.charge {
            c.add(&usage, cost);
        }
        crate::quota::pace(
            self.ctx.pacing(),
            provider,
            0,
            usage.input_tokens.saturating_add(usage.output_tokens),
        );
        cost
    }

    /// Queues the usage record of this call for the Redis usage stream
    /// (when the quota store is Redis). No prompt or completion text.
    fn usage_record(&self, usage: &Usage, cost_usd: f64, status: u16) {
        let shared = &self.ctx.shared;
        crate::quota::record_usage(
            &shared.quota,
            shared.identity(),
            crate::quota::CallUsage {
                route: &self.ctx.route.name,
                provider: &self.provider.name,
                model: &self.upstream_model,
                usage,
                cost_usd,
                status,
                caller: self.ctx.charge.as_ref().and_then(|c| c.caller),
            },
        );
    }

    fn record_at(self, outcome: Outcome, estimated: bool, elapsed: Duration) {
        let ctx = &self.ctx;
        let m = &ctx.shared.metrics;
        let op = op_name(ctx.op);
        let route = ctx.route.name.as_str();
        let provider = self.provider.name.as_str();
        let gen_provider = self.provider.provider_name.as_str();
        let model = self.model_label.as_str();
        let response_model = outcome
            .response_model
            .as_deref()
            .map(|r| truncate(r, 64))
            .unwrap_or(model);
        let code = status_label(outcome.status);

        if code == "200" && outcome.error_type.is_empty() {
            self.series.request_ok(m, route, provider, model);
        } else {
            m.requests
                .with_label_values(&[route, provider, model, code, outcome.error_type])
                .inc();
        }
        m.duration
            .with_label_values(&[
                op,
                gen_provider,
                ctx.pattern(),
                response_model,
                outcome.error_type,
                route,
            ])
            .observe(elapsed.as_secs_f64());
        if !outcome.error_type.is_empty() {
            m.upstream_errors
                .with_label_values(&[route, provider, outcome.error_type])
                .inc();
        }
        if let Some(t) = outcome.ttfc {
            m.time_to_first_chunk
                .with_label_values(&[op, gen_provider, ctx.pattern(), response_model, route])
                .observe(t.as_secs_f64());
        }

        if let Some(answered) = outcome.response_model.as_deref() {
            self.note_version(route, provider, model, truncate(answered, 64));
        }
        if code == "200" && outcome.error_type.is_empty() {
            let output = outcome.usage.map(|u| u.output_tokens);
            self.drift(output, outcome.signals.as_ref());
        }
        let cost = self.record_usage(outcome.usage, response_model);
        let usage = outcome.usage.unwrap_or_default();
        self.usage_record(&usage, cost, outcome.status);
        crate::trace::finish_request(
            &ctx.span,
            crate::trace::Finished {
                status: outcome.status,
                error_type: outcome.error_type,
                provider: gen_provider,
                response_model,
                usage: outcome.usage,
            },
        );

        let id = ctx.shared.identity();
        tracing::info!(
            target: "llmesh::access",
            request_id = ctx.request_id.to_str().unwrap_or(""),
            namespace = id.namespace.as_str(),
            workload = id.workload.as_str(),
            pod = id.pod.as_str(),
            route,
            model_requested = ctx.body_model.as_str(),
            provider,
            model_used = self.upstream_model.as_str(),
            response_model,
            api = ctx.client.as_str(),
            stream = ctx.stream,
            status = outcome.status,
            error_type = outcome.error_type,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cached_input_tokens = usage.cached_input_tokens,
            cache_write_input_tokens = usage.cache_write_input_tokens,
            tokens_estimated = estimated,
            cost_usd = cost,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            ttft_ms = outcome.ttfc.map(|t| t.as_secs_f64() * 1000.0),
            "request"
        );
        if let Some(a) = &ctx.audit {
            tracing::info!(
                target: "llmesh::audit",
                request_id = ctx.request_id.to_str().unwrap_or(""),
                namespace = id.namespace.as_str(),
                workload = id.workload.as_str(),
                pod = id.pod.as_str(),
                route,
                provider,
                model_used = self.upstream_model.as_str(),
                status = outcome.status,
                found = a.found.as_str(),
                restricted = a.restricted.as_str(),
                declared = a.declared.as_str(),
                "data policy applied"
            );
        }
    }
}

/// A failed attempt on `b`: its breaker, outlier and attempt series
/// ([`BackendRuntime::record`]), and `llmesh_backend_errors_total` under
/// the model version the backend last answered with (its model label is
/// the one of the request's other per-backend series).
pub fn attempt_failed(
    ctx: &RequestCtx,
    b: &BackendRuntime,
    class: llmesh_api::ErrorClass,
    now: std::time::Instant,
) {
    b.record(
        &ctx.shared.metrics,
        crate::runtime::AttemptOutcome::Failed(class),
        now,
    );
    let version = b.version.current();
    ctx.shared
        .metrics
        .backend_errors
        .with_label_values(&[
            ctx.route.name.as_str(),
            b.backend.provider.name.as_str(),
            b.backend.model.as_deref().unwrap_or(ctx.pattern()),
            version.as_deref().map_or(UNKNOWN_VERSION, String::as_str),
            class.as_str(),
        ])
        .inc();
}

/// The counts of `usage` in the order of [`TOKEN_TYPES`].
pub(crate) fn token_counts(usage: &Usage) -> [u64; 4] {
    [
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_input_tokens,
    ]
}

/// `usage` as the price table counts it.
pub(crate) fn priced(usage: &Usage) -> TokenCounts {
    TokenCounts {
        input: usage.input_tokens,
        cached: usage.cached_input_tokens,
        cache_write: usage.cache_write_input_tokens,
        output: usage.output_tokens,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// Status codes as static strings, so labels do not allocate.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
