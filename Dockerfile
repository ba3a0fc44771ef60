# syntax=docker/dockerfile:1
#
# Chatty: the `chatty` binary (crates/chatty-web) in a small Debian image.
#
#   docker build -t chatty:local .
#   docker run --rm -p 8080:8080 chatty:local        # embedded mode (SQLite)
#
# The three-node setup (MariaDB, Redis, nginx) is docker-compose.yml;
# docs/docker.md explains both. Every setting is an environment variable
# CHATTY__SECTION__KEY (docs/configuration.md).

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
# The workspace needs Rust >= 1.94 (edition 2024); there is no
# rust-toolchain file, so the image's toolchain is used as it is.
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# 1. Dependencies only. The manifests and the lock file are copied with
#    empty stand-in sources, and the binary is built once: every crate from
#    crates.io is compiled into this layer, which stays cached until a
#    Cargo.toml or Cargo.lock changes. The registry download lives in a
#    BuildKit cache mount, so a changed lock file downloads only what is new.
#    Every workspace member's manifest is needed (also benches/), or
#    `--locked` would find the lock file out of date.
COPY Cargo.toml Cargo.lock ./
COPY crates/chatty-protocol/Cargo.toml crates/chatty-protocol/
COPY crates/chatty-storage/Cargo.toml crates/chatty-storage/
COPY crates/chatty-web/Cargo.toml crates/chatty-web/
COPY benches/Cargo.toml benches/
RUN mkdir -p crates/chatty-protocol/src crates/chatty-storage/src crates/chatty-web/src benches/src \
 && touch crates/chatty-protocol/src/lib.rs crates/chatty-storage/src/lib.rs crates/chatty-web/src/lib.rs \
 && echo 'fn main() {}' > crates/chatty-web/src/main.rs \
 && echo 'fn main() {}' > benches/src/main.rs
RUN --mount=type=cache,id=chatty-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=chatty-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked -p chatty-web --bin chatty

# 2. The workspace's own crates. COPY keeps the files' modification times,
#    which can be older than the stand-ins built above: touch the crate
#    roots so cargo rebuilds the three crates (and only them).
COPY crates/ crates/
RUN --mount=type=cache,id=chatty-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=chatty-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    touch crates/chatty-protocol/src/lib.rs crates/chatty-storage/src/lib.rs \
          crates/chatty-web/src/lib.rs crates/chatty-web/src/main.rs \
 && cargo build --release --locked -p chatty-web --bin chatty \
 && install -m 0755 target/release/chatty /usr/local/bin/chatty

# ---------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------
# The binary needs only glibc, libgcc_s and libm (SQLite is compiled in,
# TLS is rustls, jemalloc is linked statically); bookworm matches the
# builder's glibc. ca-certificates is the only package added.
FROM debian:bookworm-slim AS runtime

# Debian's package versions are not pinned: a pinned version disappears
# from the archive with the next security update and breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A system user without a login shell; its home is the working directory,
# where the embedded mode's default database (sqlite://data/chatty.db)
# creates ./data/. Mount a volume on /var/lib/chatty to keep it.
RUN groupadd --system --gid 10001 chatty \
 && useradd --system --uid 10001 --gid chatty --home-dir /var/lib/chatty \
            --no-create-home --shell /usr/sbin/nologin chatty \
 && install -d -o chatty -g chatty -m 0750 /var/lib/chatty

COPY --from=builder /usr/local/bin/chatty /usr/local/bin/chatty

# Numeric, so that a runtime can check the user is not root without
# reading /etc/passwd (Kubernetes' runAsNonRoot); 10001 is `chatty`.
USER 10001:10001
WORKDIR /var/lib/chatty

# Inside a container the node must listen on every interface: the default
# 127.0.0.1 would be reachable from the container itself only.
# server.port keeps its default, 8080.
ENV CHATTY__SERVER__HOST=0.0.0.0
EXPOSE 8080

# Health check without an HTTP client in the image: bash (always present in
# Debian) opens a TCP connection to 127.0.0.1 through /dev/tcp, sends the
# request and reads the status line. Installing curl instead would add 16
# packages, about 6 MB installed (libcurl, nghttp2, ssh2, ldap, kerberos,
# ...; counted from bookworm's package index), and their security updates,
# for one request every few seconds; this costs nothing.
# It asks /healthz (the process serves HTTP), the safe meaning for
# orchestrators that restart an unhealthy container: a node whose database
# or Redis is away recovers by itself, and a restart does not help
# (docs/operations.md). docker-compose.yml asks /readyz instead, so that
# nginx starts once the nodes can serve. The port follows
# CHATTY__SERVER__PORT if it is set; server.host must include 127.0.0.1
# (0.0.0.0, set above, does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${CHATTY__SERVER__PORT:-8080} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 3 head -n 1 <&3 | grep -q '^HTTP/1\\.1 200 '"]

# On SIGTERM the node drains (WebSockets closed with 1012, SSE streams
# ended, long-polls answered) and exits within server.shutdown_timeout_secs
# (10 s by default): give `docker stop` a longer timeout than that
# (docker-compose.yml sets stop_grace_period: 20s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chatty"]
