#!/usr/bin/env bash
# The instruction bench (`make bench-instructions`): user-space instructions
# per request of each proxy's whole process, counted by callgrind. Unlike
# CPU time they do not swing with the load of a shared machine: the same
# build gives the same count within a fraction of a percent.
#
# Per proxy and scenario: the proxy starts under callgrind, WARMUP requests
# warm its connections, pools and caches, the counters are zeroed, N
# requests are sent over CONNS keep-alive connections (one at a time on
# each), and the counters are dumped: instructions/request = Ir / N, the
# same as Ir(N2) - Ir(N1) over N2 - N1 requests of one run.
#
#   proxies   gateway (access log to a file, metrics on), gateway-nolog,
#             gateway-pool (as gateway, /api/* over three peers with TCP
#             health checks every second), gateway-limit and gateway-redis
#             (cached path only, under a limit it never reaches: counted
#             locally, or in Redis),
#             gateway-traced and gateway-traced-1pct (as gateway, cached path
#             only, with [tracing] at sample_ratio 1.0 and 0.01, spans
#             exported over OTLP to the upstream nginx, which answers 200),
#             gateway-settled (as gateway, cached path only, with the same
#             idle seconds in its count as the traced ones: their peer),
#             gateway-claims (as gateway, cached path only, with two
#             [[auth.claim_headers]] and require_claims on /api/*, the
#             token carrying those claims),
#             bare-pingora (examples/bare_pingora.rs: Pingora's defaults,
#             one thread, no work stealing), nginx-proxy, haproxy,
#             haproxy-jwt (benches/proxies.sh)
#   scenarios public route; cached user (one token); rotating (1,000 users,
#             each seen in the warm-up); invalid tokens (authenticating
#             proxies only)
#
# System calls per request, beside them: the same requests once more with
# the proxy under `strace -f` (no callgrind), counting the calls of every
# thread between the warm-up's end and the run's end (N2 - N1 again, so
# start-up and warm-up are left out). Kernel crossings are what callgrind
# does not count.
#
# Writes $OUT/instructions.jsonl and $OUT/instructions.md (OUT defaults to
# target/bench). Then the guard: the gateway's cached path against
# benches/instructions/baseline.json; more than 3 % above it fails the run.
# UPDATE_BASELINE=1 records the new figure instead; KEEP_DUMPS=1 keeps each
# measurement's callgrind dump in $OUT (for callgrind_annotate).
#
# Usage: benches/instructions/run.sh   (N, WARMUP, CONNS, OUT, SCENARIOS, PROXIES)
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/proxies.sh
n=${N:-1000}
warmup=${WARMUP:-1000}
conns=${CONNS:-4}
out=${OUT:-target/bench}
scenarios=${SCENARIOS:-public cached rotating invalid}
all_proxies="gateway gateway-nolog gateway-pool gateway-limit gateway-redis gateway-claims gateway-settled gateway-traced gateway-traced-1pct bare-pingora nginx-proxy haproxy haproxy-jwt"
proxies=${PROXIES:-$all_proxies}
baseline=benches/instructions/baseline.json
mkdir -p "$out"
work=$(mktemp -d)
# TERM, not KILL: nginx's master then stops its worker too, and no worker
# is left holding this script's output open.
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.5; rm -rf "$work"' EXIT
require_tools valgrind callgrind_control nginx haproxy redis-server strace
cargo build --release --bin robeing-gateway --example bench_fixtures --example bench_client \
    --example bare_pingora >/dev/null
