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

The recording server decodes what it is sent as a real API server would,
so a chart a real cluster refuses fails here too: Helm converts the
templates' YAML to JSON with YAML 1.1 rules (an unquoted `on` is `true`), and
a CRD whose `required` then holds a boolean, an unknown or mistyped
JSONSchemaProps field, or an llmesh object that breaks its CRD's schema or
has an unknown field (strict decoding) is answered with the API server's
error, which fails the install and this script. (Built-in kinds are not
checked: Helm decodes them into their Go types before sending.)

    python3 manifests/render.py [--values FILE.yaml] [--namespace NS] [--no-namespace] [--chart DIR]
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
# Helm's install order of kinds (kinds it does not list come last).
HELM_INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]
# Labels that only make sense for a Helm release.
HELM_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "helm.sh/chart")


# The fields of apiextensions.k8s.io/v1 JSONSchemaProps.
SCHEMA_FIELDS = {
    "$ref", "$schema", "additionalItems", "additionalProperties", "allOf", "anyOf", "default",
    "definitions", "dependencies", "description", "enum", "example", "exclusiveMaximum",
    "exclusiveMinimum", "externalDocs", "format", "id", "items", "maxItems", "maxLength",
    "maxProperties", "maximum", "minItems", "minLength", "minProperties", "minimum", "multipleOf",
    "not", "nullable", "oneOf", "pattern", "patternProperties", "properties", "required", "title",
    "type", "uniqueItems", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
}
TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
         "boolean": bool}
INT_FIELDS = ("maxItems", "minItems", "maxLength", "minLength", "maxProperties", "minProperties")


def of_type(ty, v):
    if ty in ("integer", "number") and isinstance(v, bool):
        return False
    return isinstance(v, TYPES[ty])


def schema_problems(path, s, out):
    """What the API server refuses in one JSONSchemaProps node."""
    if not isinstance(s, dict):
        return out.append(f"{path}: a schema must be an object")
    out.extend(f"{path}: unknown field {k!r}" for k in s if k not in SCHEMA_FIELDS)
    ty = s.get("type")
    if ty is not None and ty not in TYPES:
        out.append(f"{path}.type: unsupported value {ty!r}")
        ty = None
    for k in ("description", "pattern", "format", "title"):
        if k in s and not isinstance(s[k], str):
            out.append(f"{path}.{k}: cannot unmarshal {type(s[k]).__name__} into a string")
    for k in INT_FIELDS:
        if k in s and (isinstance(s[k], bool) or not isinstance(s[k], int)):
            out.append(f"{path}.{k}: cannot unmarshal {s[k]!r} into an integer")
    props = s.get("properties") or {}
    for i, r in enumerate(s.get("required") or []):
        if not isinstance(r, str):
            out.append(f"{path}.required[{i}]: json: cannot unmarshal {type(r).__name__} into Go struct "
                       f"field JSONSchemaProps.required of type string")
        elif r not in props:
            out.append(f"{path}.required[{i}]: {r!r} is not one of the properties")
    for i, v in enumerate(s.get("enum") or []):
        if ty and not of_type(ty, v) and not (v is None and s.get("nullable")):
            out.append(f"{path}.enum[{i}]: {v!r} is not of type {ty}")
    for i, rule in enumerate(s.get("x-kubernetes-validations") or []):
        if not isinstance(rule.get("rule"), str):
            out.append(f"{path}.x-kubernetes-validations[{i}].rule: must be a string")
    for name, child in props.items():
        schema_problems(f"{path}.properties[{name}]", child, out)
    for k in ("items", "additionalProperties"):
        if isinstance(s.get(k), dict):
            schema_problems(f"{path}.{k}", s[k], out)
    return out


def crd_problems(crd):
    out = []
    for i, v in enumerate((crd.get("spec") or {}).get("versions") or []):
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        if schema is None:
            out.append(f"spec.versions[{i}]: no schema")
        else:
            schema_problems(f"spec.versions[{i}].schema.openAPIV3Schema", schema, out)
    return out


