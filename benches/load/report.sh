#!/usr/bin/env bash
# Summarizes runs.jsonl into report.md and report.json (see examples/bench_report.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --example bench_report >/dev/null
target/release/examples/bench_report "$1" "$2"
