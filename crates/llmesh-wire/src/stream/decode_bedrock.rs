//! Bedrock `ConverseStream` event-stream messages → canonical events.

use std::collections::HashMap;

use serde_json::Value;

use super::Ev;
use crate::bedrock::eventstream::{Frame, FrameReader};
use crate::bedrock::{extract_error, finish_reason, kind_for_type};
use crate::error::UpstreamError;
use crate::json::{bad_upstream, synth_id};
use crate::usage::bedrock_usage;
use crate::TranslateError;

/// Decodes the binary stream: raw bytes in (split anywhere), events out.
///
/// `messageStop` carries the stop reason and `metadata` (which always
/// follows it) the usage, so the end marker ([`Ev::Done`]) is sent at
/// `metadata`: a stream cut between the two is not complete.
#[derive(Debug, Default)]
pub(crate) struct BedrockDecoder {
    frames: FrameReader,
    started: bool,
    /// `contentBlockIndex` → tool-call index, for toolUse blocks.
    tool_blocks: HashMap<u64, usize>,
    done: bool,
    /// The response id to report (Converse streams carry none); synthesized
    /// when unset.
    pub(crate) id: Option<String>,
    /// The model to report (Converse streams name none); empty when unset.
    pub(crate) model: Option<String>,
}

impl BedrockDecoder {
    /// Feed raw bytes. Every complete message is decoded even when one
    /// fails; the first failure is returned (a corrupt frame ends decoding
    /// for good, see [`FrameReader::push`]).
    pub(crate) fn push(&mut self, input: &[u8], sink: &mut Vec<Ev>) -> Result<(), TranslateError> {
        let mut frames = Vec::new();
        let framing = self.frames.push(input, |f| frames.push(f));
        let mut first_err = None;
        for frame in &frames {
            if let Err(e) = self.frame(frame, sink) {
                first_err.get_or_insert(e);
            }
        }
        framing.and(first_err.map_or(Ok(()), Err))
    }

    fn frame(&mut self, frame: &Frame, sink: &mut Vec<Ev>) -> Result<(), TranslateError> {
        let payload = || -> Result<Value, TranslateError> {
            if frame.payload.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&frame.payload)
                .map_err(|_| bad_upstream("bedrock stream event is not valid JSON"))
        };
        match frame.header(":message-type").unwrap_or("event") {
            "exception" => {
                let ty = frame.header(":exception-type").unwrap_or("exception");
                // Stream exceptions are named `throttlingException`; error
                // bodies' types `ThrottlingException`: report one spelling.
                let ty = capitalized(ty);
                let v = payload().unwrap_or(Value::Null);
                let err = extract_error(&v, Some(&ty)).unwrap_or_else(|| UpstreamError {
                    kind: kind_for_type(&ty).unwrap_or("api_error"),
                    message: format!("bedrock stream failed with {ty}"),
                    code: Some(ty.clone()),
                });
                sink.push(Ev::Error(err));
                return Ok(());
            }
            "error" => {
                let code = frame.header(":error-code").unwrap_or("error");
                sink.push(Ev::Error(UpstreamError {
                    kind: kind_for_type(code).unwrap_or("api_error"),
                    message: crate::error::truncate_message(
                        frame
                            .header(":error-message")
                            .unwrap_or("bedrock stream error"),
                    ),
                    code: Some(code.to_owned()),
                }));
                return Ok(());
            }
            _ => {}
        }
        let v = payload()?;
        self.ensure_started(sink);
        let block_index = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match frame.header(":event-type").unwrap_or_default() {
            "contentBlockStart" => {
                if let Some(tool) = v.pointer("/start/toolUse") {
                    let index = self.tool_index(block_index);
                    sink.push(Ev::ToolStart {
                        index,
                        id: str_of(tool, "toolUseId").unwrap_or_default().to_owned(),
                        name: str_of(tool, "name").unwrap_or_default().to_owned(),
                        args: String::new(),
                        signature: None,
                    });
                }
            }
            "contentBlockDelta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(t) = str_of(delta, "text").filter(|t| !t.is_empty()) {
                    sink.push(Ev::Text(t.to_owned()));
                } else if let Some(tool) = delta.get("toolUse") {
                    let args = str_of(tool, "input").unwrap_or_default();
                    match self.tool_blocks.get(&block_index) {
                        Some(&index) if !args.is_empty() => sink.push(Ev::ToolArgs {
                            index,
                            args: args.to_owned(),
                        }),
                        Some(_) => {}
                        // Arguments without a start: the call still exists.
                        None => {
                            let index = self.tool_index(block_index);
                            sink.push(Ev::ToolStart {
                                index,
                                id: format!("call_{index}"),
                                name: String::new(),
                                args: args.to_owned(),
                                signature: None,
                            });
                        }
                    }
                } else if let Some(t) = delta
                    .pointer("/reasoningContent/text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    sink.push(Ev::Reasoning(t.to_owned()));
                }
            }
            "messageStop" => {
                let reason = str_of(&v, "stopReason").unwrap_or("end_turn");
                sink.push(Ev::Finish(if self.tool_blocks.is_empty() {
                    finish_reason(reason)
                } else {
                    "tool_calls"
                }));
            }
            "metadata" => {
                if let Some(u) = v.get("usage").and_then(bedrock_usage) {
                    sink.push(Ev::Usage(u));
                }
                if !self.done {
                    self.done = true;
                    sink.push(Ev::Done);
                }
            }
            // messageStart (its role is always assistant), contentBlockStop.
            _ => {}
        }
        Ok(())
    }

    fn ensure_started(&mut self, sink: &mut Vec<Ev>) {
        if !self.started {
            self.started = true;
            sink.push(Ev::Start {
                id: self.id.clone().unwrap_or_else(synth_id),
                model: self.model.clone().unwrap_or_default(),
            });
        }
    }

    fn tool_index(&mut self, block_index: u64) -> usize {
        let next = self.tool_blocks.len();
        *self.tool_blocks.entry(block_index).or_insert(next)
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}