def unknown_fields(schema, v, path, out):
    """Strict field validation: fields the schema does not declare."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if isinstance(v, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, child in v.items():
            at = f"{path}.{k}" if path else k
            if props is not None and k in props:
                unknown_fields(props[k], child, at, out)
            elif isinstance(extra, dict):
                unknown_fields(extra, child, at, out)
            elif props is not None and extra is not True:
                out.append(f'unknown field "{at}"')
    elif isinstance(v, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(v):
            unknown_fields(schema["items"], item, f"{path}[{i}]", out)
    return out


def as_json_schema(s):
    """openAPIV3Schema -> JSON Schema for types, formats and bounds."""
    out = {}
    for k, v in s.items():
        if k == "nullable" or k.startswith("x-kubernetes-"):
            continue
        if k == "properties":
            out[k] = {n: as_json_schema(p) for n, p in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = as_json_schema(v)
        else:
            out[k] = v
    if s.get("nullable"):
        out["type"] = [out.get("type"), "null"]
    return out


def object_problems(obj, crds):
    """Why the API server refuses a custom object (the CRD must be known)."""
    import jsonschema

    plural = {c["spec"]["names"]["kind"]: c for c in crds.values()}
    crd = plural.get(obj.get("kind"))
    if crd is None:
        return [f"no matches for kind {obj.get('kind')!r}"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    out = unknown_fields(schema, body, "", [])
    validator = jsonschema.Draft7Validator(as_json_schema(schema))
    out += [f"{'.'.join(map(str, e.absolute_path))}: Invalid value: {e.message}"
            for e in validator.iter_errors(body)]
    return out


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
    refused = []
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

    def refuse(self, code, reason, message):
        self.reply(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "reason": reason, "code": code, "message": message})

    def problems(self, obj):
        """(code, reason, message) a real API server answers for obj, or None."""
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        if kind == "CustomResourceDefinition":
            found = crd_problems(obj)
            if found:
                return 400, "BadRequest", (f'CustomResourceDefinition in version "v1" cannot be handled '
                                           f'as a CustomResourceDefinition: {"; ".join(found)}')
        elif str(obj.get("apiVersion", "")).startswith("llmesh.io/"):
            with self.lock:
                crds = {p: o for p, o in self.stored.items() if o.get("kind") == "CustomResourceDefinition"}
            found = object_problems(obj, crds)
            if found:
                return 422, "Invalid", f"{kind} {name!r} is invalid: {'; '.join(found)}"
        return None

    def do_POST(self):
        obj = self.read_body()
        if obj is None:
            return self.reply(201, {"kind": "Secret", "apiVersion": "v1",
                                    "metadata": {"name": "helm-release", "resourceVersion": "1"}})
        refused = self.problems(obj)
        if refused:
            Recorder.refused.append(refused[2])
            return self.refuse(*refused)
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


def render(values, namespace, chart=CHART):
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
        asyncio.run(helm.Install(config).run("llmesh", str(chart), values=values, wait=False, timeout=60))
    except Exception as e:
        if Recorder.refused:
            sys.exit("the API server refused the chart:\n" + "\n".join(Recorder.refused))
        raise e
    finally:
        server.shutdown()
    if Recorder.refused:
        sys.exit("the API server refused the chart:\n" + "\n".join(Recorder.refused))
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
    # CRDs first (Helm creates them before the rest), then Helm's install
    # order: by kind, then by name. Helm sends the objects of one kind
    # concurrently, so the order they arrive in is not the order to print.
    def order(o):
        kind = o["kind"]
        rank = HELM_INSTALL_ORDER.index(kind) if kind in HELM_INSTALL_ORDER else len(HELM_INSTALL_ORDER)
        return (kind != "CustomResourceDefinition", rank, kind, o["metadata"].get("name", ""))
    return sorted(objects, key=order)


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
    ap.add_argument("--chart", default=str(CHART), help="the chart folder (default charts/llmesh)")
    args = ap.parse_args()
    try:
        import helm_sdkpy  # noqa: F401
        import jsonschema  # noqa: F401
        import yaml
    except ImportError as e:
        sys.exit(f"render.py needs helm-sdkpy, PyYAML and jsonschema ({e}); run `make deps`")
    values = yaml.safe_load(pathlib.Path(args.values).read_text()) if args.values else None
    objects = render(values, args.namespace, pathlib.Path(args.chart))
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
