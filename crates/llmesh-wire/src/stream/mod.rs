//! Streaming translation: upstream SSE bytes in, client SSE bytes out.
//!
//! Same dialect on both sides takes the pass-through path
//! ([`passthrough`]): event bytes are forwarded untouched and only events
//! that can carry usage or the model name are decoded.
//!
//! Across dialects, each upstream event is decoded ([`decode`]) into
//! [`Ev`]s — the content of an OpenAI chunk, split into its parts — and
//! encoded for the client ([`encode_openai`], [`encode_anthropic`],
//! [`encode_responses`]). Gemini streams therefore reach Anthropic clients
//! through the same pivot.
//!
//! Bedrock streams are not SSE but AWS binary event-stream messages: the
//! same [`StreamTranslator::push`] takes their raw bytes, and
//! [`decode_bedrock`] reassembles and decodes the messages instead of the
//! SSE parser.

mod decode;
mod decode_bedrock;
mod encode_anthropic;
mod encode_openai;
mod encode_responses;
mod passthrough;

use serde_json::Value;

use crate::error::UpstreamError;
use crate::responses::ResponseEcho;
use crate::sse::{SseEvent, SseParser};
use crate::{Dialect, TranslateError, Usage};

use decode::Decoder;
use encode_anthropic::AnthropicEncoder;
use encode_openai::OpenAiEncoder;
use encode_responses::ResponsesEncoder;
use passthrough::Passthrough;

/// What the client asked for about the stream, beyond the dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// The client sent `stream_options.include_usage: true` (OpenAI clients
    /// only; upstream OpenAI requests always ask for usage).
    pub include_usage: bool,
}

impl StreamOptions {
    /// Read the options from the client's request body.
    pub fn from_request(client: Dialect, body: &Value) -> Self {
        let include_usage = client == Dialect::OpenAi
            && body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        StreamOptions { include_usage }
    }
}

/// One piece of a canonical (OpenAI-shaped) chunk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ev {
    /// The response began. `id` is bare: no `chatcmpl-`/`msg_` prefix.
    Start {
        id: String,
        model: String,
    },
    Text(String),
    /// A tool call began; `args` may already hold (part of) its arguments.
    ToolStart {
        index: usize,
        id: String,
        name: String,
        args: String,
        signature: Option<String>,
    },
    ToolArgs {
        index: usize,
        args: String,
    },
    /// Reasoning text (Anthropic thinking, Gemini thoughts, an
    /// OpenAI-compatible `reasoning_content`); only Responses clients get it.
    Reasoning(String),
    /// Reasoning tokens so far (a part of the output tokens), when the
    /// upstream reports them.
    ReasoningTokens(u64),
    /// An OpenAI `finish_reason`.
    Finish(&'static str),
    /// Usage so far (a full snapshot, not an increment).
    Usage(Usage),
    Error(UpstreamError),
    /// The upstream's end marker.
    Done,
}

#[derive(Debug, Default)]
struct Stats {
    usage: Option<Usage>,
    model: Option<String>,
    completed: bool,
    content_chunks: u64,
    /// Responses pass-through: the response of the terminal event.
    final_response: Option<Value>,
    /// What the answer said of itself, once it said anything (boxed: the
    /// translator travels in every streamed answer).
    said: Option<Box<Said>>,
}

/// The signals of a streamed answer, read on the way.
#[derive(Debug, Default)]
struct Said {
    /// Why generation stopped, in OpenAI's vocabulary (`other` for one
    /// outside it), once seen.
    finish: Option<&'static str>,
    /// The first tool called, once seen.
    tool: Option<String>,
    /// An OpenAI refusal delta, or an Anthropic `refusal` stop.
    refusal: bool,
}

impl Stats {
    fn said(&mut self) -> &mut Said {
        self.said.get_or_insert_with(Box::default)
    }

    fn tool_seen(&self) -> bool {
        self.said.as_ref().is_some_and(|s| s.tool.is_some())
    }
}

