#!/usr/bin/env python3
"""Builds llmesh's model catalog from LiteLLM's published model price file.

  python3 catalog/convert.py --fetch     # download the pinned release, refresh source.json and the catalog
  python3 catalog/convert.py             # regenerate the catalog from catalog/source.json (stdout)

source.json is the pinned release's `model_prices_and_context_window_backup.json`
cut to the providers llmesh reaches directly; the catalog
(crates/llmesh-policy/src/catalog.json) is what the sidecar reads: per provider
family and model, the context window, prices in USD per million tokens and the
capabilities the proxy acts on. Prices are facts published by the providers;
LiteLLM collects them (MIT licence).
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "litellm"
VERSION = "1.80.0"
MEMBER = "litellm/model_prices_and_context_window_backup.json"
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "source.json")
OUTPUT = os.path.join(HERE, "..", "crates", "llmesh-policy", "src", "catalog.json")

# LiteLLM provider -> llmesh family, and the name prefix LiteLLM adds.
FAMILIES = {
    "openai": ("openai", ""),
    "text-completion-openai": ("openai", ""),
    "anthropic": ("anthropic", ""),
    "gemini": ("gemini", "gemini/"),
    "deepseek": ("deepseek", "deepseek/"),
    "mistral": ("mistral", "mistral/"),
}
MODES = {"chat", "completion", "embedding", "responses"}
# Where --fetch records what it fetched and when.
META = "_llmesh_source"


def fetch():
    """The pinned release's price file, cut to the families above."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             f"{PACKAGE}=={VERSION}", "-d", d],
            check=True,
        )
        wheel = next(f for f in os.listdir(d) if f.endswith(".whl"))
        with zipfile.ZipFile(os.path.join(d, wheel)) as z:
            data = json.loads(z.read(MEMBER))
    cut = {k: v for k, v in data.items()
           if isinstance(v, dict) and v.get("litellm_provider") in FAMILIES}
    cut[META] = {"package": f"{PACKAGE}=={VERSION}", "member": MEMBER,
                 "fetched": datetime.date.today().isoformat()}
    return cut


def per_million(v):
    if v is None:
        return None
    return round(float(v) * 1e6, 6)


def convert(source):
    families = {}
    meta = source.get(META, {})
    for name, m in sorted(source.items()):
        if name == META or m.get("mode") not in MODES:
            continue
        family, prefix = FAMILIES[m["litellm_provider"]]
        model = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if "/" in model:  # regional or fine-tune variants
            continue
        inp = per_million(m.get("input_cost_per_token"))
        out = per_million(m.get("output_cost_per_token"))
        if inp is None or out is None:
            continue
        entry = {
            "contextWindow": m.get("max_input_tokens") or m.get("max_tokens"),
            "input": inp,
            "output": out,
        }
        cached = per_million(m.get("cache_read_input_token_cost"))
        if cached is not None:
            entry["cachedInput"] = cached
        write = per_million(m.get("cache_creation_input_token_cost"))
        if write:
            entry["cacheWrite"] = write
        batch_in = m.get("input_cost_per_token_batches")
        if batch_in and m.get("input_cost_per_token"):
            entry["batch"] = round(batch_in / m["input_cost_per_token"], 4)
        for key, flag in [("supports_function_calling", "tools"),
                          ("supports_vision", "vision"),
                          ("supports_response_schema", "jsonSchema")]:
            if m.get(key):
                entry[flag] = True
        families.setdefault(family, {})[model] = entry
    return {
        "source": f"{PACKAGE} {VERSION} ({MEMBER}, MIT licence), fetched {meta.get('fetched', 'unknown')}",
        "families": families,
    }


def render(catalog):
    return json.dumps(catalog, indent=1, sort_keys=True) + "\n"


def main():
    if "--fetch" in sys.argv:
        source = fetch()
        with open(SOURCE, "w") as f:
            json.dump(source, f, indent=1, sort_keys=True)
            f.write("\n")
        with open(OUTPUT, "w") as f:
            f.write(render(convert(source)))
        return
    with open(SOURCE) as f:
        source = json.load(f)
    sys.stdout.write(render(convert(source)))


if __name__ == "__main__":
    main()
