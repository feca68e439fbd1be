//! Which strings of a request or answer body are text, per API format:
//! [`request_texts`] lists what the data policy scans in a request (every
//! text the provider receives that an app may fill with personal data),
//! [`response_texts`] what [`Vault::restore_json`](crate::Vault::restore_json)
//! puts the originals back into in an answer.
//!
//! # Request fields scanned
//!
//! - [`Api::OpenAiChat`]: `messages[].content` (a string, or parts: `text`
//!   parts' `text`, `image_url` parts' `image_url.url`),
//!   `messages[].tool_calls[].function.arguments` and legacy
//!   `messages[].function_call.arguments` (JSON text: its string values);
//!   `tools[].function.description` and the schema
//!   `tools[].function.parameters` (and legacy `functions[]` the same way,
//!   `tools[].custom.description`); `response_format.json_schema`
//!   `description` and `schema`; `prediction.content`; `user`,
//!   `safety_identifier`; `metadata` values; `messages[].name` (except a
//!   `tool` or `function` message's, a function name) and
//!   `messages[].refusal`; a `file` part's `file.filename`.
//! - [`Api::OpenAiEmbeddings`]: `input`, `prompt` (a string or strings),
//!   `user`.
//! - [`Api::OpenAiCompletions`]: `prompt` (a string or strings), `suffix`,
//!   `user`.
//! - [`Api::OpenAiResponses`]: `instructions`; `input` (a string, or items:
//!   `message` content as a string or parts (`text`, `refusal`,
//!   `input_image.image_url`, `input_file.file_url`), `function_call`
//!   `arguments` (JSON text), every string of `function_call_output`
//!   `output`); `tools[].description` and the schema `tools[].parameters`
//!   (flat `{type: function, name, description, parameters}`);
//!   `text.format` `description` and `schema`; string values of
//!   `prompt.variables` (or their parts, as in messages); `user`,
//!   `safety_identifier`; `metadata` values.
//! - [`Api::Anthropic`]: `system` (a string or `text` blocks);
//!   `messages[].content` as a string or blocks: `text.text` and its
//!   `citations` (`cited_text`, `document_title`, `title`, `url`,
//!   `source`); `image` with
//!   `source.type: url` (`source.url`); `document` `title`, `context` and
//!   its source, `text` (`source.data`), `content` (the blocks inside
//!   `source.content`, the same way) or `url` (`source.url`);
//!   `search_result` `source`, `title` and `content` blocks; every string
//!   of `tool_use.input`; `tool_result.content` as a string or blocks (the
//!   same blocks: text, image, document, search result);
//!   `tools[].description` and the schema `tools[].input_schema`;
//!   `output_format` and `output_config.format` `schema`;
//!   `metadata.user_id`.
//! - [`Api::Gemini`]: `contents[].parts[]`: `text`, `fileData.fileUri`,
//!   every string of `functionCall.args` and `functionResponse.response`;
//!   `systemInstruction.parts[].text`;
//!   `tools[].functionDeclarations[]` `description` and the schemas
//!   `parameters`, `parametersJsonSchema`, `response`,
//!   `responseJsonSchema`; `generationConfig.responseSchema` and
//!   `responseJsonSchema` (snake_case spellings of all of these too).
//! - [`Api::AnyJson`]: every string value.
//!
//! A *schema* (tool parameters, structured-output formats) is walked at
//! any depth through `properties`, `patternProperties`, `$defs`,
//! `definitions`, `dependentSchemas`, `items`, `prefixItems`,
//! `additionalItems`, `additionalProperties`, `unevaluatedItems`,
//! `unevaluatedProperties`, `contains`, `propertyNames`, `not`, `if`,
//! `then`, `else`, `anyOf`, `oneOf`, `allOf`; its text is `description`,
//! `title`, and every string inside `default`, `const`, `enum`, `examples`
//! and `example`.
//!
//! Never scanned: object keys (so a schema's property names), `type`,
//! `format`, `pattern`, `required`, `$ref`, tool and function `name`s, ids,
//! model names, numbers and booleans, and `data:` URLs (inline image or
//! file bytes are not text).
//!
//! # Provider-signed content
//!
//! Anthropic `thinking` blocks (they carry a `signature`) and
//! `redacted_thinking` blocks are never modified, by any walk (an object of
//! either type is skipped by [`Api::AnyJson`] and
//! [`Vault::restore_value`](crate::Vault::restore_value) too): the
//! provider checks the signature and refuses a changed block. Their text
//! goes to the provider as it came, and an answer's thinking is not
//! restored either (the client sends it back as received).
//!
//! # Restore
//!
//! Restoring is about the answer only: the provider saw placeholders, and
//! the request body is never restored. The vault holds the placeholders of
//! every scanned request field, so a placeholder the model writes in its
//! answer is restored whichever field it came from (an e-mail quoted from a
//! document, an `enum` value of a tool schema coming back in tool-call
//! arguments). Answer fields restored ([`response_texts`]): OpenAI chat and
//! completions `choices[].message.content`, tool-call and `function_call`
//! `arguments`, `choices[].text`; Responses `output` items (as `input`
//! items above) and the request fields a Responses answer echoes
//! (`instructions`, `tools`, `text.format`, `prompt.variables`, `user`,
//! `safety_identifier`), so the client gets its own values back; Anthropic
//! `content[]` `text` and `tool_use.input`; Gemini
//! `candidates[].content.parts[]` as in requests.
//!
//! Every walked string is plain text except tool-call arguments, which are
//! JSON text ([`TextKind`]); URLs and schema strings are plain text, so a
//! value found in a URL is replaced in place like any other.