#[derive(Debug)]
enum Encoder {
    OpenAi(OpenAiEncoder),
    Anthropic(AnthropicEncoder),
    Responses(ResponsesEncoder),
}

#[derive(Debug)]
enum Mode {
    Pass(Passthrough),
    Translate(Box<Translating>),
    /// No translation exists; `push` fails with `reason`, errors are
    /// written in the `client` dialect.
    Unsupported {
        client: Dialect,
        reason: &'static str,
    },
}

#[derive(Debug)]
struct Translating {
    decoder: Decoder,
    encoder: Encoder,
    /// Scratch buffer, kept to reuse its allocation.
    events: Vec<Ev>,
}

impl Encoder {
    fn encode(&mut self, ev: &Ev, out: &mut Vec<u8>) -> bool {
        match self {
            Encoder::OpenAi(e) => e.encode(ev, out),
            Encoder::Anthropic(e) => e.encode(ev, out),
            Encoder::Responses(e) => e.encode(ev, out),
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAi(e) => e.close(out),
            Encoder::Anthropic(e) => e.close(out),
            Encoder::Responses(e) => e.close(out),
        }
    }

    /// Write an error event and stop writing.
    fn write_error(&mut self, kind: &str, code: &str, message: &str, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAi(e) => {
                e.fail();
                write_error_event(Dialect::OpenAi, kind, code, message, out);
            }
            Encoder::Anthropic(e) => {
                e.fail();
                write_error_event(Dialect::Anthropic, kind, code, message, out);
            }
            Encoder::Responses(e) => e.fail(kind, code, message, out),
        }
    }
}

/// Converts an upstream SSE byte stream into the client's SSE byte stream,
/// chunk by chunk, recording usage and the response model on the way.
///
/// Output depends only on the bytes fed, not on how they were split.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: SseParser,
    mode: Mode,
    stats: Stats,
    /// Unwraps Bedrock InvokeModel stream frames into the Anthropic SSE
    /// they carry, before anything else.
    invoke: Option<Box<crate::BedrockInvokeStream>>,
}

impl StreamTranslator {
    /// A translator for one response stream. A Gemini client with another
    /// upstream, a Bedrock client, and any other client with a Responses
    /// upstream, are unsupported: [`push`](Self::push) then fails.
    ///
    /// With a Bedrock upstream, [`push`](Self::push) takes the raw
    /// `ConverseStream` body (AWS event-stream messages, not SSE); the
    /// client still gets SSE. Converse streams name no model
    /// ([`response_model`](Self::response_model) stays `None`, chunks carry
    /// an empty `model`) and no id (see
    /// [`with_response_id`](Self::with_response_id)).
    ///
    /// A Responses client with another upstream gets an empty
    /// [`ResponseEcho`] (synthesized id, current time, no request settings);
    /// the proxy should use [`for_responses`](Self::for_responses).
    pub fn new(client: Dialect, upstream: Dialect, opts: StreamOptions) -> Self {
        if client == Dialect::Responses {
            return Self::for_responses(upstream, ResponseEcho::default());
        }
        let encoder = match client {
            Dialect::OpenAi => Ok(Encoder::OpenAi(OpenAiEncoder::new(opts.include_usage))),
            Dialect::Anthropic => Ok(Encoder::Anthropic(AnthropicEncoder::default())),
            Dialect::Gemini | Dialect::Responses => Err(crate::GEMINI_CLIENT_UNSUPPORTED),
            Dialect::Bedrock => Err(crate::BEDROCK_CLIENT_UNSUPPORTED),
        };
        let mode = if client == Dialect::Bedrock {
            Mode::Unsupported {
                client,
                reason: crate::BEDROCK_CLIENT_UNSUPPORTED,
            }
        } else if client == upstream {
            Mode::Pass(Passthrough::new(client, opts.include_usage))
        } else {
            Self::translating(client, upstream, encoder)
        };
        Self::with_mode(mode)
    }

