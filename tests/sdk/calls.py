#!/usr/bin/env python3
"""An app's calls through the llmesh sidecar, made with the official SDKs.

Run by tests/sdk_calls.rs against the real `llmesh-proxy` in front of the
real `llmesh-mock`. The SDKs find the sidecar as an injected app does, in
OPENAI_BASE_URL (`http://127.0.0.1:PORT/v1`) and ANTHROPIC_BASE_URL
(`http://127.0.0.1:PORT`), with a placeholder key the sidecar drops.

The models are those of the test's policy:
  NATIVE      gpt-4o-mini        provider `oai` (schema openai: Responses native)
  TRANSLATED  llama-chat         provider `chatonly` (openai-compatible, chat only)
  CLAUDE      claude-sonnet-4-5  provider `ant` (anthropic)
Pass-through paths (files, batches, audio, moderations, realtime) go to
`oai`, Anthropic message batches to `ant`.

Checks that only the SDK can make (an event stream parses, an error is
raised with the right class) are made here; every observed value is
printed as one JSON line on stdout for the Rust side to assert on.
Failures raise: the traceback on stderr and a non-zero exit say what broke.
"""

import json
import os
import sys

import anthropic
import openai

NATIVE = "gpt-4o-mini"
TRANSLATED = "llama-chat"
CLAUDE = "claude-sonnet-4-5"

oai = openai.OpenAI(timeout=20.0, max_retries=0)
ant = anthropic.Anthropic(timeout=20.0, max_retries=0)

# Usage the SDKs reported, by model, to compare with the sidecar's metrics.
usage = {}
# Responses API calls that reached an upstream, by model.
responses_calls = {}


def count(model, inp, out):
    u = usage.setdefault(model, {"input": 0, "output": 0})
    u["input"] += inp
    u["output"] += out


def created(model, response):
    responses_calls[model] = responses_calls.get(model, 0) + 1
    count(model, response.usage.input_tokens, response.usage.output_tokens)


def text_of(items):
    """Texts of input items as `input_items.list` returns them."""
    out = []
    for item in items:
        for part in getattr(item, "content", None) or []:
            t = getattr(part, "text", None)
            if t is not None:
                out.append(t)
    return out


def status_of(call):
    """The HTTP status of an SDK error `call` raises (None if it does not)."""
    try:
        call()
    except openai.APIStatusError as e:
        return e.status_code
    return None


def responses(model):
    r = {}
    raw = oai.responses.with_raw_response.create(
        model=model, instructions="be brief", input="hello there friend"
    )
    first = raw.parse()
    created(model, first)
    r["provider"] = raw.headers.get("x-llmesh-provider")
    r["id"] = first.id
    r["status"] = first.status
    r["text"] = first.output_text
    r["usage"] = [first.usage.input_tokens, first.usage.output_tokens]

    got = oai.responses.retrieve(first.id)
    r["retrieved"] = {"id": got.id, "text": got.output_text}
    r["input_items"] = text_of(oai.responses.input_items.list(first.id, order="asc"))

    follow = oai.responses.create(
        model=model, previous_response_id=first.id, input="and once more"
    )
    created(model, follow)
    r["follow_up"] = {
        "id": follow.id,
        "previous": follow.previous_response_id,
        "text": follow.output_text,
        "usage": [follow.usage.input_tokens, follow.usage.output_tokens],
    }

    # The helper stream: typed events, then the final response.
    with oai.responses.stream(model=model, input="stream me a short answer") as s:
        types, deltas = [], []
        for ev in s:
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
        final = s.get_final_response()
    created(model, final)
    r["stream"] = {
        "types": types,
        "text": "".join(deltas),
        "final_text": final.output_text,
        "usage": [final.usage.input_tokens, final.usage.output_tokens],
    }

    # The raw event iterator of create(stream=True).
    types, deltas, done = [], [], None
    for ev in oai.responses.create(model=model, input="stream again please", stream=True):
        types.append(ev.type)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        elif ev.type == "response.completed":
            done = ev.response
    created(model, done)
    r["create_stream"] = {
        "types": types,
        "text": "".join(deltas),
        "completed_usage": [done.usage.input_tokens, done.usage.output_tokens],
        "completed_id": done.id,
    }
    r["create_stream_retrieved"] = oai.responses.retrieve(done.id).id == done.id

    # Function calling: the mock calls the declared tool; its output goes
    # back with previous_response_id.
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    ask = oai.responses.create(model=model, input="what is the weather in Paris?", tools=tools)
    created(model, ask)
    calls = [o for o in ask.output if o.type == "function_call"]
    r["tool_call"] = [{"name": c.name, "arguments": json.loads(c.arguments)} for c in calls]
    answer = oai.responses.create(
        model=model,
        previous_response_id=ask.id,
        tools=tools,
        input=[
            {
                "type": "function_call_output",
                "call_id": calls[0].call_id,
                "output": "sunny and 21 degrees",
            }
        ],
    )
    created(model, answer)
    r["tool_answer"] = {
        "types": [o.type for o in answer.output],
        "text": answer.output_text,
        "input_tokens": answer.usage.input_tokens,
    }

    # Not stored: unknown afterwards.
    unstored = oai.responses.create(model=model, input="forget me", store=False)
    created(model, unstored)
    r["unstored_status"] = status_of(lambda: oai.responses.retrieve(unstored.id))

    # Deleted: gone afterwards.
    deleted = oai.responses.delete(first.id)
    r["deleted"] = deleted is None or getattr(deleted, "deleted", True)
    r["after_delete_status"] = status_of(lambda: oai.responses.retrieve(first.id))
    return r


