#!/usr/bin/env bash
# The load bench (`make bench`): robeing-gateway side by side with nginx and
# HAProxy 2.6 on this machine, loopback only.
#
#   upstream      nginx, 1 worker, `return 200` with a small JSON body   CPU 1
#   gateway       release build, 1 worker thread                         CPU 0
#   nginx-proxy   nginx as a plain reverse proxy, upstream keepalive     CPU 0
#   haproxy       HAProxy as a plain proxy, connection reuse             CPU 0
#   haproxy-jwt   HAProxy doing the gateway's cached path: jwt_verify
#                 (HS256), exp check, username -> UUID from a map,
#                 identity headers replaced                              CPU 0
#   load          wrk, 1 thread, $CONNS connections                      CPU 1
#
# Scenarios: public route, cached user (one token), 10,000 rotating users,
# invalid tokens (authenticating proxies only), and `limited`: the cached
# user under a limit it never reaches, counted by the gateway's local
# limiter (gateway-limit) or in Redis (gateway-redis, redis-server on CPU 1). Rounds are interleaved; the
# report gives medians of requests/s, p50/p99/p99.9 latency and CPU
# microseconds per request of the proxy's process tree.
#
# Usage: benches/load/run.sh [rounds] [seconds]   (ROUNDS, SECONDS, CONNS, OUT, SCENARIOS)
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/proxies.sh
rounds=${1:-${ROUNDS:-3}}
secs=${2:-${SECONDS_PER_RUN:-5}}
scenarios=${SCENARIOS:-public cached rotating invalid limited}
conns=${CONNS:-32}
out=${OUT:-target/bench}
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.2; rm -rf "$work"' EXIT
require_tools nginx haproxy wrk taskset redis-server curl
command -v oha >/dev/null || { echo "missing oha: cargo install oha --locked (make bench does)" >&2; exit 1; }
cargo build --release --bin robeing-gateway --example bench_fixtures >/dev/null
target/release/examples/bench_fixtures "$work" 10000

write_proxy_configs "$work"
taskset -c 1 nginx -c "$work/upstream.conf" &
taskset -c 0 nginx -c "$work/nginx-proxy.conf" &
taskset -c 0 haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
hap_pid=$!
RUST_LOG=warn taskset -c 0 target/release/robeing-gateway -c "$work/gateway.toml" 2>"$work/gw.err" &
gw_pid=$!
# The limiter scenario: the gateway with a local limit, and with the limit in
# Redis (which shares CPU 1 with the upstream and the load).
taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS" --save "" --appendonly no >/dev/null 2>&1 &
RUST_LOG=warn taskset -c 0 target/release/robeing-gateway -c "$work/gateway-limit.toml" 2>"$work/gw-limit.err" &
gw_limit_pid=$!
RUST_LOG=warn taskset -c 0 target/release/robeing-gateway -c "$work/gateway-redis.toml" 2>"$work/gw-redis.err" &
gw_redis_pid=$!
sleep 1
ngx_master=$(cat "$work/ngx.pid")

# Process tree of each proxy, for CPU accounting.
pids_of() {
    case $1 in
        gateway) echo $gw_pid ;;
        gateway-limit) echo $gw_limit_pid ;;
        gateway-redis) echo $gw_redis_pid ;;
        nginx-proxy) echo "$ngx_master $(pgrep -P "$ngx_master" | tr '\n' ' ')" ;;
        haproxy|haproxy-jwt) echo $hap_pid ;;
    esac
}
cpu_ticks() { local t=0; for p in $(pids_of "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
hz=$(getconf CLK_TCK)

scenario_env() { # scenario proxy -> REQ_PATH / TOKENS_FILE
    case $1 in
        public) echo "REQ_PATH=/public/x" ;;
        cached|limited) echo "REQ_PATH=/api/x TOKENS_FILE=$work/alice.txt" ;;
        rotating) echo "REQ_PATH=/api/x TOKENS_FILE=$work/tokens.txt" ;;
        invalid) echo "REQ_PATH=/api/x TOKENS_FILE=$work/invalid.txt" ;;
    esac
}
proxies_for() {
    case $1 in
        invalid) echo "gateway haproxy-jwt" ;;
        limited) echo "gateway-limit gateway-redis" ;;
        *) echo "gateway nginx-proxy haproxy haproxy-jwt" ;;
    esac
}