    /// A translator for a Responses client (`POST /v1/responses`).
    ///
    /// With a Responses upstream the stream passes through untouched and
    /// `echo` is unused. Otherwise the upstream's stream becomes Responses
    /// events for a response with `echo.id`, `echo.created_at` and the
    /// settings of `echo.request`; see [`final_response`](Self::final_response)
    /// for the object to store.
    pub fn for_responses(upstream: Dialect, echo: ResponseEcho) -> Self {
        let mode = if upstream == Dialect::Responses {
            Mode::Pass(Passthrough::new(Dialect::Responses, false))
        } else {
            let encoder = Ok(Encoder::Responses(ResponsesEncoder::new(echo)));
            Self::translating(Dialect::Responses, upstream, encoder)
        };
        Self::with_mode(mode)
    }

    fn translating(
        client: Dialect,
        upstream: Dialect,
        encoder: Result<Encoder, &'static str>,
    ) -> Mode {
        let decoder = Decoder::new(upstream).ok_or(crate::RESPONSES_UPSTREAM_UNSUPPORTED);
        match (decoder, encoder) {
            (Ok(decoder), Ok(encoder)) => Mode::Translate(Box::new(Translating {
                decoder,
                encoder,
                events: Vec::new(),
            })),
            (_, Err(reason)) | (Err(reason), _) => Mode::Unsupported { client, reason },
        }
    }

    fn with_mode(mode: Mode) -> Self {
        StreamTranslator {
            parser: SseParser::new(),
            mode,
            stats: Stats::default(),
            invoke: None,
        }
    }

    /// Use this `created` timestamp in synthesized OpenAI chunks (and as
    /// `created_at` of synthesized Responses objects) instead of the current
    /// time (for reproducible output in tests).
    pub fn with_created(mut self, unix_secs: u64) -> Self {
        if let Mode::Translate(t) = &mut self.mode {
            match &mut t.encoder {
                Encoder::OpenAi(e) => e.set_created(unix_secs),
                Encoder::Responses(e) => e.set_created(unix_secs),
                Encoder::Anthropic(_) => {}
            }
        }
        self
    }

    /// The response id to report for an upstream whose stream names none
    /// (Bedrock; a synthesized one otherwise), bare: without `chatcmpl-` or
    /// `msg_`. No effect on other upstreams.
    pub fn with_response_id(mut self, id: &str) -> Self {
        if let Mode::Translate(t) = &mut self.mode {
            if let Decoder::Bedrock(d) = &mut t.decoder {
                d.id = Some(id.to_owned());
            }
        }
        self
    }

    /// For an Anthropic model called through Bedrock's
    /// `InvokeModelWithResponseStream`: [`push`](Self::push) takes its
    /// event-stream body and reads the Anthropic events inside.
    pub fn with_bedrock_invoke(mut self) -> Self {
        self.invoke = Some(Box::new(crate::BedrockInvokeStream::new()));
        self
    }

    /// The model to report for an upstream whose stream names none
    /// (Bedrock: the model id the proxy called). No effect on others.
    pub fn with_model(mut self, model: &str) -> Self {
        if let Mode::Translate(t) = &mut self.mode {
            if let Decoder::Bedrock(d) = &mut t.decoder {
                d.model = Some(model.to_owned());
            }
        }
        self
    }