use serde_json::{Map, Value};

/// The wire format of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI `/v1/chat/completions` (and OpenAI-compatible providers).
    OpenAiChat,
    /// OpenAI `/v1/embeddings` (`input`, and legacy `prompt`).
    OpenAiEmbeddings,
    /// Anthropic `/v1/messages`.
    Anthropic,
    /// Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
    /// OpenAI `/v1/responses`: `instructions`, the `input` string or items
    /// (message text, function-call arguments and outputs), tools.
    OpenAiResponses,
    /// OpenAI legacy `/v1/completions` (`prompt`, a string or strings).
    OpenAiCompletions,
    /// Any JSON body the sidecar passes through: every string value.
    AnyJson,
}

/// How a walked string holds text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextKind {
    /// Text as is.
    Plain,
    /// JSON text (tool-call arguments): only its string values are text.
    JsonText,
}

/// One walked string.
pub(crate) struct Text<'a> {
    pub(crate) kind: TextKind,
    pub(crate) text: &'a mut String,
}

fn plain<'a>(out: &mut Vec<Text<'a>>, text: &'a mut String) {
    out.push(Text {
        kind: TextKind::Plain,
        text,
    });
}

fn json_text<'a>(out: &mut Vec<Text<'a>>, text: &'a mut String) {
    out.push(Text {
        kind: TextKind::JsonText,
        text,
    });
}

/// A string value: text.
fn string<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Value::String(s) = v {
        plain(out, s);
    }
}

/// The string at `key` of `o`: text.
fn string_at<'a>(o: &'a mut Map<String, Value>, key: &str, out: &mut Vec<Text<'a>>) {
    if let Some(v) = o.get_mut(key) {
        string(v, out);
    }
}

/// A URL the provider fetches: text (query strings carry e-mails and
/// tokens), unless it is a `data:` URL (inline bytes, not text).
fn url<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Value::String(s) = v {
        if !s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:")) {
            plain(out, s);
        }
    }
}

fn url_at<'a>(o: &'a mut Map<String, Value>, key: &str, out: &mut Vec<Text<'a>>) {
    if let Some(v) = o.get_mut(key) {
        url(v, out);
    }
}

fn type_is(o: &Map<String, Value>, t: &str) -> bool {
    o.get("type").and_then(Value::as_str) == Some(t)
}

