# The gateway image (target `gateway`) and the example upstream of the local
# stack (target `echo-upstream`). docs/deploy.md explains how to run it.
#   docker build --target gateway --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD) -t robeing-gateway .
# Bases are pinned: bump them on purpose, not by accident.
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG DEBIAN_IMAGE=debian:12.12-slim

# Dependencies alone, in their own layer: a change under src/ rebuilds only
# the gateway. Only the binary's dependency graph (no dev-dependencies).
FROM ${RUST_IMAGE} AS deps
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked --bin robeing-gateway \
    && rm -rf src

# The gateway binary. GIT_SHA names the commit in --version and
# gateway_build_info (the build context has no .git).
FROM deps AS build
ARG GIT_SHA=unknown
COPY src src
RUN touch src/main.rs src/lib.rs \
    && GIT_SHA=${GIT_SHA} cargo build --release --locked --bin robeing-gateway

FROM ${DEBIAN_IMAGE} AS gateway
# Roots for h2 upstreams over TLS, JWKS over https, PostgreSQL/Redis TLS.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/robeing-gateway /usr/local/bin/robeing-gateway
# The pid file, upgrade socket and handoff files: a directory only the
# gateway's user can write (the gateway refuses one open to others).
RUN mkdir -m 0700 /run/robeing-gateway && chown nobody:nogroup /run/robeing-gateway
USER nobody
# /readyz on the admin listener (no curl in the image: bash's /dev/tcp).
ENV GATEWAY_ADMIN_PORT=9100
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${GATEWAY_ADMIN_PORT} && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/robeing-gateway"]

# The example upstream of docker-compose.yml (examples need the
# dev-dependencies; the gateway image above does not).
FROM deps AS echo-build
COPY . .
RUN cargo build --release --locked --example echo_upstream

FROM ${DEBIAN_IMAGE} AS echo-upstream
COPY --from=echo-build /src/target/release/examples/echo_upstream /usr/local/bin/echo_upstream
USER nobody
ENTRYPOINT ["/usr/local/bin/echo_upstream"]
