# syntax=docker/dockerfile:1
#
# ringmaster: one image for the operator, the routers and the instance agent's
# installer (`ringmaster copy-self`). Build from the repository root:
#
#   docker build -t ghcr.io/ringmaster/ringmaster:0.1.0 .
#
# The runtime image holds only the binary (dynamically linked against glibc, which
# distroless/cc provides) on a distroless base: no shell, no package manager, non-root.
# The builder is Debian bookworm like the runtime (cc-debian12), so the binary never
# needs a newer glibc than the runtime has.

# ≥ the workspace's rust-version (1.89); 1.95 is the toolchain CI tests with.
ARG RUST_VERSION=1.95

########## builder ##########
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies, in a layer of their own: it is rebuilt only when a manifest, the
#    lock file or the e2e workspace members change, not when src/ does. Every
#    workspace member's manifest (and, for the e2e crates, their targets) must exist
#    for Cargo to load the workspace; the ringmaster crate itself is a stub here.
COPY Cargo.toml Cargo.lock ./
COPY e2e/cluster/ e2e/cluster/
COPY e2e/localnode/ e2e/localnode/
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked -p ringmaster \
 && rm -rf src target/release/ringmaster target/release/deps/ringmaster-* \
           target/release/deps/libringmaster-* target/release/.fingerprint/ringmaster-*

# 2. The crate itself.
COPY src/ src/
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p ringmaster \
 && install -D -m 0755 target/release/ringmaster /out/ringmaster \
 && /out/ringmaster --version

########## runtime ##########
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ringmaster" \
      org.opencontainers.image.description="Kubernetes operator for sharded Redis and PostgreSQL clusters" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder --chown=0:0 --chmod=0755 /out/ringmaster /usr/local/bin/ringmaster

# distroless `nonroot` is uid/gid 65532; numeric so runAsNonRoot can verify it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ringmaster"]
