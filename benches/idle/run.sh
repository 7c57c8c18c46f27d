#!/usr/bin/env bash
# The idle-connection bench (part of `make bench`; alone: `make bench-idle`):
# memory per idle client connection, the gateway beside nginx, both
# proxying to the same nginx upstream, loopback only.
#
#   http1  N HTTP/1.1 keep-alive connections in clear text, one request
#          each, then idle
#   h2     N HTTP/2 connections over TLS 1.3 (ALPN h2, ECDSA P-256), one
#          stream each, then idle
#
# Per proxy and kind: a fresh proxy (one worker), its RSS (every process
# of it) before the connections and once they are all idle; the figure is
# the difference over N, allocator included. examples/idle_conns.rs holds
# the connections.
#
# Writes $OUT/idle.jsonl and $OUT/idle.md (OUT defaults to target/bench).
# Usage: benches/idle/run.sh   (N, OUT; GATEWAY_BIN: another build of the
# gateway, for a before/after)
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/proxies.sh
n=${N:-5000}
out=${OUT:-target/bench}
GWTLS=18110 NGXTLS=18111
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.5; rm -rf "$work"' EXIT
require_tools nginx openssl
cargo build --release --bin robeing-gateway --example bench_fixtures --example idle_conns >/dev/null
target/release/examples/bench_fixtures "$work" 10 >/dev/null
make_tls_cert "$work"
write_proxy_configs "$work"
cat > "$work/nginx-idle.conf" <<NGINX
worker_processes 1; daemon off; pid $work/ngx-idle.pid; error_log $work/ngx-idle.err;
worker_rlimit_nofile 16384;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NGX backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:$NGXTLS ssl http2 backlog=4096;
    ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
tls_block=$(gateway_tls_block "$GWTLS" "$work")
gateway_conf "$work/gateway-idle.toml" "$GW" "$work" "$work/users.toml" off \
    "$(bench_route "/public/*" public "$UP" false; echo "$tls_block")"
# Idle connections stay for the whole measurement (the default bound is 60 s).
sed -i 's/^threads = 1$/threads = 1\nclient_idle_timeout_seconds = 600/' "$work/gateway-idle.toml"

ulimit -n "$(ulimit -Hn)"
nginx -c "$work/upstream.conf" >"$work/upstream.out" 2>&1 &
sleep 0.5
rss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
start() { # proxy -> pid
    case $1 in
        gateway) RUST_LOG=warn "${GATEWAY_BIN:-target/release/robeing-gateway}" -c "$work/gateway-idle.toml" >"$work/gw.out" 2>&1 & ;;
        nginx) nginx -g 'master_process off;' -c "$work/nginx-idle.conf" >"$work/ngx.out" 2>&1 & ;;
    esac
    echo $!
}
port_for() { case $1:$2 in gateway:http1) echo $GW ;; gateway:h2) echo $GWTLS ;; nginx:http1) echo $NGX ;; nginx:h2) echo $NGXTLS ;; esac; }
: > "$out/idle.jsonl"
for kind in http1 h2; do
    for proxy in gateway nginx; do
        pid=$(start $proxy)
        wait_port "$(port_for $proxy $kind)"
        sleep 0.5
        before=$(rss_kb "$pid")
        extra=(); [ "$kind" = h2 ] && extra=(h2 "$work/tls.crt")
        coproc IDLE { target/release/examples/idle_conns "127.0.0.1:$(port_for $proxy $kind)" "$n" /public/x "${extra[@]}"; }
        read -r ready count <&"${IDLE[0]}"
        [ "$ready" = ready ] && [ "$count" = "$n" ] || { echo "idle_conns: $ready $count" >&2; exit 1; }
        sleep "${SETTLE:-12}"
        after=$(rss_kb "$pid")
        echo "{\"kind\":\"$kind\",\"proxy\":\"$proxy\",\"connections\":$n,\"rss_before_kb\":$before,\"rss_after_kb\":$after}" >> "$out/idle.jsonl"
        echo "  $kind $proxy: $before kB -> $after kB" >&2
        exec {IDLE[1]}>&-
        wait "$IDLE_PID" 2>/dev/null || true
        kill "$pid"; wait "$pid" 2>/dev/null || true
        sleep 1
    done
done
python3 - "$out/idle.jsonl" > "$out/idle.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
per = {(r["kind"], r["proxy"]): (r["rss_after_kb"] - r["rss_before_kb"]) / r["connections"] for r in rows}
n = rows[0]["connections"]
print(f"Memory per idle client connection ({n:,} connections, RSS difference, allocator included)\n")
print("| connection | gateway | nginx | gateway / nginx |")
print("|---|---:|---:|---:|")
for kind, label in (("http1", "HTTP/1.1 keep-alive, clear text"), ("h2", "HTTP/2 over TLS 1.3")):
    g, x = per[(kind, "gateway")], per[(kind, "nginx")]
    print(f"| {label} | {g:.1f} KiB | {x:.1f} KiB | {g / x:.1f}x |" if x > 0 else f"| {label} | {g:.1f} KiB | {x:.1f} KiB | - |")
PY
cat "$out/idle.md"
