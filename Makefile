# llmesh — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
MOCK_PORT ?= 18080
POLICY ?= examples/local/policy.yaml
export LLMESH_MOCK_KEY ?= mock-key-local-only

.PHONY: run test lint fmt build release bench bench-faults bench-quota bench-injector deps nextest clean crds manifests image catalog

## run: build, start the mock provider and the proxy on the embedded policy, print a curl line
run:
	$(CARGO) build --release -p llmesh-proxy -p llmesh-mock
	@set -euo pipefail; \
	trap 'kill $$(jobs -p) 2>/dev/null || true' EXIT INT TERM; \
	./target/release/llmesh-mock --listen 127.0.0.1:$(MOCK_PORT) --api-key "$$LLMESH_MOCK_KEY" \
	  --ttft-ms 150 --chunk-delay-ms 40 --output-tokens 24 & \
	sleep 0.3; \
	POD_NAMESPACE=local LLMESH_WORKLOAD=demo ./target/release/llmesh-proxy --policy-file $(POLICY) & \
	sleep 0.5; \
	if ! kill -0 $$! 2>/dev/null; then echo "llmesh-proxy did not start (see its error above)"; exit 1; fi; \
	echo; \
	echo "llmesh is up: LLM API on 127.0.0.1:15500, metrics on :15501, admin on 127.0.0.1:15502"; \
	echo "Try:"; \
	echo "  curl -s http://127.0.0.1:15500/v1/chat/completions -H 'content-type: application/json' \\"; \
	echo "    -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}'"; \
	echo "  curl -sN http://127.0.0.1:15500/v1/messages -H 'content-type: application/json' \\"; \
	echo "    -d '{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}'"; \
	echo "  curl -s http://127.0.0.1:15500/v1/responses -H 'content-type: application/json' \\"; \
	echo "    -d '{\"model\":\"qwen2.5-7b-instruct\",\"input\":\"hello\"}'"; \
	echo "  OPENAI_BASE_URL=http://127.0.0.1:15500/v1 ANTHROPIC_BASE_URL=http://127.0.0.1:15500 your-app  # any SDK call"; \
	echo "  curl -s http://127.0.0.1:15501/metrics | grep llmesh_cost"; \
	echo "  curl -s http://127.0.0.1:15502/config_dump"; \
	echo "Edit $(POLICY) to change routing live. Ctrl-C stops both."; \
	wait -n

release:
	$(CARGO) build --release -p llmesh-proxy -p llmesh-mock -p llmesh-bench

build:
	$(CARGO) build --workspace --all-targets

## deps: install what the tests need when missing: cargo-nextest,
## Debian's prometheus package (promtool and the server) for the metrics,
## dashboard and alert checks in tests/observability.rs, and Debian's
## redis-server for the quota store tests (crates/llmesh-quota/tests/redis.rs
## start their own on a free loopback port). apt-get runs as root, through
## sudo otherwise. On a machine with systemd the packages also start
## prometheus on :9090 and redis on :6379; the tests use neither.
deps:
	@command -v cargo-nextest >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing prometheus (Debian package) for the observability tests"; \
	  $$sudo apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	fi
	@# helm lint in the tests (tests/injector/helm_lint.py) uses the Helm
	@# library bundled in the PyPI package helm-sdkpy. It declares
	@# Python >= 3.12 but runs on 3.11, hence --ignore-requires-python.
	@# PyYAML reads documents as kubectl does (YAML 1.1) in the tests, and
	@# jsonschema checks what manifests/render.py's API server is sent.
	@# The official openai and anthropic SDKs (websockets for realtime) drive
	@# the sidecar in tests/sdk_calls.rs as an injected app would.
	@if ! python3 -c 'import helm_sdkpy, yaml, jsonschema, openai, anthropic, websockets' >/dev/null 2>&1; then \
	  echo "installing helm-sdkpy, PyYAML, jsonschema and the openai / anthropic SDKs (pip) for the chart, document and SDK tests"; \
	  python3 -m pip install --quiet --ignore-requires-python helm-sdkpy pyyaml jsonschema openai anthropic websockets; \
	fi
	@# tests/clouds/cloud_front.py plays STS, Pod Identity, Google's token
	@# endpoint and metadata server, and Entra for the cloud-credential tests,
	@# checking SigV4 with botocore and JWTs with google-auth / PyJWT.
	@# botocore is the release boto3 1.43.11 requires, so it does not clash.
	@if ! python3 -c 'import botocore, google.auth, jwt, cryptography' >/dev/null 2>&1; then \
	  echo "installing botocore, google-auth, PyJWT and cryptography (pip) for the cloud-credential tests"; \
	  python3 -m pip install --quiet botocore==1.43.11 google-auth==2.63.1 PyJWT==2.15.1 cryptography==51.0.1; \
	fi
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing redis-server (Debian package) for the quota store tests"; \
	  $$sudo apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; \
	fi