/// An Anthropic block the provider signs: never modified.
fn is_signed(o: &Map<String, Value>) -> bool {
    match o.get("type").and_then(Value::as_str) {
        Some("redacted_thinking") => true,
        Some("thinking") => o.contains_key("signature"),
        _ => false,
    }
}

/// Every string in `v`, recursively (object keys excluded), except inside
/// provider-signed blocks.
pub(crate) fn all_strings<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    match v {
        Value::String(s) => plain(out, s),
        Value::Array(a) => a.iter_mut().for_each(|x| all_strings(x, out)),
        Value::Object(o) if !is_signed(o) => o.values_mut().for_each(|x| all_strings(x, out)),
        _ => {}
    }
}

/// A string, or an array of strings.
fn string_or_strings<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    match v {
        Value::String(s) => plain(out, s),
        Value::Array(a) => a.iter_mut().for_each(|x| string(x, out)),
        _ => {}
    }
}

/// The text of a JSON schema, at any depth (see the module docs).
fn schema<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    match v {
        // A list of schemas (`anyOf`, tuple `items`, ...).
        Value::Array(a) => a.iter_mut().for_each(|x| schema(x, out)),
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                match k.as_str() {
                    "description" | "title" => string(v, out),
                    "default" | "const" | "enum" | "examples" | "example" => all_strings(v, out),
                    // Name -> schema: the names are keys, never text.
                    "properties" | "patternProperties" | "$defs" | "definitions"
                    | "dependentSchemas" => {
                        if let Value::Object(m) = v {
                            m.values_mut().for_each(|x| schema(x, out));
                        }
                    }
                    "items"
                    | "prefixItems"
                    | "additionalItems"
                    | "additionalProperties"
                    | "unevaluatedItems"
                    | "unevaluatedProperties"
                    | "contains"
                    | "propertyNames"
                    | "not"
                    | "if"
                    | "then"
                    | "else"
                    | "anyOf"
                    | "oneOf"
                    | "allOf" => schema(v, out),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// A structured-output format: its `description` and `schema`.
fn format<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    let Value::Object(o) = v else { return };
    for (k, v) in o.iter_mut() {
        match k.as_str() {
            "description" => string(v, out),
            "schema" => schema(v, out),
            _ => {}
        }
    }
}

/// Tool definitions, in each API's shape: OpenAI chat `{type, function:
/// {name, description, parameters}}` (and `custom`), legacy `functions`,
/// Responses and Anthropic flat tools (`parameters` or `input_schema`),
/// Gemini `{functionDeclarations: [...]}`.
fn tools<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Value::Array(tools) = v {
        for t in tools {
            if let Value::Object(t) = t {
                tool(t, out);
            }
        }
    }
}

fn tool<'a>(t: &'a mut Map<String, Value>, out: &mut Vec<Text<'a>>) {
    for (k, v) in t.iter_mut() {
        match k.as_str() {
            "description" => string(v, out),
            "parameters"
            | "input_schema"
            | "parametersJsonSchema"
            | "parameters_json_schema"
            | "response"
            | "responseJsonSchema"
            | "response_json_schema" => schema(v, out),
            "function" | "custom" => {
                if let Value::Object(f) = v {
                    tool(f, out);
                }
            }
            "functionDeclarations" | "function_declarations" => tools(v, out),
            _ => {}
        }
    }
}

/// A string, or an array of blocks (see [`block`]).
fn text_or_blocks<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>, more: bool) {
    match v {
        Value::String(s) => plain(out, s),
        Value::Array(blocks) => {
            for b in blocks {
                if let Value::Object(o) = b {
                    block(o, out, more);
                }
            }
        }
        _ => {}
    }
}

