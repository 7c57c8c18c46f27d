#!/usr/bin/env bash
# Markdown table of an instruction-bench run: instructions per request per
# scenario and proxy, and the gateway's ratio to bare Pingora and to
# HAProxy doing the same JWT work.   Usage: report.sh instructions.jsonl
set -euo pipefail
jsonl=$1
value() { { grep "\"scenario\":\"$1\",\"proxy\":\"$2\"" "$jsonl" || true; } | sed -E 's/.*"per_request":([0-9]+).*/\1/' | head -n 1; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }' || echo "-"; }
fmt() { [ -n "$1" ] && printf "%'d" "$1" || echo "-"; }
echo "Instructions per request (callgrind, whole process, user space)"
echo
echo "| scenario | gateway | gateway, log off | gateway, 3 peers + checks | bare Pingora | nginx | HAProxy | HAProxy-JWT | gateway / bare Pingora | gateway / HAProxy-JWT |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for scenario in public cached rotating invalid; do
    gw=$(value $scenario gateway); [ -z "$gw" ] && continue
    row="| $scenario | $(fmt "$gw") | $(fmt "$(value $scenario gateway-nolog)") | $(fmt "$(value $scenario gateway-pool)") | $(fmt "$(value $scenario bare-pingora)")"
    row="$row | $(fmt "$(value $scenario nginx-proxy)") | $(fmt "$(value $scenario haproxy)") | $(fmt "$(value $scenario haproxy-jwt)")"
    row="$row | $(ratio "$gw" "$(value $scenario bare-pingora)") | $(ratio "$gw" "$(value $scenario haproxy-jwt)") |"
    echo "$row"
done
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f %%", (a - b) * 100 / b }'; }
# The traced gateways' peer is the gateway counted with the same idle
# seconds (gateway-settled; see run.sh's settle_for).
traced=$(value cached gateway-traced); traced1=$(value cached gateway-traced-1pct); gw=$(value cached gateway-settled)
if [ -n "$traced" ] && [ -n "$traced1" ] && [ -n "$gw" ]; then
    echo
    echo "Tracing, cached path with [tracing] (spans exported over OTLP): sample_ratio 1.0 $(fmt "$traced") ($(pct "$traced" "$gw")), 0.01 $(fmt "$traced1") ($(pct "$traced1" "$gw")) against the gateway's $(fmt "$gw") without it, each counted with the same idle seconds after its requests (one span per request, all exported)."
fi
claims=$(value cached gateway-claims); plain=$(value cached gateway)
if [ -n "$claims" ] && [ -n "$plain" ]; then
    echo
    echo "Identity policy, cached path with two claim headers sent upstream and require_claims on the route: $(fmt "$claims") ($(pct "$claims" "$plain")) against the gateway's $(fmt "$plain") without them."
fi
limit=$(value cached gateway-limit); redis=$(value cached gateway-redis)
if [ -n "$limit" ] && [ -n "$redis" ]; then
    echo
    echo "Limiter, cached path under a limit it never reaches: local $(fmt "$limit"), Redis $(fmt "$redis") instructions/request ($(ratio "$redis" "$limit") of local)."
fi
calls() { { grep "\"scenario\":\"$1\",\"proxy\":\"$2\"" "$jsonl" || true; } | sed -nE 's/.*"syscalls_per_request":([0-9.]+).*/\1/p' | head -n 1; }
orblank() { [ -n "$1" ] && echo "$1" || echo "-"; }
if [ -n "$(calls cached gateway)$(calls public gateway)" ]; then
    echo
    echo "System calls per request (strace -f, every thread, the same requests without callgrind)"
    echo
    echo "| scenario | gateway | gateway, log off | bare Pingora | nginx | HAProxy | HAProxy-JWT |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for scenario in public cached rotating invalid; do
        [ -z "$(calls $scenario gateway)" ] && continue
        row="| $scenario | $(orblank "$(calls $scenario gateway)") | $(orblank "$(calls $scenario gateway-nolog)") | $(orblank "$(calls $scenario bare-pingora)")"
        echo "$row | $(orblank "$(calls $scenario nginx-proxy)") | $(orblank "$(calls $scenario haproxy)") | $(orblank "$(calls $scenario haproxy-jwt)") |"
    done
fi
