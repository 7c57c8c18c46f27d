# Sourced by the bench scripts: the proxies they compare, on fixed loopback
# ports, each configured as docs/benchmarks.md describes.
#   upstream      nginx, 1 worker, `return 200` with a small JSON body
#   gateway       robeing-gateway, 1 worker thread (benches/gateway_conf.sh)
#   nginx-proxy   nginx as a plain reverse proxy, upstream keepalive
#   haproxy       HAProxy as a plain proxy, connection reuse
#   haproxy-jwt   HAProxy doing the gateway's cached path: jwt_verify
#                 (HS256), exp check, username -> UUID from a map,
#                 identity headers replaced
# write_proxy_configs WORK writes WORK/{upstream.conf,nginx-proxy.conf,
# haproxy.cfg,gateway.toml}; the fixtures (users.map, users.toml) come from
# examples/bench_fixtures, the secret from GATEWAY_JWT_SECRET.
. benches/gateway_conf.sh
UP=18080 GW=18100 NGX=18081 HAP=18082 HAPJ=18083 BARE=18084 UP2=18085 UP3=18086 GWPOOL=18101 GWLIM=18102 GWRED=18103 GWREDADMIN=18104 GWTRACE=18105 GWTRACE1=18106 GWCLAIMS=18107 REDIS=18090

# The bench's Redis for the shared limiter (REDIS_URL points at it).
export REDIS_URL="redis://127.0.0.1:$REDIS/"
start_redis() { redis-server --bind 127.0.0.1 --port "$REDIS" --save "" --appendonly no >/dev/null 2>&1 & }

# make_tls_cert WORK: WORK/tls.crt and WORK/tls.key, a self-signed ECDSA
# P-256 certificate for localhost and 127.0.0.1 (the TLS and idle benches).
make_tls_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$1/tls.key" -out "$1/tls.crt" 2>/dev/null
}

# gateway_tls_block PORT WORK [KEYS]: the gateway's [[server.tls]] listener
# on 127.0.0.1:PORT with WORK's certificate, and KEYS (lines of the table).
gateway_tls_block() {
    printf '[[server.tls]]\nlisten = "127.0.0.1:%s"\ncert_file = "%s"\nkey_file = "%s"\n%s\n' \
        "$1" "$2/tls.crt" "$2/tls.key" "${3:-}"
}

# require_tools TOOL... : fails naming the Debian packages when one is missing.
require_tools() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "missing $tool: apt-get install nginx haproxy wrk valgrind util-linux redis-server" >&2
            exit 1
        }
    done
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (30 s at most).
wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2; return 1
}

# The signing secret every bench token is made with (never a real one).
export GATEWAY_JWT_SECRET=bench-secret-bench-secret-bench-secret-0123

write_proxy_configs() {
local work=$1
cat > "$work/upstream.conf" <<NGINX
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP backlog=4096; listen 127.0.0.1:$UP2 backlog=4096; listen 127.0.0.1:$UP3 backlog=4096;
    location / { default_type application/json; return 200 '{"ok":true}'; }
    # The OTLP sink of the traced gateways: every export answered 200.
    location = /v1/traces { return 200; } } }
NGINX
cat > "$work/nginx-proxy.conf" <<NGINX
worker_processes 1; daemon off; pid $work/ngx.pid; error_log $work/ngx.err;
worker_rlimit_nofile 19000;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NGX backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
cat > "$work/haproxy.cfg" <<HAP
global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend plain
    bind 127.0.0.1:$HAP
    default_backend up
frontend jwt
    bind 127.0.0.1:$HAPJ
    acl public path_beg /public
    http-request set-var(txn.bearer) http_auth_bearer unless public
    http-request deny deny_status 401 if !public !{ var(txn.bearer) -m found }
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg') unless public
    http-request deny deny_status 401 if !public !{ var(txn.alg) -m str HS256 }
    http-request deny deny_status 401 if !public !{ var(txn.bearer),jwt_verify(txn.alg,"$GATEWAY_JWT_SECRET") -m int 1 }
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int') unless public
    http-request set-var(txn.now) date() unless public
    http-request deny deny_status 401 if !public { var(txn.exp),sub(txn.now) -m int lt 0 }
    http-request set-var(txn.user) var(txn.bearer),jwt_payload_query('\$.username') unless public
    http-request set-var(txn.uid) var(txn.user),map($work/users.map) unless public
    http-request deny deny_status 404 if !public !{ var(txn.uid) -m found }
    http-request del-header x-user-id
    http-request del-header x-username
    http-request set-header X-User-Id %[var(txn.uid)] unless public
    http-request set-header X-Username %[var(txn.user)] unless public
    default_backend up
backend up
    server up 127.0.0.1:$UP maxconn 1000
HAP
gateway_conf "$work/gateway.toml" "$GW" "$work" "$work/users.toml" off \
    "$(bench_route "/public/*" public "$UP" false; bench_route "/api/*" api "$UP" true)"
# The limiter scenario: a limit no request reaches, counted here or in Redis
# (the Redis one has an admin listener: the bench reads how many decisions
# fell back to the local limiter, which would make its figures the local
# limiter's). A saturated gateway misses the 5 ms default budget now and
# then (the answer waits for the busy event loop), so the bench gives Redis
# 100 ms: every decision measured is Redis's.
local limit='[rate_limit]
requests_per_minute = 1000000000'
mkdir -p "$work/limit" "$work/redis"
gateway_conf "$work/gateway-limit.toml" "$GWLIM" "$work/limit" "$work/users.toml" off \
    "$(echo "$limit"; bench_route "/api/*" api "$UP" true)"
gateway_conf "$work/gateway-redis.toml" "$GWRED" "$work/redis" "$work/users.toml" off \
    "$(printf '%s\nstore = "redis"\nredis_url_env = "REDIS_URL"\nstore_timeout_ms = 100\n[admin]\nlisten = "127.0.0.1:%s"\n' "$limit" "$GWREDADMIN"; bench_route "/api/*" api "$UP" true)"

}

port_of() {
    case $1 in
        gateway) echo $GW ;; nginx-proxy) echo $NGX ;; haproxy) echo $HAP ;;
        haproxy-jwt) echo $HAPJ ;; bare-pingora) echo $BARE ;;
        gateway-limit) echo $GWLIM ;; gateway-redis) echo $GWRED ;;
        gateway-traced) echo $GWTRACE ;; gateway-traced-1pct) echo $GWTRACE1 ;;
        gateway-claims) echo $GWCLAIMS ;;
    esac
}
