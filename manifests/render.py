#!/usr/bin/env python3
"""Renders charts/llmesh with Helm itself and prints the objects as plain YAML.

`make manifests` writes manifests/install.yaml with it, and
tests/injector/install.rs runs it to check that install.yaml is the chart.

helm-sdkpy (the Helm library for Python, installed by `make deps`) offers
install but not `helm template`. So this runs a real `helm install` of the
chart (wait off) against a small in-process API server that accepts every
object and keeps what it is sent: Helm renders the templates, orders the
objects and creates them, and what arrives is printed, CRDs first. Helm's
own release record and its bookkeeping labels and annotations are left out.

    python3 manifests/render.py [--values FILE.yaml] [--namespace NS] [--no-namespace]
"""
import argparse
import asyncio
import json
import pathlib
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "llmesh"

# Discovery: every kind the chart can create, (plural, kind, namespaced).
GROUPS = {
    "apps/v1": [("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "admissionregistration.k8s.io/v1": [
        ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False)
    ],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "llmesh.io/v1alpha1": [
        ("llmproviders", "LLMProvider", True),
        ("llmroutes", "LLMRoute", True),
        ("llmquotas", "LLMQuota", True),
        ("llmdatapolicies", "LLMDataPolicy", True),
    ],
    "monitoring.coreos.com/v1": [
        ("podmonitors", "PodMonitor", True),
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
    "cert-manager.io/v1": [("certificates", "Certificate", True), ("issuers", "Issuer", True)],
}
CORE = [
    ("namespaces", "Namespace", False),
    ("configmaps", "ConfigMap", True),
    ("secrets", "Secret", True),
    ("serviceaccounts", "ServiceAccount", True),
    ("services", "Service", True),
]
# Labels that only make sense for a Helm release.
HELM_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "helm.sh/chart")


def resource_list(group_version, items):
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": n, "singularName": "", "namespaced": ns, "kind": k,
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
            for n, k, ns in items
        ],
    }


class Recorder(BaseHTTPRequestHandler):
    created = []
    stored = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if path == "/apis":
            groups = []
            for gv in GROUPS:
                g, v = gv.split("/")
                groups.append({"name": g, "versions": [{"groupVersion": gv, "version": v}],
                               "preferredVersion": {"groupVersion": gv, "version": v}})
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/api/v1":
            return self.reply(200, resource_list("v1", CORE))
        m = re.fullmatch(r"/apis/([^/]+/[^/]+)", path)
        if m and m.group(1) in GROUPS:
            return self.reply(200, resource_list(m.group(1), GROUPS[m.group(1)]))
        with self.lock:
            if path in self.stored:
                return self.reply(200, self.stored[path])
        parts = path.strip("/").split("/")
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if rest[:1] == ["namespaces"] and len(rest) > 2:
            rest = rest[2:]
        if len(rest) == 1:  # a collection: empty
            return self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
        return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": "not found"})

    def read_body(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "json" not in (self.headers.get("Content-Type") or ""):
            # Helm's release record goes as protobuf: not one of the chart's objects.
            return None
        return json.loads(raw or b"{}")

    def do_POST(self):
        obj = self.read_body()
        if obj is None:
            return self.reply(201, {"kind": "Secret", "apiVersion": "v1",
                                    "metadata": {"name": "helm-release", "resourceVersion": "1"}})
        with self.lock:
            self.created.append(json.loads(json.dumps(obj)))
            meta = obj.setdefault("metadata", {})
            meta.update({"resourceVersion": "1", "uid": f"uid-{len(self.created)}",
                         "creationTimestamp": "2026-01-01T00:00:00Z"})
            if obj.get("kind") == "CustomResourceDefinition":
                # Helm waits for its CRDs to be established.
                obj["status"] = {"acceptedNames": obj["spec"]["names"], "conditions": [
                    {"type": "Established", "status": "True"}, {"type": "NamesAccepted", "status": "True"}]}
            self.stored[self.path.split("?")[0].rstrip("/") + "/" + meta.get("name", "")] = obj
        self.reply(201, obj)

    def do_PUT(self):
        obj = self.read_body()
        self.reply(200, obj or {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "helm-release"}})

    def do_PATCH(self):
        self.read_body()
        with self.lock:
            self.reply(200, self.stored.get(self.path.split("?")[0], {}))


def render(values, namespace):
    import helm_sdkpy as helm

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = (
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: render, cluster: {{server: 'http://127.0.0.1:{server.server_address[1]}'}}}}]\n"
        "users: [{name: render, user: {token: render}}]\n"
        f"contexts: [{{name: render, context: {{cluster: render, user: render, namespace: {namespace}}}}}]\n"
        "current-context: render\n"
    )
    try:
        config = helm.Configuration(namespace=namespace, kubeconfig=kubeconfig)
        asyncio.run(helm.Install(config).run("llmesh", str(CHART), values=values, wait=False, timeout=60))
    finally:
        server.shutdown()
    objects = Recorder.created
    for o in objects:
        meta = o.setdefault("metadata", {})
        pod_meta = (o.get("spec") or {}).get("template", {}).get("metadata") or {}
        for k in HELM_LABELS:
            (meta.get("labels") or {}).pop(k, None)
            (pod_meta.get("labels") or {}).pop(k, None)
        notes = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("meta.helm.sh/")}
        if notes:
            meta["annotations"] = notes
        else:
            meta.pop("annotations", None)
    # CRDs first (Helm creates them before the rest), then Helm's order.
    return [o for o in objects if o["kind"] == "CustomResourceDefinition"] + \
           [o for o in objects if o["kind"] != "CustomResourceDefinition"]


def dump(objects):
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, s):
        style = "|" if "\n" in s else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)

    Dumper.add_representer(str, text)
    return "---\n".join(yaml.dump(o, Dumper=Dumper, sort_keys=False, width=1000) for o in objects)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", help="a values file merged over the chart's defaults")
    ap.add_argument("--namespace", default="llmesh-system")
    ap.add_argument("--no-namespace", action="store_true", help="leave out the Namespace object")
    args = ap.parse_args()
    try:
        import helm_sdkpy  # noqa: F401
        import yaml
    except ImportError as e:
        sys.exit(f"render.py needs helm-sdkpy and PyYAML ({e}); run `make deps`")
    values = yaml.safe_load(pathlib.Path(args.values).read_text()) if args.values else None
    objects = render(values, args.namespace)
    if not args.no_namespace:
        objects.insert(0, {"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": args.namespace,
                                        "labels": {"app.kubernetes.io/part-of": "llmesh",
                                                   "llmesh.io/injection": "disabled"}}})
    sys.stdout.write(
        "# llmesh without Helm: kubectl apply --server-side -f manifests/install.yaml\n"
        "# Generated by `make manifests` (manifests/render.py): the chart charts/llmesh\n"
        f"# rendered by Helm with its default values into the namespace {args.namespace},\n"
        "# plus that namespace. Do not edit: change the chart, then run make manifests.\n"
    )
    sys.stdout.write(dump(objects))


if __name__ == "__main__":
    main()