/// One content block: OpenAI chat part (`text`, `image_url`) or Anthropic
/// block (`text`, `image`, `document`, `search_result`). With `more`, also
/// Anthropic `tool_use.input` and `tool_result.content`. `thinking` and
/// `redacted_thinking` blocks are signed by the provider: never touched.
fn block<'a>(o: &'a mut Map<String, Value>, out: &mut Vec<Text<'a>>, more: bool) {
    if type_is(o, "text") {
        text_block(o, out);
    } else if type_is(o, "file") {
        // OpenAI chat file part: its name is text, its data bytes.
        if let Some(Value::Object(f)) = o.get_mut("file") {
            string_at(f, "filename", out);
        }
    } else if type_is(o, "image_url") {
        match o.get_mut("image_url") {
            Some(Value::Object(i)) => url_at(i, "url", out),
            Some(v) => url(v, out),
            None => {}
        }
    } else if type_is(o, "image") {
        if let Some(Value::Object(s)) = o.get_mut("source") {
            if type_is(s, "url") {
                url_at(s, "url", out);
            }
        }
    } else if type_is(o, "document") {
        document(o, out);
    } else if type_is(o, "search_result") {
        for (k, v) in o.iter_mut() {
            match k.as_str() {
                "source" => url(v, out),
                "title" => string(v, out),
                "content" => text_or_blocks(v, out, false),
                _ => {}
            }
        }
    } else if more && type_is(o, "tool_use") {
        if let Some(input) = o.get_mut("input") {
            all_strings(input, out);
        }
    } else if more && type_is(o, "tool_result") {
        if let Some(c) = o.get_mut("content") {
            text_or_blocks(c, out, false);
        }
    }
}

/// A `text` block: its text and its citations.
fn text_block<'a>(o: &'a mut Map<String, Value>, out: &mut Vec<Text<'a>>) {
    for (k, v) in o.iter_mut() {
        match k.as_str() {
            "text" => string(v, out),
            "citations" => citations(v, out),
            _ => {}
        }
    }
}

/// Anthropic citations a text block carries (an earlier answer sent back
/// in the conversation): the quoted text and the titles and URLs of what
/// it cites.
fn citations<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    let Value::Array(list) = v else { return };
    for c in list {
        let Value::Object(c) = c else { continue };
        for (k, v) in c.iter_mut() {
            match k.as_str() {
                "cited_text" | "document_title" | "title" => string(v, out),
                "url" | "source" => url(v, out),
                _ => {}
            }
        }
    }
}

/// An Anthropic `document` block: `title`, `context`, and a text, content
/// or URL source (base64 and file sources are not text).
fn document<'a>(o: &'a mut Map<String, Value>, out: &mut Vec<Text<'a>>) {
    for (k, v) in o.iter_mut() {
        match (k.as_str(), v) {
            ("title" | "context", v) => string(v, out),
            ("source", Value::Object(s)) => {
                if type_is(s, "text") {
                    string_at(s, "data", out);
                } else if type_is(s, "content") {
                    if let Some(c) = s.get_mut("content") {
                        text_or_blocks(c, out, false);
                    }
                } else if type_is(s, "url") {
                    url_at(s, "url", out);
                }
            }
            _ => {}
        }
    }
}

/// OpenAI `function.arguments` of a tool call (or legacy `function_call`).
fn arguments<'a>(f: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Some(Value::String(s)) = f.get_mut("arguments") {
        json_text(out, s);
    }
}

fn tool_calls<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Value::Array(calls) = v {
        for c in calls {
            if let Some(f) = c.get_mut("function") {
                arguments(f, out);
            }
        }
    }
}

/// OpenAI chat `messages` (or an answer's `message`s): content, tool-call
/// and `function_call` arguments.
fn chat_message<'a>(m: &'a mut Map<String, Value>, out: &mut Vec<Text<'a>>) {
    // A participant's `name` is the app's text; a legacy `function`
    // message's `name` is the function's, like a tool name.
    let participant = !matches!(
        m.get("role").and_then(Value::as_str),
        Some("function" | "tool")
    );
    for (k, v) in m.iter_mut() {
        match k.as_str() {
            "content" => text_or_blocks(v, out, false),
            "refusal" => string(v, out),
            "name" if participant => string(v, out),
            "tool_calls" => tool_calls(v, out),
            "function_call" => arguments(v, out),
            _ => {}
        }
    }
}