target/release/examples/bench_fixtures "$work" 10000 >/dev/null
head -n 1000 "$work/tokens.txt" > "$work/tokens-1k.txt"
write_proxy_configs "$work"
gateway_conf "$work/gateway-log.toml" "$GW" "$work" "$work/users.toml" "$work/access.log" \
    "$(bench_route "/public/*" public "$UP" false; bench_route "/api/*" api "$UP" true)"
for traced in "gateway-traced $GWTRACE 1.0" "gateway-traced-1pct $GWTRACE1 0.01"; do
    read -r name port ratio <<< "$traced"
    mkdir -p "$work/$name"
    gateway_conf "$work/$name.toml" "$port" "$work/$name" "$work/users.toml" "$work/$name/access.log" \
        "$(printf '[tracing]\notlp_endpoint = "http://127.0.0.1:%s/v1/traces"\nsample_ratio = %s\n' "$UP" "$ratio"
           bench_route "/public/*" public "$UP" false; bench_route "/api/*" api "$UP" true)"
done
mkdir -p "$work/gateway-claims"
gateway_conf "$work/gateway-claims.toml" "$GWCLAIMS" "$work/gateway-claims" "$work/users.toml" "$work/gateway-claims/access.log" \
    "$(printf '[[auth.claim_headers]]\nclaim = "email"\nheader = "X-Email"\n[[auth.claim_headers]]\nclaim = "roles"\nheader = "X-Roles"\n'
       bench_route "/public/*" public "$UP" false; bench_route "/api/*" api "$UP" true; echo 'require_claims = { role = "admin" }')"
pool_route='[[routes]]
path = "/api/*"
service = "api"
upstreams = ["127.0.0.1:'$UP'", "127.0.0.1:'$UP2'", "127.0.0.1:'$UP3'"]
auth_required = true
[routes.health_check]
interval_ms = 1000'
gateway_conf "$work/gateway-pool.toml" "$GWPOOL" "$work" "$work/users.toml" "$work/access-pool.log" \
    "$(bench_route "/public/*" public "$UP" false; echo "$pool_route")"
nginx -c "$work/upstream.conf" >"$work/upstream.out" 2>&1 &
start_redis

# The proxy, under callgrind (or what WRAP names), in the foreground of its
# own process.
run_proxy() {
    local vg=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1.%p")
    if [ -n "${WRAP:-}" ]; then read -r -a vg <<< "$WRAP"; fi
    case $1 in
        gateway|gateway-settled) RUST_LOG=warn exec "${vg[@]}" target/release/robeing-gateway -c "$work/gateway-log.toml" ;;
        gateway-nolog) RUST_LOG=warn exec "${vg[@]}" target/release/robeing-gateway -c "$work/gateway.toml" ;;
        gateway-pool) RUST_LOG=warn exec "${vg[@]}" target/release/robeing-gateway -c "$work/gateway-pool.toml" ;;
        gateway-limit|gateway-redis|gateway-traced|gateway-traced-1pct|gateway-claims) RUST_LOG=warn exec "${vg[@]}" target/release/robeing-gateway -c "$work/$1.toml" ;;
        bare-pingora) exec "${vg[@]}" target/release/examples/bare_pingora "127.0.0.1:$BARE" "127.0.0.1:$UP" ;;
        nginx-proxy) exec "${vg[@]}" nginx -g 'master_process off;' -c "$work/nginx-proxy.conf" ;;
        haproxy|haproxy-jwt) exec "${vg[@]}" haproxy -db -f "$work/haproxy.cfg" ;;
    esac
}
port_for() { case $1 in gateway|gateway-nolog|gateway-settled) echo $GW ;; gateway-pool) echo $GWPOOL ;; *) port_of "$1" ;; esac; }
request_of() { # scenario [proxy] -> PATH [TOKENS_FILE]
    case $1 in
        public) echo "/public/x" ;;
        cached) if [ "${2:-}" = gateway-claims ]; then echo "/api/x $work/alice-claims.txt"; else echo "/api/x $work/alice.txt"; fi ;;
        rotating) echo "/api/x $work/tokens-1k.txt" ;;
        invalid) echo "/api/x $work/invalid.txt" ;;
    esac
}
authenticates() { case $1 in gateway|gateway-nolog|gateway-pool|haproxy-jwt) return 0 ;; *) return 1 ;; esac; }

# Seconds to let a traced gateway's exporter catch up (its batch interval,
# 5 s, and one more) after the warm-up and again after the measured
# requests: the warm-up's spans are then exported before the counters are
# zeroed and every measured request's span within the count, exactly one
# span per request instead of one batch more or less. The idle seconds
# cost something of their own (the runtimes' timers: about 2,000 per
# request over 1,000 requests), so the traced gateways are compared with
# gateway-settled, the gateway counted with the same seconds. SETTLE=S
# applies S to every proxy.
settle_for() { case $1 in gateway-traced*|gateway-settled) echo "${SETTLE:-6}" ;; *) echo "${SETTLE:-0}" ;; esac; }

measure() { # scenario proxy -> one JSON line
    local port; port=$(port_for "$2")
    run_proxy "$2" >"$work/$2.log" 2>&1 &
    local pid=$!
    wait_port "$port"
    local client=(target/release/examples/bench_client "127.0.0.1:$port")
    local settle; settle=$(settle_for "$2")
    # shellcheck disable=SC2046
    "${client[@]}" $(request_of "$1" "$2" | awk '{print $1}') "$warmup" "$conns" $(request_of "$1" "$2" | awk '{print $2}') >/dev/null
    sleep "$settle"
    callgrind_control -z "$pid" >/dev/null 2>&1
    local done_line
    # shellcheck disable=SC2046
    done_line=$("${client[@]}" $(request_of "$1" "$2" | awk '{print $1}') "$n" "$conns" $(request_of "$1" "$2" | awk '{print $2}'))
    sleep "$settle"
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
    local dump; dump=$(ls -t "$work"/cg."$2"."$pid".* | head -n 1)
    local ir; ir=$(awk '/^summary:/ {print $2}' "$dump")
    if [ "${KEEP_DUMPS:-0}" = 1 ]; then cp "$dump" "$out/callgrind.$1.$2.out"; fi
    rm -f "$work"/cg."$2"."$pid"*
    local statuses; statuses=$(echo "$done_line" | cut -d' ' -f3-)
    local calls; calls=$(syscalls "$1" "$2")
    echo "{\"scenario\":\"$1\",\"proxy\":\"$2\",\"requests\":$n,\"instructions\":$ir,\"per_request\":$((ir / n)),\"syscalls_per_request\":$calls,\"statuses\":\"$statuses\"}"
}

# System calls per request of scenario $1 through proxy $2: the calls strace
# logged (every thread; a call interrupted by another thread's is logged
# twice, "unfinished" then "resumed": the second is not counted) during the
# N measured requests, divided by N.
syscalls() {
    local port; port=$(port_for "$2")
    local log="$work/st.$2"
    rm -f "$log"
    WRAP="strace -f -qq -o $log" run_proxy "$2" >"$work/$2.strace.out" 2>&1 &
    local pid=$!
    wait_port "$port"
    local client=(target/release/examples/bench_client "127.0.0.1:$port")
    # shellcheck disable=SC2046
    "${client[@]}" $(request_of "$1" "$2" | awk '{print $1}') "$warmup" "$conns" $(request_of "$1" "$2" | awk '{print $2}') >/dev/null
    sleep 0.3
    local before; before=$(count_calls "$log")
    # shellcheck disable=SC2046
    "${client[@]}" $(request_of "$1" "$2" | awk '{print $1}') "$n" "$conns" $(request_of "$1" "$2" | awk '{print $2}') >/dev/null
    sleep 0.3
    local after; after=$(count_calls "$log")
    # The traced process first: strace killed alone would detach from it
    # and leave it holding the port.
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }'
}
count_calls() { grep -cv -e 'resumed>' -e '^[0-9]* *+++' -e '^[0-9]* *---' "$1" || true; }

: > "$out/instructions.jsonl"
for scenario in $scenarios; do
    for proxy in $proxies; do
        if [ "$scenario" = invalid ] && ! authenticates "$proxy"; then continue; fi
        case $proxy in gateway-limit|gateway-redis|gateway-traced*|gateway-settled|gateway-claims) [ "$scenario" = cached ] || continue ;; esac
        line=$(measure "$scenario" "$proxy")
        echo "$line" >> "$out/instructions.jsonl"
        echo "  $line" >&2
    done
done

benches/instructions/report.sh "$out/instructions.jsonl" > "$out/instructions.md"
cat "$out/instructions.md"

# The guard: the gateway's cached path against the recorded baseline.
now=$(grep '"scenario":"cached","proxy":"gateway"' "$out/instructions.jsonl" \
    | sed -E 's/.*"per_request":([0-9]+).*/\1/' || true)
if [ -z "$now" ]; then
    echo "guard: the gateway's cached path was not measured" >&2; exit 0
fi
if [ "${UPDATE_BASELINE:-0}" = 1 ] || [ ! -f "$baseline" ]; then
    printf '{"scenario":"cached","proxy":"gateway","per_request":%s,"build":"%s","recorded":"%s"}\n' \
        "$now" "$(git describe --always --dirty)" "$(date -u +%Y-%m-%d)" > "$baseline"
    echo "guard: baseline recorded: $now instructions/request"
    exit 0
fi
base=$(sed -E 's/.*"per_request":([0-9]+).*/\1/' "$baseline")
limit=$((base * 103 / 100))
pct=$(awk -v a="$now" -v b="$base" 'BEGIN { printf "%+.1f", (a - b) * 100 / b }')
if [ "$now" -gt "$limit" ]; then
    echo "guard: FAILED: the gateway's cached path is $now instructions/request, $pct % against the baseline $base (limit +3 %)" >&2
    exit 1
fi
echo "guard: ok: the gateway's cached path is $now instructions/request, $pct % against the baseline $base"
