# syntax=docker/dockerfile:1
# One build, one image per binary: `make image` builds every target below
# (docker or podman; the CI machine has neither). The final images are
# distroless (glibc, CA certificates, no shell, no package manager) and run
# as the non-root user 65532.
#
#   docker build --target llmesh-injector -t ghcr.io/llmesh/llmesh-injector:0.1.0 .

ARG RUST_VERSION=1.91

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Symbols and debug info stay out of the shipped binaries.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p llmesh-proxy -p llmesh-injector -p llmesh-controller -p llmesh-mock \
 && mkdir -p /out \
 && cp target/release/llmesh-proxy target/release/llmesh-injector \
       target/release/llmesh-controller target/release/llmesh-mock /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS base
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
LABEL org.opencontainers.image.source="llmesh" \
      org.opencontainers.image.licenses="Apache-2.0"

FROM base AS llmesh-injector
EXPOSE 9443
ENTRYPOINT ["/usr/local/bin/llmesh-injector"]

FROM base AS llmesh-controller
EXPOSE 15510
ENTRYPOINT ["/usr/local/bin/llmesh-controller"]

FROM base AS llmesh-mock
EXPOSE 18080
ENTRYPOINT ["/usr/local/bin/llmesh-mock"]

# The default target: the sidecar.
FROM base AS llmesh-proxy
EXPOSE 15500 15501 15502
ENTRYPOINT ["/usr/local/bin/llmesh-proxy"]
