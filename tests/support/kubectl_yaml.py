#!/usr/bin/env python3
"""Reads YAML the way kubectl and Helm do and prints it as JSON.

kubectl and Helm turn YAML into JSON with sigs.k8s.io/yaml, whose parser
(a fork of go-yaml v2) follows YAML 1.1: a plain `on`, `off`, `yes`, `no`,
`y`, `n` (any case variant YAML 1.1 lists) is a boolean, as a value, a
list item and a map key, and a boolean key becomes the JSON key "true" or
"false". serde_yaml, which the llmesh binaries and most of the tests use,
follows YAML 1.2, where those are strings. The tests compare both readings
of every document a user is shown, and the fake API server takes objects
through this reader, so a document only YAML 1.2 reads as meant fails here.

PyYAML's safe loader is YAML 1.1 already; this one is brought closer to
go-yaml v2: `y` / `n` are booleans too, timestamps stay strings (go-yaml v2
decodes them into strings when the target is untyped, as it is for
kubectl's conversion), and base-60 numbers (`1:30`) are strings.

    python3 kubectl_yaml.py < file.yaml     # prints a JSON array, one item per document

A YAML error exits 1 with the parser's message on stderr.
"""
import json
import re
import sys

import yaml

BOOL = "tag:yaml.org,2002:bool"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
TIMESTAMP = "tag:yaml.org,2002:timestamp"

INT_RE = re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
GO_BOOL_RE = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")


class KubectlLoader(yaml.SafeLoader):
    """SafeLoader with go-yaml v2's implicit types."""

    bool_values = dict(yaml.SafeLoader.bool_values, y=True, n=False)


KubectlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (BOOL, INT, FLOAT, TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
KubectlLoader.add_implicit_resolver(BOOL, GO_BOOL_RE, list("yYnNtTfFoO"))
KubectlLoader.add_implicit_resolver(INT, INT_RE, list("-+0123456789"))
KubectlLoader.add_implicit_resolver(FLOAT, FLOAT_RE, list("-+0123456789."))


def main():
    text = sys.stdin.read()
    try:
        docs = list(yaml.load_all(text, Loader=KubectlLoader))
    except yaml.YAMLError as e:
        sys.exit(f"error converting YAML to JSON: {e}")
    # Empty documents (a trailing `---`) are skipped, as kubectl does.
    json.dump([d for d in docs if d is not None], sys.stdout, default=str)


if __name__ == "__main__":
    main()