    /// Feed raw upstream bytes; bytes for the client are appended to `out`
    /// (nothing when no event is complete yet). For a Bedrock upstream these
    /// are the raw `application/vnd.amazon.eventstream` bytes, split
    /// anywhere; a corrupt message (bad CRC or lengths) fails this call and
    /// every later one with [`TranslateError::InvalidUpstream`], since the
    /// framing cannot be recovered.
    ///
    /// On `Err` every complete event was still processed; the error reports
    /// the first undecodable one (e.g. invalid JSON). The proxy may keep
    /// feeding, or end the stream, e.g. after [`write_error`](Self::write_error).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if let Some(invoke) = self.invoke.as_mut() {
            let mut sse = Vec::new();
            let unwrapped = invoke.push(input, &mut sse);
            let translated = self.push_sse(&sse, out);
            return unwrapped.and(translated);
        }
        self.push_sse(input, out)
    }

    fn push_sse(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        let stats = &mut self.stats;
        match &mut self.mode {
            Mode::Pass(p) => {
                self.parser
                    .push_raw(input, |raw| p.on_event(raw, out, stats));
                Ok(())
            }
            Mode::Translate(t) => {
                let Translating {
                    decoder,
                    encoder,
                    events,
                } = &mut **t;
                if let Decoder::Bedrock(d) = decoder {
                    let result = d.push(input, events);
                    emit(events, encoder, stats, out);
                    return result;
                }
                let mut first_err = None;
                self.parser.push_raw(input, |raw| {
                    if let Some(ev) = SseEvent::parse(raw) {
                        if let Err(e) = decoder.decode(&ev, events) {
                            first_err.get_or_insert(e);
                        }
                        emit(events, encoder, stats, out);
                    }
                });
                first_err.map_or(Ok(()), Err)
            }
            Mode::Unsupported { reason, .. } => Err(TranslateError::Unsupported((*reason).into())),
        }
    }

    /// The upstream body ended: flush what is pending, and close the client
    /// stream properly (`data: [DONE]`, or Anthropic's `message_delta` +
    /// `message_stop`) if the upstream did not. Check
    /// [`completed`](Self::completed) to tell a clean end from a truncated
    /// one.
    ///
    /// Translated Responses streams are the exception: a truncated one gets
    /// no terminal event (`response.completed` would hide the truncation),
    /// so the proxy should follow up with [`write_error`](Self::write_error),
    /// which writes `error` + `response.failed`. A client that gets neither
    /// sees the stream end before `response.completed`, which the OpenAI SDKs
    /// report as an error.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let stats = &mut self.stats;
        match &mut self.mode {
            Mode::Pass(p) => {
                let rest = self.parser.take_pending();
                if !rest.is_empty() {
                    p.on_event(&rest, out, stats);
                }
            }
            Mode::Translate(t) => {
                let Translating {
                    decoder,
                    encoder,
                    events,
                } = &mut **t;
                if let Some(ev) = self.parser.finish() {
                    // A broken trailing event changes nothing at this point.
                    let _ = decoder.decode(&ev, events);
                    emit(events, encoder, stats, out);
                }
                encoder.close(out);
            }
            Mode::Unsupported { .. } => {}
        }
    }

    /// Append an error event in the client's dialect (for failures the proxy
    /// detects mid-stream, such as an upstream read error). `kind` and
    /// `code` are as for [`error_body`](crate::error_body). On translated
    /// streams nothing more is written afterwards, not even by
    /// [`finish`](Self::finish); on pass-through streams bytes keep flowing
    /// if the proxy keeps feeding them.
    ///
    /// Responses clients get an `error` event (`{type: error, code, message,
    /// param: null}`); translated Responses streams also get
    /// `response.failed`, and nothing at all once they wrote a terminal event
    /// (`response.completed`, `response.incomplete`, `response.failed`).
    pub fn write_error(&mut self, kind: &str, code: &str, message: &str, out: &mut Vec<u8>) {
        match &mut self.mode {
            Mode::Pass(p) => p.write_error(kind, code, message, out),
            Mode::Translate(t) => t.encoder.write_error(kind, code, message, out),
            Mode::Unsupported { client, .. } => {
                write_error_event(*client, kind, code, message, out);
            }
        }
    }

    /// The complete Responses object, once a Responses stream completed
    /// (`response.completed` or `response.incomplete`): synthesized for
    /// translated streams, taken from the terminal event on pass-through
    /// streams. `None` for other clients, and for failed or truncated
    /// streams.
    pub fn final_response(&self) -> Option<&Value> {
        match &self.mode {
            Mode::Pass(_) => self.stats.final_response.as_ref(),
            Mode::Translate(t) => match &t.encoder {
                Encoder::Responses(e) => e.final_response(),
                Encoder::OpenAi(_) | Encoder::Anthropic(_) => None,
            },
            Mode::Unsupported { .. } => None,
        }
    }

    /// Usage seen so far (final once [`completed`](Self::completed)).
    pub fn usage(&self) -> Option<Usage> {
        self.stats.usage
    }

    /// The model the upstream reported, once seen.
    pub fn response_model(&self) -> Option<&str> {
        self.stats.model.as_deref()
    }

    /// True once the upstream sent its end marker (`[DONE]`, `message_stop`,
    /// a Gemini chunk with a `finishReason`, a Responses
    /// `response.completed`/`response.incomplete`, or Bedrock's `metadata`
    /// event, which follows `messageStop`).
    pub fn completed(&self) -> bool {
        self.stats.completed
    }

    /// Why the answer stopped, in OpenAI's `finish_reason` vocabulary
    /// (`stop`, `length`, `tool_calls`, `content_filter`, or `other` for a
    /// reason outside it), once the upstream said. OpenAI and Anthropic
    /// clients; `None` for the others.
    pub fn finish_reason(&self) -> Option<&'static str> {
        self.stats.said.as_ref().and_then(|s| s.finish)
    }

    /// The name of the first tool the answer called, once seen (OpenAI and
    /// Anthropic clients).
    pub fn tool_called(&self) -> Option<&str> {
        self.stats.said.as_ref().and_then(|s| s.tool.as_deref())
    }

    /// Whether the answer refused: an OpenAI `refusal` delta, or an
    /// Anthropic `stop_reason: refusal` on a pass-through stream
    /// (translated streams report a filtered finish instead).
    pub fn refused(&self) -> bool {
        self.stats.said.as_ref().is_some_and(|s| s.refusal)
    }

    /// Content-bearing chunks (text or tool-call deltas) sent so far. On the
    /// OpenAI pass-through path this is a byte-level heuristic: the opening
    /// role chunk may be counted when its `content` is not empty/null. On
    /// the Responses pass-through path it counts `response.output_text.delta`
    /// and `response.function_call_arguments.delta` events. Reasoning is not
    /// counted.
    pub fn content_chunks(&self) -> u64 {
        self.stats.content_chunks
    }
}

