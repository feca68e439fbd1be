#!/usr/bin/env bash
# llmesh end-to-end against a real cluster (any cluster given KUBECONFIG;
# kind is the documented choice, see e2e/README.md).
#
# 1. applies crds/ and checks the examples against them (server-side dry run),
# 2. shows that the API server refuses an invalid LLMRoute,
# 3. runs llmesh-mock and llmesh-proxy on this machine, the proxy following
#    the cluster (--source kubernetes, POD_NAMESPACE set),
# 4. changes the LLMRoute with kubectl apply and shows that routing follows.
#
# Needs: kubectl, curl, and `make release` (target/release binaries).
set -euo pipefail

cd "$(dirname "$0")/.."
: "${KUBECONFIG:?set KUBECONFIG to the cluster to test against}"
NS=${E2E_NAMESPACE:-llmesh-e2e}
MOCK_PORT=${E2E_MOCK_PORT:-18090}
LLM_PORT=${E2E_LLM_PORT:-15600}
MET_PORT=${E2E_METRICS_PORT:-15601}
ADM_PORT=${E2E_ADMIN_PORT:-15602}
BIN=target/release
export LLMESH_E2E_KEY=e2e-key-not-secret

for b in llmesh-proxy llmesh-mock; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run make release first" >&2; exit 1; }
done
command -v kubectl >/dev/null || { echo "kubectl not found" >&2; exit 1; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -z "${E2E_KEEP:-}" ]; then
    kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "CRDs"
kubectl apply -f crds/
for crd in llmproviders llmroutes llmquotas llmdatapolicies; do
  kubectl wait --for=condition=Established "crd/$crd.llmesh.io" --timeout=60s
done
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -

step "the examples validate against the CRDs (server-side dry run)"
for f in examples/kubernetes/*.yaml; do
  kubectl apply -n "$NS" --dry-run=server -f "$f"
done

step "an invalid LLMRoute is refused by the API server"
bad=$(cat <<YAML
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: invalid, namespace: $NS}
spec:
  models: [chat]
  backends: []
YAML
)
if out=$(echo "$bad" | kubectl apply -f - 2>&1); then
  echo "FAIL: the API server accepted a route without backends" >&2; exit 1
fi
echo "refused as expected: $out"

step "provider and route pointing at the local mock"
policy() {
  cat <<YAML
apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {name: mock, namespace: $NS}
spec:
  schema: openai-compatible
  baseUrl: http://127.0.0.1:$MOCK_PORT/v1
  credential: {env: LLMESH_E2E_KEY}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: chat, namespace: $NS}
spec:
  models: [chat]
  backends: [{provider: mock, model: $1}]
YAML
}
policy model-a | kubectl apply -f -

step "llmesh-mock and llmesh-proxy (following namespace $NS)"
"$BIN/llmesh-mock" --listen "127.0.0.1:$MOCK_PORT" --api-key "$LLMESH_E2E_KEY" &
pids+=($!)
POD_NAMESPACE=$NS LLMESH_WORKLOAD=e2e "$BIN/llmesh-proxy" --source kubernetes \
  --listen "127.0.0.1:$LLM_PORT" --metrics-listen "127.0.0.1:$MET_PORT" \
  --admin-listen "127.0.0.1:$ADM_PORT" --log warn &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$MET_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$MET_PORT/readyz" >/dev/null || { echo "FAIL: proxy never became ready" >&2; exit 1; }

ask() {
  curl -s -o /dev/null -D - "http://127.0.0.1:$LLM_PORT/v1/chat/completions" \
    -H 'content-type: application/json' \
    -d '{"model":"chat","messages":[{"role":"user","content":"hello"}]}' |
    tr -d '\r' | awk -F': ' 'tolower($1)=="x-llmesh-model"{print $2}'
}
wait_model() {
  local want=$1 start=$SECONDS
  while [ $((SECONDS - start)) -lt 10 ]; do
    [ "$(ask)" = "$want" ] && { echo "routed to $want"; return 0; }
    sleep 0.1
  done
  echo "FAIL: not routed to $want within 10s" >&2; return 1
}
wait_model model-a

step "kubectl apply a changed LLMRoute; routing follows without a restart"
t0=$(date +%s%N)
policy model-b | kubectl apply -f -
wait_model model-b
echo "took $(( ($(date +%s%N) - t0) / 1000000 )) ms from kubectl apply"

step "kubectl get"
kubectl get llmproviders,llmroutes -n "$NS"
echo
echo "e2e passed"
