//! The streamed response body: upstream SSE in, client SSE out, chunk by
//! chunk, with idle and total deadlines and accounting when it ends or the
//! client goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use llmesh_resilience::OwnedInFlight;
use llmesh_wire::{Dialect, StreamTranslator};
use tokio::time::Sleep;

use crate::account::{Call, Outcome, OutputEstimate};
use crate::attempt::{Failure, Success};
use crate::body::BodyError;
use crate::clock;
use crate::continuation::{Continuation, Started};
use crate::error::{ProxyError, StreamFault};
use crate::plan::{backend_at, Slot};
use crate::runtime::{AttemptOutcome, BackendRuntime};

/// A continuation under way, and the error to report if it fails.
struct Resuming {
    started: Started,
    fault: StreamFault,
}

/// Body of a streamed response. Polling it polls the upstream, so a slow
/// client slows the upstream read (backpressure) instead of buffering.
pub struct StreamingBody {
    upstream: Incoming,
    /// The first upstream bytes, read before the response was handed over.
    first: Option<Bytes>,
    /// Counts the stream as in flight on its backend until it ends.
    in_flight: OwnedInFlight,
    /// The backend the stream comes from.
    slot: Slot,
    translator: StreamTranslator,
    call: Option<Call>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    ttfc: Option<Duration>,
    done: bool,
    /// Mid-stream continuation, on routes that enable it.
    cont: Option<Box<Continuation>>,
    resuming: Option<Resuming>,
    /// Puts redacted values back into the answer.
    restore: Option<Box<crate::dataguard::StreamRestore>>,
    /// Records what the client gets for the response cache.
    recorder: Option<Box<crate::cache::Recorder>>,
}

impl StreamingBody {
    /// Wraps an upstream body from the backend at `slot` whose first bytes
    /// were already read. The route's idle and total deadlines apply.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: Incoming,
        first: Bytes,
        in_flight: OwnedInFlight,
        slot: Slot,
        translator: StreamTranslator,
        call: Call,
        cont: Option<Box<Continuation>>,
        restore: Option<Box<crate::dataguard::StreamRestore>>,
    ) -> Self {
        let idle = call.ctx.route.timeouts.idle;
        let deadline = call.ctx.deadline;
        StreamingBody {
            upstream,
            first: Some(first),
            in_flight,
            slot,
            translator,
            call: Some(call),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            ttfc: None,
            done: false,
            cont,
            resuming: None,
            restore,
            recorder: None,
        }
    }

    /// Records the stream for the response cache: stored if it completes
    /// on the backend it started on.
    pub fn record(&mut self, recorder: crate::cache::Recorder) {
        self.recorder = Some(Box::new(recorder));
    }

    /// The upstream stream broke (`fault` says how): continue it elsewhere
    /// if the route allows (`None`), else the error event that ends it.
    fn broken(&mut self, fault: StreamFault) -> Option<Bytes> {
        let chunks = self.translator.content_chunks();
        let current = self.in_flight.backend().clone();
        // A broken stream is not cached, continued or not.
        self.recorder = None;
        if let Some(started) = self.cont.as_mut().and_then(|c| c.start(&current, chunks)) {
            let err = ProxyError::Stream {
                fault: fault.clone(),
            };
            tracing::warn!(
                error_type = err.metric_label(),
                "upstream stream broke; continuing on another backend"
            );
            self.resuming = Some(Resuming { started, fault });
            return None;
        }
        Some(self.fail(fault))
    }

    fn backend(&self, slot: Slot) -> Option<&BackendRuntime> {
        let ctx = self.call.as_ref().map(|c| &c.ctx)?;
        backend_at(&ctx.table, ctx.route_index, slot)
    }

    /// A continuation attempt ended: on success its stream replaces the
    /// broken one (`None`); on failure the original error ends the stream.
    fn resumed(&mut self, r: Result<Success, Failure>, resuming: Resuming) -> Option<Bytes> {
        let Resuming { started, fault } = resuming;
        let now = clock::now();
        let Some(call) = self.call.as_ref() else {
            return Some(self.fail(fault));
        };
        let ctx = call.ctx.clone();
        let from = call.provider.name.clone();
        let m = &ctx.shared.metrics;
        let route = ctx.route.name.as_str();
        let Some(b) = backend_at(&ctx.table, ctx.route_index, started.slot) else {
            return Some(self.fail(fault));
        };
        match r {
            Ok(Success::Stream {
                upstream,
                first,
                translator,
            }) => {
                b.record(m, AttemptOutcome::Answered { ttfb: None }, now);
                m.continuations
                    .with_label_values(&[route, &from, "ok"])
                    .inc();
                // The broken stream counts against its backend, and what it
                // was billed is accounted on its own.
                if let Some(old) = self.backend(self.slot) {
                    old.record(m, AttemptOutcome::StreamBroke, now);
                }
                if let Some(old) = self.call.take() {
                    self.call = Some(Call::new(&ctx, b));
                    old.bill(
                        self.translator.usage(),
                        self.translator.content_chunks(),
                        "stream_continued",
                    );
                }
                self.upstream = upstream;
                self.first = Some(first);
                self.translator = translator;
                self.in_flight = started.in_flight;
                self.slot = started.slot;
                let next = tokio::time::Instant::now() + self.idle;
                self.idle_timer.as_mut().reset(next);
                None
            }
            Ok(Success::Whole { .. }) => {
                m.continuations
                    .with_label_values(&[route, &from, "failed"])
                    .inc();
                Some(self.fail(fault))
            }
            Err(f) => {
                crate::account::attempt_failed(&ctx, b, f.class, now);
                m.continuations
                    .with_label_values(&[route, &from, "failed"])
                    .inc();
                drop(started.in_flight);
                Some(self.fail(fault))
            }
        }
    }

    fn end(&mut self, status: u16, error_type: &'static str) {
        self.done = true;
        // A stream the upstream broke or stalled counts against its breaker;
        // one the client abandoned does not.
        if status >= 500 {
            if let Some(call) = &self.call {
                let ctx = &call.ctx;
                if let Some(b) = backend_at(&ctx.table, ctx.route_index, self.slot) {
                    b.record(
                        &ctx.shared.metrics,
                        AttemptOutcome::StreamBroke,
                        clock::now(),
                    );
                }
            }
        }
        let recorder = self.recorder.take();
        if status == 200 {
            if let (Some(call), Some(rec)) = (&self.call, recorder) {
                rec.finish(crate::cache::Answered {
                    provider: call.provider.name.clone(),
                    model: call.upstream_model.clone(),
                    usage: self.translator.usage(),
                    response_model: self.translator.response_model().map(str::to_string),
                });
            }
            if let (Some(call), Some(resp)) = (&self.call, self.translator.final_response()) {
                if let Some(turn) = call.ctx.turn.clone() {
                    turn.save_later(
                        call.ctx.shared.conversations.clone(),
                        &call.provider,
                        &call.upstream_model,
                        resp.clone(),
                    );
                }
            }
        }
        if let Some(call) = self.call.take() {
            // A finished chat stream's signals, as the translator read them
            // on the way (the answer is never held whole).
            let chat = call.ctx.op == crate::upstream::Operation::Chat
                && matches!(call.ctx.client, Dialect::OpenAi | Dialect::Anthropic);
            let signals = self
                .translator
                .finish_reason()
                .filter(|_| status == 200 && chat)
                .map(|finish| {
                    crate::signals::streamed(
                        finish,
                        self.translator.tool_called(),
                        self.translator.refused(),
                    )
                });
            call.finish(Outcome {
                status,
                error_type,
                usage: self.translator.usage(),
                response_model: self.translator.response_model().map(str::to_string),
                ttfc: self.ttfc,
                output_estimate: OutputEstimate::Chunks(self.translator.content_chunks()),
                signals,
            });
        }
    }

    /// Ends the stream with an error event the client's SDK understands
    /// (OpenAI SDKs raise on a `data:` object with `error`, Anthropic SDKs
    /// on `event: error`).
    fn fail(&mut self, fault: StreamFault) -> Bytes {
        let err = ProxyError::Stream { fault };
        let mut out = Vec::new();
        self.translator
            .write_error(err.kind(), err.metric_label(), &err.to_string(), &mut out);
        self.end(err.status().as_u16(), err.metric_label());
        Bytes::from(out)
    }

    fn note_first_chunk(&mut self) {
        if self.ttfc.is_none() {
            if let Some(call) = &self.call {
                self.ttfc = Some(clock::since(call.ctx.start));
            }
        }
    }
}

