#!/usr/bin/env bash
# llmesh installed on a real cluster, sidecar injection end to end:
#
# 1. installs llmesh with the Helm chart (E2E_INSTALL=helm, needs helm) or
#    manifests/install.yaml (E2E_INSTALL=manifests, the default),
# 2. waits for the injector and for the caBundle it writes into its
#    MutatingWebhookConfiguration,
# 3. deploys llmesh-mock as the provider, a credential Secret, an
#    LLMProvider and an LLMRoute, and a sample app (curl) whose pod template
#    is annotated llmesh.io/inject: "true", plus one that is not,
# 4. checks the annotated pod has the sidecar (native or classic) and the
#    app's OPENAI_BASE_URL, the other pod none, then sends a chat
#    completion from the app container through the sidecar to the mock and
#    reads the sidecar's metrics.
#
# Needs: kubectl (curl runs inside the app pod), the images
# (`make image`) reachable by the cluster: with kind, E2E_KIND_CLUSTER=name
# loads them. See e2e/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
: "${KUBECONFIG:?set KUBECONFIG to the cluster to test against}"
NS=${E2E_NAMESPACE:-llmesh-e2e-inject}
SYSTEM_NS=llmesh-system
INSTALL=${E2E_INSTALL:-manifests}
REPO=${IMAGE_REPO:-ghcr.io/llmesh}
TAG=${IMAGE_TAG:-0.1.0}
APP_IMAGE=${E2E_APP_IMAGE:-curlimages/curl:8.11.1}
KEY=e2e-key-not-secret

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v kubectl >/dev/null || fail "kubectl not found"

cleanup() {
  if [ "${E2E_KEEP:-0}" != 1 ]; then
    kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

if [ -n "${E2E_KIND_CLUSTER:-}" ]; then
  step "loading images into kind cluster $E2E_KIND_CLUSTER"
  for b in llmesh-proxy llmesh-injector llmesh-controller llmesh-mock; do
    kind load docker-image "$REPO/$b:$TAG" --name "$E2E_KIND_CLUSTER"
  done
fi

# The app namespace first: the chart binds the sidecar role in it.
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -

step "installing llmesh ($INSTALL)"
case "$INSTALL" in
  helm)
    command -v helm >/dev/null || fail "helm not found (or use E2E_INSTALL=manifests)"
    helm upgrade --install llmesh charts/llmesh -n "$SYSTEM_NS" --create-namespace \
      --set injector.image.repository="$REPO/llmesh-injector" --set injector.image.tag="$TAG" \
      --set controller.image.repository="$REPO/llmesh-controller" --set controller.image.tag="$TAG" \
      --set sidecar.image="$REPO/llmesh-proxy:$TAG" \
      --set "sidecarRbac.namespaces={$NS}" --wait --timeout 5m
    ;;
  manifests)
    # The same objects, with the images this run built.
    sed -e "s#ghcr.io/llmesh/\(llmesh-[a-z]*\):0.1.0#$REPO/\1:$TAG#g" manifests/install.yaml |
      kubectl apply --server-side -f -
    ;;
  *) fail "E2E_INSTALL must be helm or manifests" ;;
esac
kubectl -n "$SYSTEM_NS" rollout status deployment/llmesh-injector --timeout=180s
kubectl -n "$SYSTEM_NS" rollout status deployment/llmesh-controller --timeout=180s

step "waiting for the injector to write the caBundle"
for _ in $(seq 60); do
  bundle=$(kubectl get mutatingwebhookconfiguration llmesh-injector -o jsonpath='{.webhooks[1].clientConfig.caBundle}')
  [ -n "$bundle" ] && break
  sleep 1
done
[ -n "$bundle" ] || fail "no caBundle on the webhook configuration after 60 s"
echo "caBundle set (${#bundle} base64 characters)"

step "namespace $NS: mock provider, credentials, policy"
if [ "$INSTALL" = manifests ]; then
  kubectl -n "$NS" create rolebinding llmesh-sidecar --clusterrole=llmesh-sidecar \
    --group="system:serviceaccounts:$NS" --dry-run=client -o yaml | kubectl apply -f -
