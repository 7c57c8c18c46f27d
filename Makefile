# robeing-gateway: build, run, test.
#   make run    build and start the gateway with an example upstream
#   make unit   the unit tests alone (no PostgreSQL, no processes)
#   make test   format and lint checks, then the whole suite on a throwaway PostgreSQL
#   make bench-instructions   instructions per request (callgrind) and the cached-path guard
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build release run test unit lint fmt bench bench-instructions bench-idle bench-micro fuzz fuzz-build deps-build deps-test clean

all: build

deps-build:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

build: deps-build
	cargo build

release: deps-build
	cargo build --release --bin robeing-gateway --example echo_upstream

run: release
	scripts/dev-run.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --all-features -- -D warnings

fmt:
	cargo fmt --all

# Unit tests (and doc examples) of the library and binary: nothing to start.
unit: deps-build
	cargo test --lib --bins
	cargo test --doc

# The integration tests need PostgreSQL: pg_virtualenv (postgresql-common)
# starts a throwaway cluster on a free port, exports PG* and drops it after;
# scripts/with-postgres.sh first drops one an interrupted run left behind.
test: deps-test lint
	scripts/with-postgres.sh cargo test --all-features --no-fail-fast

# The load bench: the gateway next to nginx and HAProxy (see benches/load/run.sh).
# The load bench, then the instruction bench; the report (target/bench/
# report.md, report.json, report.html) has both.
bench: deps-build
	@command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v wrk >/dev/null \
	  && command -v valgrind >/dev/null && command -v redis-server >/dev/null && command -v h2load >/dev/null \
	  && command -v strace >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get install -y -qq nginx haproxy wrk valgrind redis-server nghttp2-client strace >/dev/null; }
	@command -v oha >/dev/null || cargo install oha --locked
	benches/load/run.sh
	benches/instructions/run.sh
	benches/tls/run.sh
	benches/idle/run.sh
	benches/load/report.sh target/bench/runs.jsonl target/bench >/dev/null

# Instructions per request under callgrind, and the guard on the cached path
# (benches/instructions/run.sh; UPDATE_BASELINE=1 records a new baseline).
bench-instructions: deps-build
	@command -v valgrind >/dev/null && command -v nginx >/dev/null && command -v haproxy >/dev/null \
	  && command -v redis-server >/dev/null && command -v strace >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get install -y -qq valgrind nginx haproxy redis-server strace >/dev/null; }
	benches/instructions/run.sh

# The micro benches, then openssl's own figures for the same signatures on
# this machine (the peer of jwt/verify_rs256, _es256 and _eddsa).
# Memory per idle HTTP/1.1 and HTTP/2 connection, beside nginx.
bench-idle: deps-build
	@command -v nginx >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq nginx >/dev/null; }
	benches/idle/run.sh

bench-micro:
	cargo bench --bench hot_path
	openssl speed -seconds 3 rsa2048 ecdsap256 ed25519 2>/dev/null | grep -E 'verify|rsa 2048|nistp256|Ed25519'

# Fuzzing needs the nightly toolchain and cargo-fuzz (installed here if missing).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := config_parse path_route token_claims header_sanitize
fuzz-build: deps-build
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz build

fuzz: fuzz-build
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  cargo +nightly fuzz run $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

clean:
	cargo clean
