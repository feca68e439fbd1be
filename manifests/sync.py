#!/usr/bin/env python3
"""`make manifests`: refreshes the generated parts of manifests/install.yaml.

install.yaml is the chart (charts/llmesh) rendered with its default values
into the namespace llmesh-system, for `kubectl apply -f`. Helm's template
engine is not available here (helm-sdkpy exposes lint and install, not
template), so the objects written from templates are kept by hand, and
`cargo nextest run -p llmesh-tests --test injector` checks them against the
chart (kinds, names, images, ports, RBAC rules, webhook settings). This
script rewrites the parts that are copies of files, so they cannot drift:
the CustomResourceDefinitions (from crds/) and the Grafana dashboard
ConfigMap's data (from charts/llmesh/dashboards/llmesh.json).
"""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALL = ROOT / "manifests" / "install.yaml"
CRDS = sorted(p for p in (ROOT / "crds").glob("llmesh.io_*.yaml"))
DASHBOARD = ROOT / "charts" / "llmesh" / "dashboards" / "llmesh.json"


def split(text):
    """Documents as lists of lines, split on `---` lines."""
    docs, cur = [], []
    for line in text.splitlines():
        if line.rstrip() == "---":
            docs.append(cur)
            cur = []
        else:
            cur.append(line)
    docs.append(cur)
    return docs


def is_kind(doc, kind):
    return any(line == f"kind: {kind}" for line in doc)


def named(doc, name):
    return any(line.strip() == f"name: {name}" for line in doc)


def main():
    docs = split(INSTALL.read_text())
    out, crds_done = [], False
    for doc in docs:
        if is_kind(doc, "CustomResourceDefinition"):
            if not crds_done:
                for p in CRDS:
                    out.append(p.read_text().rstrip("\n").splitlines())
                crds_done = True
            continue
        if is_kind(doc, "ConfigMap") and named(doc, "llmesh-dashboard"):
            at = next(i for i, line in enumerate(doc) if line.startswith("  llmesh.json:"))
            body = ["    " + line if line else "" for line in DASHBOARD.read_text().rstrip("\n").splitlines()]
            doc = doc[:at] + ["  llmesh.json: |-"] + body
        out.append(doc)
    if not crds_done:
        sys.exit("install.yaml has no CustomResourceDefinition to replace; add one placeholder document")
    text = "\n---\n".join("\n".join(d) for d in out).rstrip("\n") + "\n"
    INSTALL.write_text(text)
    print(f"wrote {INSTALL.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