/// `metadata`: a map of the app's own strings.
fn metadata<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    if let Value::Object(m) = v {
        m.values_mut().for_each(|x| string(x, out));
    }
}

/// A Responses content part: `text`, `refusal`, `input_image.image_url`,
/// `input_file.file_url`.
fn responses_part<'a>(p: &'a mut Map<String, Value>, out: &mut Vec<Text<'a>>) {
    for (k, v) in p.iter_mut() {
        match k.as_str() {
            "text" | "refusal" => string(v, out),
            "image_url" | "file_url" => url(v, out),
            _ => {}
        }
    }
}

/// Responses API items (input or output): message text parts,
/// function-call arguments (JSON text) and function-call outputs.
fn responses_items<'a>(v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    let Value::Array(items) = v else {
        string(v, out);
        return;
    };
    for item in items {
        let Value::Object(o) = item else { continue };
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("message");
        if kind == "message" {
            match o.get_mut("content") {
                Some(Value::String(s)) => plain(out, s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Value::Object(p) = p {
                            responses_part(p, out);
                        }
                    }
                }
                _ => {}
            }
        } else if kind == "function_call" {
            if let Some(Value::String(a)) = o.get_mut("arguments") {
                json_text(out, a);
            }
        } else if kind == "function_call_output" {
            if let Some(v) = o.get_mut("output") {
                all_strings(v, out);
            }
        } else if kind == "reasoning" {
            if let Some(v) = o.get_mut("summary") {
                responses_items(v, out);
            }
        }
    }
}