fi
kubectl -n "$NS" create secret generic llmesh-credentials --from-literal=openai="$KEY" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: mock, labels: {app: mock}}
spec:
  replicas: 1
  selector: {matchLabels: {app: mock}}
  template:
    metadata: {labels: {app: mock}}
    spec:
      containers:
        - name: mock
          image: $REPO/llmesh-mock:$TAG
          args: [--listen, "0.0.0.0:18080", --api-key, "$KEY"]
          ports: [{containerPort: 18080}]
---
apiVersion: v1
kind: Service
metadata: {name: mock}
spec:
  selector: {app: mock}
  ports: [{port: 18080, targetPort: 18080}]
---
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: mock}
spec:
  schema: openai
  baseUrl: http://mock.$NS.svc:18080/v1
  credential:
    secretKeyRef: {name: llmesh-credentials, key: openai}
  models:
    - name: gpt-4o-mini
      pricing: {input: 0.15, output: 0.60}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  models: [gpt-4o-mini]
  backends:
    - {provider: mock, model: gpt-4o-mini}
YAML
kubectl -n "$NS" rollout status deployment/mock --timeout=120s

step "sample apps: one annotated for injection, one not"
for app in app plain; do
  inject='"true"'
  [ "$app" = plain ] && inject='"false"'
  kubectl -n "$NS" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $app, labels: {app: $app}}
spec:
  replicas: 1
  selector: {matchLabels: {app: $app}}
  template:
    metadata:
      labels: {app: $app}
      annotations: {llmesh.io/inject: $inject}
    spec:
      containers:
        - name: app
          image: $APP_IMAGE
          command: [sleep, "86400"]
YAML
done
kubectl -n "$NS" rollout status deployment/app --timeout=180s
kubectl -n "$NS" rollout status deployment/plain --timeout=180s

step "the annotated pod has the sidecar"
pod=$(kubectl -n "$NS" get pod -l app=app -o jsonpath='{.items[0].metadata.name}')
names=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')
echo "$pod: $names"
[[ " $names " == *" llmesh-proxy "* ]] || fail "no llmesh-proxy container in $pod"
status=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.llmesh\.io/status}')
[ "$status" = injected ] || fail "$pod lacks llmesh.io/status=injected"
base=$(kubectl -n "$NS" exec "$pod" -c app -- printenv OPENAI_BASE_URL)
[ "$base" = http://127.0.0.1:15500/v1 ] || fail "OPENAI_BASE_URL is '$base'"
plain=$(kubectl -n "$NS" get pod -l app=plain -o jsonpath='{.items[0].spec.initContainers[*].name} {.items[0].spec.containers[*].name}')
[[ " $plain " != *" llmesh-proxy "* ]] || fail "the opted-out pod got a sidecar"

step "a request from the app container reaches the mock through the sidecar"
for _ in $(seq 30); do
  out=$(kubectl -n "$NS" exec "$pod" -c app -- sh -c \
    'curl -s -w "\n%{http_code}" "$OPENAI_BASE_URL/chat/completions" -H "content-type: application/json" -d "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello from e2e\"}]}"' || true)
  code=${out##*$'\n'}
  [ "$code" = 200 ] && break
  sleep 2
done
echo "$out" | head -c 600; echo
[ "$code" = 200 ] || fail "chat completion through the sidecar answered $code"
echo "$out" | grep -q '"choices"' || fail "no choices in the answer"

step "the sidecar's metrics count it"
metrics=$(kubectl -n "$NS" exec "$pod" -c app -- curl -s http://127.0.0.1:15501/metrics)
echo "$metrics" | grep '^llmesh_requests_total' | head -5
echo "$metrics" | grep -q "^llmesh_requests_total{.*namespace=\"$NS\"" || fail "no llmesh_requests_total for $NS"

printf '\nPASS: injection end to end (%s)\n' "$INSTALL"
