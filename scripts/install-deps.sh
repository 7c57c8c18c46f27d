#!/usr/bin/env bash
# Installs the system packages the build and the tests need, when missing:
# cmake (Pingora's zlib-ng), a C compiler (jemalloc, and aws-lc-rs: the
# crypto library, built from the C sources its crate ships), PostgreSQL server + client + pg_virtualenv,
# Chromium for the browser test of CORS, redis-server for the shared
# rate-limit tests, and openssl for the signing-key tests' key pairs.
# Usage: scripts/install-deps.sh [build|test]
set -euo pipefail
want=${1:-test}
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
if [ "$want" = test ]; then
    command -v pg_virtualenv >/dev/null 2>&1 || missing+=(postgresql-common)
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    # The CORS test runs pages in a real browser.
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    # The signing-key and TLS tests make their keys with the openssl CLI;
    # the TLS tests handshake with curl (HTTP/2 and TLS 1.2/1.3 flags).
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    # The shared rate-limit tests start their own Redis on a free port.
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    # The IPv6 test gives the loopback of its own network namespace
    # addresses with ip(8).
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    # The DNS test answers the gateway's lookups with its own dnsmasq.
    command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)
    # The packaging tests run systemd-analyze verify and systemd-sysusers.
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) and retry" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