fn emit(events: &mut Vec<Ev>, encoder: &mut Encoder, stats: &mut Stats, out: &mut Vec<u8>) {
    for ev in events.drain(..) {
        match &ev {
            Ev::Start { model, .. } if !model.is_empty() => stats.model = Some(model.clone()),
            Ev::Usage(u) => stats.usage = Some(*u),
            Ev::Done => stats.completed = true,
            Ev::Finish(reason) => stats.said().finish = Some(reason),
            Ev::ToolStart { name, .. } if !stats.tool_seen() => {
                stats.said().tool = Some(name.clone());
            }
            _ => {}
        }
        let written = encoder.encode(&ev, out);
        if written && matches!(ev, Ev::Text(_) | Ev::ToolStart { .. } | Ev::ToolArgs { .. }) {
            stats.content_chunks += 1;
        }
    }
}

/// Serialize into `out`. The types written here (derived `Serialize`
/// structs, `Value`s) cannot fail to serialize.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

pub(crate) fn write_error_event(
    client: Dialect,
    kind: &str,
    code: &str,
    message: &str,
    out: &mut Vec<u8>,
) {
    if client == Dialect::Responses {
        encode_responses::write_error_event(&mut 0, code, message, out);
        return;
    }
    let body = crate::error_body(client, kind, code, message);
    let event = match client {
        Dialect::Anthropic => Some("error"),
        Dialect::OpenAi | Dialect::Gemini | Dialect::Responses | Dialect::Bedrock => None,
    };
    let mut data = Vec::new();
    write_json(&mut data, &body);
    crate::sse::write_event(out, event, &data);
}

#[cfg(test)]
mod tests;