def completions():
    c = oai.completions.create(model=NATIVE, prompt="say hello")
    count(NATIVE, c.usage.prompt_tokens, c.usage.completion_tokens)
    chunks, text, u = 0, [], None
    for ch in oai.completions.create(
        model=NATIVE, prompt="say hello", stream=True, stream_options={"include_usage": True}
    ):
        chunks += 1
        if ch.choices:
            text.append(ch.choices[0].text)
        if ch.usage:
            u = ch.usage
    count(NATIVE, u.prompt_tokens, u.completion_tokens)
    return {
        "text": c.choices[0].text,
        "object": c.object,
        "usage": [c.usage.prompt_tokens, c.usage.completion_tokens],
        "stream_text": "".join(text),
        "stream_chunks": chunks,
        "stream_usage": [u.prompt_tokens, u.completion_tokens],
    }


def batch():
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": NATIVE,
                "messages": [{"role": "user", "content": "count to three please"}],
            },
        }
        for i in range(3)
    ]
    data = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
    f = oai.files.create(file=("input.jsonl", data, "application/jsonl"), purpose="batch")
    b = oai.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    b = oai.batches.retrieve(b.id)
    content = oai.files.content(b.output_file_id)
    out = [json.loads(line) for line in content.text.splitlines() if line.strip()]
    tokens = {"input": 0, "output": 0}
    for line in out:
        u = line["response"]["body"]["usage"]
        tokens["input"] += u["prompt_tokens"]
        tokens["output"] += u["completion_tokens"]
    return {
        "file_id": f.id,
        "file_bytes": f.bytes,
        "status": b.status,
        "counts": [b.request_counts.completed, b.request_counts.failed],
        "output_file_id": b.output_file_id,
        "custom_ids": sorted(line["custom_id"] for line in out),
        "tokens": tokens,
    }


def anthropic_calls():
    r = {}
    messages = [{"role": "user", "content": "hello there friend"}]
    native = ant.messages.with_raw_response.count_tokens(model=CLAUDE, messages=messages)
    r["count_claude"] = {
        "input_tokens": native.parse().input_tokens,
        "estimate": native.headers.get("x-llmesh-token-count"),
    }
    other = ant.messages.with_raw_response.count_tokens(model=NATIVE, messages=messages)
    r["count_other"] = {
        "input_tokens": other.parse().input_tokens,
        "estimate": other.headers.get("x-llmesh-token-count"),
    }
    m = ant.messages.create(model=CLAUDE, max_tokens=64, messages=messages)
    count(CLAUDE, m.usage.input_tokens, m.usage.output_tokens)
    r["message"] = {
        "text": m.content[0].text,
        "stop_reason": m.stop_reason,
        "usage": [m.usage.input_tokens, m.usage.output_tokens],
    }
    with ant.messages.stream(model=CLAUDE, max_tokens=64, messages=messages) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    count(CLAUDE, final.usage.input_tokens, final.usage.output_tokens)
    r["stream_text"] = text

    # A message batch, its results downloaded by the SDK from `results_url`.
    reqs = [
        {
            "custom_id": f"msg-{i}",
            "params": {"model": CLAUDE, "max_tokens": 32, "messages": messages},
        }
        for i in range(2)
    ]
    mb = ant.messages.batches.create(requests=reqs)
    results = list(ant.messages.batches.results(mb.id))
    tokens = {"input": 0, "output": 0}
    for x in results:
        tokens["input"] += x.result.message.usage.input_tokens
        tokens["output"] += x.result.message.usage.output_tokens
    r["batch"] = {
        "status": mb.processing_status,
        "results_url": mb.results_url,
        "results": sorted((x.custom_id, x.result.type) for x in results),
        "tokens": tokens,
    }
    return r


def realtime():
    with oai.realtime.connect(model="gpt-realtime") as conn:
        hello = conn.recv()
        conn.send({"type": "session.update", "session": {"type": "realtime", "instructions": "hi"}})
        echo = conn.recv()
    return {
        "first": hello.type,
        "model": hello.session.model,
        "echo": echo.type,
        "echo_instructions": (getattr(echo, "session", None) or {}).get("instructions"),
    }


def main():
    out = {"sdk": {"openai": openai.__version__, "anthropic": anthropic.__version__}}
    out["responses"] = {"native": responses(NATIVE), "translated": responses(TRANSLATED)}
    out["responses_claude"] = {
        k: v
        for k, v in responses(CLAUDE).items()
        if k in ("provider", "text", "usage", "follow_up", "stream", "tool_call", "tool_answer")
    }
    out["completions"] = completions()
    mod = oai.moderations.create(model="omni-moderation-latest", input=["first text", "second"])
    out["moderations"] = {"results": len(mod.results), "flagged": [x.flagged for x in mod.results]}
    model = oai.models.retrieve(NATIVE)
    out["model"] = {"id": model.id, "owned_by": model.owned_by}
    out["unknown_model_status"] = status_of(lambda: oai.models.retrieve("no-such-model"))
    audio = b"RIFF" + bytes(3 * 1024)  # 3 KiB and 4 bytes: 4 audio tokens
    t = oai.audio.transcriptions.create(file=("hello.wav", audio, "audio/wav"), model="whisper-1")
    out["transcription"] = {"text": t.text}
    out["batch"] = batch()
    out["anthropic"] = anthropic_calls()
    out["realtime"] = realtime()
    out["usage"] = usage
    out["responses_calls"] = responses_calls
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        if not os.environ.get(var):
            sys.exit(f"{var} must point at the sidecar")
    main()