## test: lint, then the whole suite (unit, golden, end-to-end over loopback)
test: deps lint
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: the mock and the proxy under load, direct and proxied in one run,
## then the data-policy engine, the latency a quota check adds, and the
## response cache (hit latency, saved cost of a replayed workload).
## BENCH_PIN=1 runs all three processes on CPU 0 (steadier figures on a VM);
## BENCH_ARGS passes flags (e.g. --quick, --json out.json).
bench: release
	$(if $(BENCH_PIN),taskset -c 0 )./target/release/llmesh-bench $(BENCH_ARGS)
	$(if $(BENCH_PIN),taskset -c 0 )./target/release/llmesh-bench --dlp
	$(if $(BENCH_PIN),taskset -c 0 )./target/release/llmesh-bench --quota
	$(if $(BENCH_PIN),taskset -c 0 )./target/release/llmesh-bench --cache
	$(if $(BENCH_PIN),taskset -c 0 )./target/release/llmesh-bench --mirror

## bench-faults: reliability when an upstream fails (50% or all 503s): success
## rate, latency and upstream calls through the proxy and directly (~30 s).
## BENCH_ARGS passes flags (e.g. --quick, --fault-requests N).
bench-faults: release
	./target/release/llmesh-bench --faults $(BENCH_ARGS)

## bench-quota: the latency a quota check adds (llmesh-quota's admit and
## settle) with the memory store and with Redis on loopback (a redis-server
## it starts; LLMESH_BENCH_REDIS=redis://... to use another). ~30 s.
bench-quota: release
	./target/release/llmesh-bench --quota $(BENCH_ARGS)

## crds: regenerate crds/*.yaml from the Rust types in crates/llmesh-api
## (a test fails while the committed files differ from the types), copy
## them into the chart, and regenerate manifests/install.yaml
## catalog: refresh the built-in model catalog from the pinned LiteLLM
## release's price file (downloads it from PyPI; pin in catalog/convert.py)
catalog:
	python3 catalog/convert.py --fetch

crds:
	$(CARGO) run -q -p llmesh-api --bin crdgen -- crds
	cp crds/llmesh.io_*.yaml charts/llmesh/crds/
	$(MAKE) manifests

## manifests: manifests/install.yaml, the chart rendered by Helm (the
## library in helm-sdkpy, see manifests/render.py) with its default values
manifests:
	python3 manifests/render.py > manifests/install.yaml.tmp
	mv manifests/install.yaml.tmp manifests/install.yaml

## image: one container image per binary from the Dockerfile (docker or
## podman). IMAGE_REPO / IMAGE_TAG name them, e.g. for kind:
##   make image IMAGE_TAG=dev && kind load docker-image ghcr.io/llmesh/llmesh-proxy:dev ...
IMAGE_REPO ?= ghcr.io/llmesh
IMAGE_TAG ?= 0.1.0
CONTAINER ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
IMAGES := llmesh-proxy llmesh-injector llmesh-controller llmesh-mock
image:
	@[ -n "$(CONTAINER)" ] || { echo "make image needs docker or podman"; exit 1; }
	for b in $(IMAGES); do \
	  $(CONTAINER) build --target $$b -t $(IMAGE_REPO)/$$b:$(IMAGE_TAG) . || exit 1; \
	done

## bench-injector: the webhook's answer time (p50/p99) for a typical
## Deployment pod, over HTTPS as the API server calls it. ~10 s.
bench-injector:
	$(CARGO) run --release -q -p llmesh-injector --example webhook_bench -- $(BENCH_ARGS)

clean:
	$(CARGO) clean
