# Builds the gateway and the example upstream; two runtime targets.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin robeing-gateway --example echo_upstream

FROM debian:bookworm-slim AS gateway
COPY --from=build /src/target/release/robeing-gateway /usr/local/bin/robeing-gateway
# The pid file, upgrade socket and handoff files: a directory only the
# gateway's user can write (the gateway refuses one open to others).
RUN mkdir -m 0700 /run/robeing-gateway && chown nobody:nogroup /run/robeing-gateway
USER nobody
ENTRYPOINT ["/usr/local/bin/robeing-gateway"]

FROM debian:bookworm-slim AS echo-upstream
COPY --from=build /src/target/release/examples/echo_upstream /usr/local/bin/echo_upstream
USER nobody
ENTRYPOINT ["/usr/local/bin/echo_upstream"]
