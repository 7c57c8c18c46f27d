#!/usr/bin/env bash
# What observability costs on the cached-auth path: the gateway (release,
# one worker thread, pinned to CPU 0) with the access log written to a file
# vs. switched off (metrics are always on), under wrk (pinned to CPU 1)
# against an nginx upstream (CPU 1). Interleaved rounds; prints req/s and
# the ratio. Loopback only.   Usage: benches/observability_cost.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; secs=${2:-10}
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
export GATEWAY_JWT_SECRET=bench-secret-bench-secret-bench-secret-0123

cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18080; location / { default_type application/json; return 200 '{"ok":true}'; } } }
NGINX
taskset -c 1 nginx -c "$work/nginx.conf" &

. benches/gateway_conf.sh
conf() { # $1 = access-log destination, $2 = on|off
    gateway_conf "$work/gw-$2.toml" 18100 "$work" conf/users.toml "$1" \
        "$(bench_route "/api/robeing/*" bench 18080 true)"
}
conf "$work/access.log" on; conf off off
token=$(target/release/robeing-gateway token --username alice -c "$work/gw-on.toml")

run() { # $1 = on|off -> req/s
  RUST_LOG=warn taskset -c 0 target/release/robeing-gateway -c "$work/gw-$1.toml" 2>>"$work/gw.err" &
  local pid=$!; sleep 0.5
  taskset -c 1 wrk -t1 -c32 -d2s -H "Authorization: Bearer $token" http://127.0.0.1:18100/api/robeing/x >/dev/null
  local rps; rps=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" -H "Authorization: Bearer $token" \
      http://127.0.0.1:18100/api/robeing/x | awk '/Requests\/sec/ {print $2}')
  kill -INT $pid; wait $pid 2>/dev/null || true
  echo "$rps"
}
on=(); off=()
for r in $(seq "$rounds"); do on+=("$(run on)"); off+=("$(run off)"); done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_on=$(median "${on[@]}"); m_off=$(median "${off[@]}")
echo "access log on : ${on[*]} req/s (median $m_on)"
echo "access log off: ${off[*]} req/s (median $m_off)"
awk -v a="$m_on" -v b="$m_off" 'BEGIN { printf "on/off throughput ratio: %.3f (cost %.1f%%)\n", a/b, (1-a/b)*100 }'
echo "lines written: $(wc -l < "$work/access.log")"