# Decisions of the Redis-limited gateway that fell back to its local limiter.
store_fallbacks() {
    curl -fsS "http://127.0.0.1:$GWREDADMIN/metrics" \
        | awk '/^gateway_rate_limit_store_fallbacks_total/ {n += $2} END {print n + 0}'
}

run_one() { # scenario proxy round
    local port; port=$(port_of "$2")
    local before after line fb_before=0 fb_after=0
    env $(scenario_env "$1") taskset -c 1 wrk -t1 -c"$conns" -d2s -s benches/load/wrk.lua "http://127.0.0.1:$port" >/dev/null
    [ "$2" = gateway-redis ] && fb_before=$(store_fallbacks)
    before=$(cpu_ticks "$2")
    line=$(env $(scenario_env "$1") taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s benches/load/wrk.lua \
        "http://127.0.0.1:$port" | grep '^RESULT ' | sed 's/^RESULT //')
    after=$(cpu_ticks "$2")
    [ "$2" = gateway-redis ] && fb_after=$(store_fallbacks)
    echo "{\"scenario\":\"$1\",\"proxy\":\"$2\",\"round\":$3,\"cpu_ticks\":$((after - before)),\"hz\":$hz,\"store_fallbacks\":$((fb_after - fb_before)),\"wrk\":$line}" >> "$out/runs.jsonl"
    echo "  $1 $2 round $3: $line" >&2
}

: > "$out/runs.jsonl"
for round in $(seq "$rounds"); do
    for scenario in $scenarios; do
        proxies=$(proxies_for $scenario)
        # Interleave: rotate the order every round.
        set -- $proxies
        for _ in $(seq $(( (round - 1) % $# ))); do set -- "${@:2}" "$1"; done
        for proxy in "$@"; do run_one "$scenario" "$proxy" "$round"; done
    done
done

# Fixed rate: half of the gateway's own maximum on the cached path (the
# median of its rounds above), the same rate for each peer, latency
# corrected for coordinated omission (oha --latency-correction).
median_max() {
    grep "\"scenario\":\"cached\",\"proxy\":\"$1\"" "$out/runs.jsonl" \
        | sed -E 's/.*"requests":([0-9]+),"duration_us":([0-9]+).*/\1 \2/' \
        | awk '{print $1 / ($2 / 1e6)}' | sort -n | awk '{a[NR]=$1} END {print int(a[int((NR+1)/2)])}'
}
# The fixed-rate and memory runs compare the cached path; a run of other
# scenarios alone (SCENARIOS=limited) leaves them out.
if [[ " $scenarios " == *" cached "* ]]; then
rate=$(( $(median_max gateway) / 2 ))
: > "$out/fixed.jsonl"
for proxy in gateway nginx-proxy haproxy-jwt; do
    taskset -c 1 oha -z "${secs}s" -q "$rate" -c "$conns" --latency-correction --no-tui \
        --output-format json -H "Authorization: Bearer $(cat "$work/alice.txt")" \
        "http://127.0.0.1:$(port_of $proxy)/api/x" > "$work/oha.json"
    echo "{\"proxy\":\"$proxy\",\"rate\":$rate,\"oha\":$(cat "$work/oha.json")}" >> "$out/fixed.jsonl"
    echo "  fixed rate $rate/s $proxy done" >&2
done

# Memory: RSS of the proxy with 10,000 idle keep-alive client connections.
cargo build --release --example idle_conns >/dev/null
rss_kb() { local t=0; for p in $(pids_of "$1"); do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
: > "$out/memory.jsonl"
for proxy in gateway nginx-proxy; do
    before=$(rss_kb $proxy)
    coproc IDLE { taskset -c 1 target/release/examples/idle_conns "127.0.0.1:$(port_of $proxy)" 10000 /public/x; }
    read -r ready _ <&"${IDLE[0]}"
    sleep 1
    after=$(rss_kb $proxy)
    echo "{\"proxy\":\"$proxy\",\"connections\":10000,\"rss_idle_kb\":$before,\"rss_with_connections_kb\":$after}" >> "$out/memory.jsonl"
    echo "  memory $proxy: $before kB -> $after kB ($ready)" >&2
    exec {IDLE[1]}>&-
    wait $IDLE_PID 2>/dev/null || true
    sleep 1
done
fi

benches/load/report.sh "$out/runs.jsonl" "$out"
