# Sourced by the bench scripts: the one gateway configuration they run.
#   gateway_conf FILE PORT WORKDIR USERS_FILE LOG_DESTINATION ROUTES
#   bench_route PATH SERVICE PORT AUTH_REQUIRED   (prints a [[routes]] entry)
# One worker thread; every load client is 127.0.0.1 (10,000 of them in the
# memory run), so no per-address cap; loopback only.
gateway_conf() {
cat > "$1" <<TOML
[server]
listen = ["127.0.0.1:$2"]
threads = 1
max_connections_per_ip = 0
pid_file = "$3/gw.pid"
upgrade_sock = "$3/gw.sock"
[auth]
secret_env = "GATEWAY_JWT_SECRET"
[users]
source = "file"
users = "$4"
[log]
level = "warn"
destination = "$5"
$6
TOML
}

bench_route() {
    printf '[[routes]]\npath = "%s"\nservice = "%s"\nhost = "127.0.0.1"\nport = %s\nauth_required = %s\n' "$1" "$2" "$3" "$4"
}