/// Request settings of the Responses API, which a Responses answer echoes.
fn responses_settings<'a>(k: &str, v: &'a mut Value, out: &mut Vec<Text<'a>>) {
    match k {
        "instructions" => string_or_strings(v, out),
        "user" | "safety_identifier" => string(v, out),
        "metadata" => metadata(v, out),
        "tools" => tools(v, out),
        "text" => {
            if let Some(f) = v.get_mut("format") {
                format(f, out);
            }
        }
        "prompt" => {
            if let Some(Value::Object(vars)) = v.get_mut("variables") {
                for var in vars.values_mut() {
                    match var {
                        Value::String(s) => plain(out, s),
                        Value::Object(p) => responses_part(p, out),
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
}

/// Gemini `parts`: `text`, `fileData.fileUri`, `functionCall.args`,
/// `functionResponse.response`.
fn gemini_parts<'a>(content: &'a mut Value, out: &mut Vec<Text<'a>>, with_calls: bool) {
    let Some(Value::Array(parts)) = content.get_mut("parts") else {
        return;
    };
    for p in parts {
        let Value::Object(p) = p else { continue };
        for (k, v) in p.iter_mut() {
            match k.as_str() {
                "text" => string(v, out),
                "fileData" | "file_data" => {
                    if let Value::Object(f) = v {
                        for (k, v) in f.iter_mut() {
                            if k == "fileUri" || k == "file_uri" {
                                url(v, out);
                            }
                        }
                    }
                }
                "functionCall" | "function_call" if with_calls => {
                    if let Some(args) = v.get_mut("args") {
                        all_strings(args, out);
                    }
                }
                "functionResponse" | "function_response" if with_calls => {
                    if let Some(r) = v.get_mut("response") {
                        all_strings(r, out);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The text of a request body (see the module docs).
pub(crate) fn request_texts<'a>(body: &'a mut Value, api: Api, out: &mut Vec<Text<'a>>) {
    let Value::Object(body) = body else { return };
    match api {
        Api::OpenAiChat => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "messages" => {
                        if let Value::Array(msgs) = v {
                            for m in msgs {
                                if let Value::Object(m) = m {
                                    chat_message(m, out);
                                }
                            }
                        }
                    }
                    "tools" | "functions" => tools(v, out),
                    "response_format" => {
                        if let Some(f) = v.get_mut("json_schema") {
                            format(f, out);
                        }
                    }
                    "prediction" => {
                        if let Some(c) = v.get_mut("content") {
                            text_or_blocks(c, out, false);
                        }
                    }
                    "user" | "safety_identifier" => string(v, out),
                    "metadata" => metadata(v, out),
                    _ => {}
                }
            }
        }
        Api::OpenAiEmbeddings => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "input" | "prompt" => string_or_strings(v, out),
                    "user" => string(v, out),
                    _ => {}
                }
            }
        }
        Api::Anthropic => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "system" => text_or_blocks(v, out, false),
                    "messages" => {
                        if let Value::Array(msgs) = v {
                            for m in msgs {
                                if let Some(c) = m.get_mut("content") {
                                    text_or_blocks(c, out, true);
                                }
                            }
                        }
                    }
                    "tools" => tools(v, out),
                    "output_format" => format(v, out),
                    "output_config" => {
                        if let Some(f) = v.get_mut("format") {
                            format(f, out);
                        }
                    }
                    "metadata" => {
                        if let Some(u) = v.get_mut("user_id") {
                            string(u, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        Api::OpenAiResponses => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "input" => responses_items(v, out),
                    k => responses_settings(k, v, out),
                }
            }
        }
        Api::OpenAiCompletions => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "prompt" => string_or_strings(v, out),
                    "suffix" | "user" => string(v, out),
                    _ => {}
                }
            }
        }
        Api::AnyJson => {
            body.values_mut().for_each(|v| all_strings(v, out));
        }
        Api::Gemini => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "contents" => {
                        if let Value::Array(contents) = v {
                            for c in contents {
                                gemini_parts(c, out, true);
                            }
                        }
                    }
                    "systemInstruction" | "system_instruction" => gemini_parts(v, out, false),
                    "tools" => tools(v, out),
                    "generationConfig" | "generation_config" => {
                        if let Value::Object(cfg) = v {
                            for (k, v) in cfg.iter_mut() {
                                if matches!(
                                    k.as_str(),
                                    "responseSchema"
                                        | "response_schema"
                                        | "responseJsonSchema"
                                        | "response_json_schema"
                                ) {
                                    schema(v, out);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The model-written text of a non-streamed answer body (and, for
/// Responses, the request settings it echoes).
pub(crate) fn response_texts<'a>(body: &'a mut Value, api: Api, out: &mut Vec<Text<'a>>) {
    let Value::Object(body) = body else { return };
    match api {
        Api::OpenAiChat => {
            let Some(Value::Array(choices)) = body.get_mut("choices") else {
                return;
            };
            for c in choices {
                let Value::Object(c) = c else { continue };
                for (k, v) in c.iter_mut() {
                    match (k.as_str(), v) {
                        // Legacy completions.
                        ("text", Value::String(s)) => plain(out, s),
                        ("message", Value::Object(m)) => chat_message(m, out),
                        _ => {}
                    }
                }
            }
        }
        Api::OpenAiEmbeddings | Api::AnyJson => {}
        Api::OpenAiResponses => {
            for (k, v) in body.iter_mut() {
                match k.as_str() {
                    "output" => responses_items(v, out),
                    k => responses_settings(k, v, out),
                }
            }
        }
        Api::OpenAiCompletions => {
            if let Some(Value::Array(choices)) = body.get_mut("choices") {
                for c in choices {
                    if let Some(v) = c.get_mut("text") {
                        string(v, out);
                    }
                }
            }
        }
        Api::Anthropic => {
            // `thinking` blocks are signed: not restored.
            if let Some(Value::Array(blocks)) = body.get_mut("content") {
                for b in blocks {
                    let Value::Object(o) = b else { continue };
                    if type_is(o, "text") {
                        text_block(o, out);
                    } else if type_is(o, "tool_use") {
                        if let Some(input) = o.get_mut("input") {
                            all_strings(input, out);
                        }
                    }
                }
            }
        }
        Api::Gemini => {
            if let Some(Value::Array(cands)) = body.get_mut("candidates") {
                for c in cands {
                    if let Some(content) = c.get_mut("content") {
                        gemini_parts(content, out, true);
                    }
                }
            }
        }
    }
}
