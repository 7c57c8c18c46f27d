#!/usr/bin/env python3
"""Where the gateway's instructions go, from the instruction bench's
callgrind files (KEEP_DUMPS=1, cached scenario): the gateway's ProxyHttp
phases, inclusive (what each calls is done on its behalf: header maps,
hashing, allocation), the connection layer as the rest of the gateway's
share, and bare Pingora's total beside it.

Usage: breakdown.py GATEWAY_DUMP BARE_PINGORA_DUMP REQUESTS
"""
import re
import subprocess
import sys

PHASE = re.compile(r"<robeing_gateway::proxy::GatewayProxy as pingora_proxy::proxy_trait::ProxyHttp>::(\w+)")
# Inside the phases, for the detail rows.
DETAIL = {
    "robeing_gateway::proxy::admission::admit": "request_filter: admission (route, path, token, identity, limits)",
    "robeing_gateway::wire::request_id": "request_filter: the request id",
    "robeing_gateway::proxy::context::RequestCtx::start_trace": "request_filter: trace context",
    "robeing_gateway::proxy::forwarding::set_upstream_headers": "upstream_request_filter: identity and forwarding headers",
    "robeing_gateway::proxy::forwarding::set_trace_headers": "upstream_request_filter: `traceparent`",
    "robeing_gateway::proxy::header_room::downstream_response": "response_filter: the response's header map made over",
    "robeing_gateway::observe::access_log::AccessLog::record": "logging: the access line",
}


def inclusive(path):
    """Inclusive cost of each function."""
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", "--inclusive=yes", path],
        capture_output=True, text=True, check=True,
    ).stdout
    costs, total = {}, 0
    for line in out.split("\n"):
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        cost, name = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in name:
            total = cost
            continue
        # A function appears once per source file its code came from
        # (inlining); the largest entry is the function's whole.
        name = re.sub(r" \[[^\]]*\]$", "", name)
        name = re.sub(r"^\S*?\.(rs|c|h|S):", "", name)
        name = name.replace("::{{closure}}", "")
        costs[name] = max(costs.get(name, 0), cost)
    return total, costs


def main():
    gateway_dump, bare_dump, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
    total, costs = inclusive(gateway_dump)
    bare_total, _ = inclusive(bare_dump)
    per = lambda c: c / requests
    phases = {}
    for name, cost in costs.items():
        m = PHASE.fullmatch(name)
        if m:
            phases[m.group(1)] = per(cost)
    share = per(total) - per(bare_total)
    print("| where | whose | instructions/request |")
    print("|---|---|---:|")
    for phase, cost in sorted(phases.items(), key=lambda kv: -kv[1]):
        if cost >= 50:
            print(f"| phase `{phase}` | gateway | {cost:,.0f} |")
    for name, label in DETAIL.items():
        if name in costs:
            print(f"| of which, {label} | gateway | {per(costs[name]):,.0f} |")
    rest = share - sum(phases.values())
    print(f"| the rest of the gateway's share: listeners, keep-alive loop, connection guard, and the allocator's and Pingora's work they change | gateway | {rest:,.0f} |")
    print(f"| the gateway's share (total less bare Pingora) | gateway | {share:,.0f} |")
    print(f"| bare Pingora (the same requests, the same features) | Pingora | {per(bare_total):,.0f} |")
    print(f"| the gateway's cached path | | {per(total):,.0f} |")


if __name__ == "__main__":
    main()
