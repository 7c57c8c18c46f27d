#!/usr/bin/env bash
# The TLS bench (part of `make bench`): the gateway's TLS listener beside
# nginx terminating TLS with the same certificate (ECDSA P-256), both
# proxying to the same nginx upstream over HTTP/1.1, loopback only.
#
#   handshakes    wrk, `Connection: close`: every request is a new TLS 1.3
#                 connection (full handshake: resumption off on both sides,
#                 else wrk resumes); req/s is handshakes/s
#   h2            h2load, keep-alive HTTP/2: $CONNS connections, 10 streams
#                 each; public route and cached user (gateway only)
#   instructions  each proxy under callgrind, 1,000 h2 requests after a
#                 warm-up of 1,000 (4 connections, one stream each):
#                 instructions per request, as benches/instructions/run.sh
#
# The proxy is pinned to CPU 0, the load and the upstream to CPU 1.
# Rounds are interleaved; the report gives medians.
#
# Usage: benches/tls/run.sh   (ROUNDS, SECONDS_PER_RUN, CONNS, OUT; KEEP_DUMPS=1
# keeps the callgrind files in OUT)
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/proxies.sh
rounds=${ROUNDS:-3}
secs=${SECONDS_PER_RUN:-5}
conns=${CONNS:-16}
out=${OUT:-target/bench}
GWTLS=18110 NGXTLS=18111
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.3; rm -rf "$work"' EXIT
require_tools nginx wrk h2load taskset valgrind callgrind_control openssl
cargo build --release --bin robeing-gateway --example bench_fixtures >/dev/null
target/release/examples/bench_fixtures "$work" 10 >/dev/null

make_tls_cert "$work"
write_proxy_configs "$work"
cat > "$work/nginx-tls.conf" <<NGINX
worker_processes 1; daemon off; pid $work/ngx-tls.pid; error_log $work/ngx-tls.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NGXTLS ssl http2 backlog=4096;
    ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
# Full handshakes on both sides: nginx has tickets and its session cache
# off, the gateway session_resumption = false (wrk resumes when offered).
tls_block=$(gateway_tls_block "$GWTLS" "$work" 'session_resumption = false')
gateway_conf "$work/gateway-tls.toml" "$GW" "$work" "$work/users.toml" "$work/access.log" \
    "$(bench_route "/public/*" public "$UP" false; bench_route "/api/*" api "$UP" true; echo "$tls_block")"

taskset -c 1 nginx -c "$work/upstream.conf" &
sleep 0.5
port_of_tls() { case $1 in gateway) echo $GWTLS ;; nginx) echo $NGXTLS ;; esac; }
# start_proxy NAME [callgrind] -> pid on stdout
start_proxy() {
    local vg=()
    [ "${2:-}" = callgrind ] && vg=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1.%p")
    case $1 in
        gateway) RUST_LOG=warn taskset -c 0 "${vg[@]}" target/release/robeing-gateway -c "$work/gateway-tls.toml" \
            >"$work/$1.out" 2>&1 & ;;
        nginx) taskset -c 0 "${vg[@]}" nginx -g 'master_process off;' -c "$work/nginx-tls.conf" \
            >"$work/$1.out" 2>&1 & ;;
    esac
    echo $!
}
stop_proxy() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }
token=$(cat "$work/alice.txt" | head -n 1)
h2_url() { echo "https://127.0.0.1:$(port_of_tls "$1")$2"; }

: > "$out/tls.jsonl"
for round in $(seq "$rounds"); do
    for proxy in gateway nginx; do
        pid=$(start_proxy "$proxy"); wait_port "$(port_of_tls "$proxy")"; sleep 0.3
        hs=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -H 'Connection: close' "$(h2_url "$proxy" /public/x)" \
            | awk '/Requests\/sec/ {print $2}')
        echo "{\"round\":$round,\"proxy\":\"$proxy\",\"test\":\"handshakes\",\"per_second\":$hs}" >> "$out/tls.jsonl"
        for scenario in public cached; do
            [ "$scenario" = cached ] && [ "$proxy" != gateway ] && continue
            path=/public/x; auth=()
            [ "$scenario" = cached ] && { path=/api/x; auth=(-H "authorization: Bearer $token"); }
            rps=$(taskset -c 1 h2load -D "$secs" -c "$conns" -m 10 "${auth[@]}" "$(h2_url "$proxy" "$path")" \
                | awk '/^finished in/ {gsub(",", "", $4); print $4}')
            echo "{\"round\":$round,\"proxy\":\"$proxy\",\"test\":\"h2_$scenario\",\"per_second\":$rps}" >> "$out/tls.jsonl"
        done
        stop_proxy "$pid"
        echo "  round $round $proxy done" >&2
    done
done

# Instructions per h2 request, as benches/instructions/run.sh counts them.
for proxy in gateway nginx; do
    for scenario in public cached; do
        [ "$scenario" = cached ] && [ "$proxy" != gateway ] && continue
        path=/public/x; auth=()
        [ "$scenario" = cached ] && { path=/api/x; auth=(-H "authorization: Bearer $token"); }
        pid=$(start_proxy "$proxy" callgrind); wait_port "$(port_of_tls "$proxy")"
        h2load -n 1000 -c 4 -m 1 "${auth[@]}" "$(h2_url "$proxy" "$path")" >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        h2load -n 1000 -c 4 -m 1 "${auth[@]}" "$(h2_url "$proxy" "$path")" > "$work/h2load.out"
        callgrind_control -d "$pid" >/dev/null 2>&1
        kill -9 "$pid"; wait "$pid" 2>/dev/null || true
        ok=$(awk '/^status codes:/ {print $3}' "$work/h2load.out")
        dump=$(ls -t "$work"/cg."$proxy".* | head -n 1)
        ir=$(awk '/^summary:/ {print $2}' "$dump")
        [ -n "${KEEP_DUMPS:-}" ] && cp "$dump" "$out/callgrind.h2_$scenario.$proxy.out"
        rm -f "$work"/cg."$proxy".*
        echo "{\"proxy\":\"$proxy\",\"test\":\"instructions_$scenario\",\"per_request\":$((ir / 1000)),\"ok\":$ok}" >> "$out/tls.jsonl"
    done
done

# The report: medians over rounds.
python3 - "$out/tls.jsonl" > "$out/tls.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def median(proxy, test, key):
    v = [r[key] for r in rows if r["proxy"] == proxy and r["test"] == test]
    return statistics.median(v) if v else None
print("TLS and HTTP/2 (same certificate, ECDSA P-256; medians)\n")
print("| test | gateway | nginx | gateway / nginx |")
print("|---|---:|---:|---:|")
for test, key, unit in [("handshakes", "per_second", "handshakes/s"),
                        ("h2_public", "per_second", "h2 req/s, public"),
                        ("h2_cached", "per_second", "h2 req/s, cached user"),
                        ("instructions_public", "per_request", "instructions/h2 request, public"),
                        ("instructions_cached", "per_request", "instructions/h2 request, cached user")]:
    g, n = median("gateway", test, key), median("nginx", test, key)
    ratio = f"{g / n:.2f}x" if g and n else "-"
    fmt = lambda x: "-" if x is None else f"{x:,.0f}"
    print(f"| {unit} | {fmt(g)} | {fmt(n)} | {ratio} |")
PY
cat "$out/tls.md"
