#!/usr/bin/env bash
# `make run`: the example upstream on 127.0.0.1:9000 and the gateway on
# 127.0.0.1:8100 with conf/gateway.toml, plus a ready-to-paste curl.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release

if [ -z "${GATEWAY_JWT_SECRET:-}" ]; then
    mkdir -p .dev
    [ -s .dev/jwt-secret ] || head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > .dev/jwt-secret
    GATEWAY_JWT_SECRET=$(cat .dev/jwt-secret)
    export GATEWAY_JWT_SECRET
fi

"$bin/robeing-gateway" -t -c conf/gateway.toml
"$bin/examples/echo_upstream" --listen 127.0.0.1:9000 > /dev/null &
upstream=$!
trap 'kill $upstream 2>/dev/null' EXIT

token=$("$bin/robeing-gateway" token --username alice -c conf/gateway.toml)
cat <<MSG

robeing-gateway on http://127.0.0.1:8100 (example upstream on 127.0.0.1:9000)
Try:
  curl -s http://127.0.0.1:8100/api/robeing/hello -H 'Authorization: Bearer $token'
  curl -s http://127.0.0.1:8100/api/robeing/hello        # 401 MISSING_TOKEN
Ctrl-C stops both.

MSG
"$bin/robeing-gateway" -c conf/gateway.toml