impl Body for StreamingBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(resuming) = this.resuming.as_mut() {
                match resuming.started.future.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => {
                        let Some(resuming) = this.resuming.take() else {
                            continue;
                        };
                        match this.resumed(r, resuming) {
                            Some(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                            None => continue,
                        }
                    }
                }
            }
            let polled = match this.first.take() {
                Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
                None => Pin::new(&mut this.upstream).poll_frame(cx),
            };
            match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers carry nothing the client needs
                    };
                    let mut out = Vec::with_capacity(data.len() + 64);
                    if let Err(e) = this.translator.push(&data, &mut out) {
                        let fault = StreamFault::Translate(e.to_string());
                        out.extend_from_slice(&this.fail(fault));
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    let next = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                    if let Some(c) = this.cont.as_mut() {
                        out = c.on_output(out);
                    }
                    if let Some(rec) = this.recorder.as_mut() {
                        rec.push(&out);
                    }
                    if let Some(r) = this.restore.as_mut() {
                        out = r.filter(&out);
                    }
                    if !out.is_empty() {
                        this.note_first_chunk();
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream stream broke");
                    match this.broken(StreamFault::Broken) {
                        Some(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                        None => continue,
                    }
                }
                Poll::Ready(None) => {
                    let mut out = Vec::new();
                    this.translator.finish(&mut out);
                    if this.translator.completed() {
                        if let Some(c) = this.cont.as_mut() {
                            out = c.on_output(out);
                        }
                        if let Some(rec) = this.recorder.as_mut() {
                            rec.push(&out);
                        }
                        if let Some(r) = this.restore.as_mut() {
                            out = r.filter(&out);
                        }
                        this.end(200, "");
                    } else {
                        // The upstream closed cleanly but without its end
                        // marker: the answer is truncated; continue it or
                        // say so. (A continuation starts from what the
                        // client has, so the closing events are dropped.)
                        match this.broken(StreamFault::Incomplete) {
                            Some(bytes) => out.extend_from_slice(&bytes),
                            None => continue,
                        }
                    }
                    this.done = true;
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        let fault = StreamFault::Idle {
                            after_ms: this.idle.as_millis(),
                        };
                        match this.broken(fault) {
                            Some(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                            None => continue,
                        }
                    }
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        let bytes = this.fail(StreamFault::Deadline);
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for StreamingBody {
    fn drop(&mut self) {
        // The client went away before the end: account what was used so far.
        if self.call.is_some() {
            self.end(499, "client_cancelled");
        }
    }
}

/// `Instant` of a deadline `d` from `start`.
pub fn deadline_from(start: std::time::Instant, d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(start + d)
}
