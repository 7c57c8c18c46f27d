//! Operator-facing checks: `-t` validation and its messages, the `token`
//! subcommand, the shipped configs, and docker-compose.yml agreeing with
//! conf/ (ports, environment names, file paths).

use std::path::Path;
use std::process::{Command, Output};

use robeing_gateway::config::{self, UserSource};

mod common;

const SECRET: &str = "operations-test-secret-0123456789abcdef";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn gateway(args: &[&str], secret: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"));
    cmd.current_dir(ROOT)
        .args(args)
        .env_remove("GATEWAY_JWT_SECRET");
    if let Some(s) = secret {
        cmd.env("GATEWAY_JWT_SECRET", s);
    }
    cmd.output().expect("run gateway")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("robeing-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn shipped_quick_start_config_validates() {
    let out = gateway(&["-t", "-c", "conf/gateway.toml"], Some(SECRET));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK (2 routes)"));
}

#[test]
fn bad_configs_fail_with_the_key_named() {
    let base = std::fs::read_to_string(Path::new(ROOT).join("conf/gateway.toml")).unwrap();
    let base = base.replace("conf/users.toml", &format!("{ROOT}/conf/users.toml"));
    // Errors about a route name the line of its `[[routes]]` header.
    let first_route_line = base.lines().position(|l| l == "[[routes]]").unwrap() + 1;
    let empty_host = format!("routes[0] (line {first_route_line}).host: must not be empty");
    // A directory every user may write to (not sticky) for the handoff files.
    let open_dir = std::env::temp_dir().join(format!("robeing-open-{}", std::process::id()));
    std::fs::create_dir_all(&open_dir).unwrap();
    std::fs::set_permissions(
        &open_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let cases = [
        (
            base.replace("leeway_seconds = 30", "leeway_seconds = 30\nsecret = \"x\""),
            "unknown field `secret`",
        ),
        (
            base.replace(
                "secret_env = \"GATEWAY_JWT_SECRET\"",
                "secret_file = \"/nonexistent/secret\"",
            ),
            "auth.secret_file: cannot read /nonexistent/secret",
        ),
        (
            base.replace(
                "port = 9000\nauth_required = true",
                "port = 0\nauth_required = true",
            ),
            "routes[1] (line",
        ),
        (
            base.replace("path = \"/api/robeing/*\"", "path = \"/api/robeing\""),
            ".path: '/api/robeing' must",
        ),
        (base.replace("threads = 2", "threads = \"two\""), "threads"),
        (
            base.replace(
                "host = \"127.0.0.1\"\nport = 9000\nauth_required = false",
                "host = \" \"\nport = 9000\nauth_required = false",
            ),
            empty_host.as_str(),
        ),
        (
            base.replace(
                &format!("{ROOT}/conf/users.toml"),
                "/nonexistent/users.toml",
            ),
            "users.users: cannot read",
        ),
        (
            base.replace(
                "port = 9000\nauth_required = true",
                "port = 9000\nauth_required = true\nprotocol = \"http3\"",
            ),
            "protocol: 'http3' is not http1, h2c or h2",
        ),
        (
            base.replace(
                "port = 9000\nauth_required = true",
                "port = 9000\nauth_required = true\ntls_ca_file = \"/etc/ssl/certs/ca-certificates.crt\"",
            ),
            "tls_ca_file: needs protocol = \"h2\"",
        ),
        (
            base.replace(
                "port = 9000\nauth_required = true",
                "port = 9000\nauth_required = true\nprotocol = \"h2\"\ntls_ca_file = \"/nonexistent/ca.pem\"",
            ),
            "tls_ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            base.replace(".dev/run/robeing-gateway.pid", "/tmp/robeing-gateway.pid"),
            "server.pid_file: the directory /tmp is writable by other users (mode 1777)",
        ),
        (
            base.replace(".dev/run/upgrade.sock", &format!("{}/upgrade.sock", open_dir.display())),
            "is writable by other users (mode 777)",
        ),
        (
            base.replace("listen = \"127.0.0.1:9100\"", "listen = \"0.0.0.0:9100\""),
            "admin.allow_from: is required when admin.listen ('0.0.0.0:9100') is not a loopback address",
        ),
        (
            base.replace(
                "listen = \"127.0.0.1:9100\"",
                "listen = \"127.0.0.1:9100\"\nallow_from = [\"127.0.0.1/33\"]",
            ),
            "allow_from = [\"127.0.0.1/33\"]",
        ),
    ];
    each_fails_naming("bad", &cases);
}

/// `-t` refuses each file of `cases`, its message containing the text paired
/// with it, and starting with it fails the same way (one checking path).
fn each_fails_naming(name: &str, cases: &[(String, &str)]) {
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = write_temp(&format!("{name}-{i}.toml"), text);
        let out = gateway(&["-t", "-c", path.to_str().unwrap()], Some(SECRET));
        assert!(!out.status.success(), "case {i} validated: {text}");
        assert!(stderr(&out).contains(want), "case {i}: {}", stderr(&out));
        let out = start_briefly(&path);
        assert!(!out.status.success(), "case {i} started: {text}");
        assert!(
            stderr(&out).contains(want),
            "case {i} at start: {}",
            stderr(&out)
        );
    }
}

/// Starts the gateway on `config`; one that is still running after 10 s
/// (it took the file) is killed, and its output returned all the same.
fn start_briefly(config: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
        .current_dir(ROOT)
        .arg("-c")
        .arg(config)
        .env("GATEWAY_JWT_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start gateway");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("gateway output")
}

// One run of `-t` names every problem, from the file's checks and from
// building it (a missing secret, an unresolvable host, an unwritable log).
#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let base = std::fs::read_to_string(Path::new(ROOT).join("conf/gateway.toml")).unwrap();
    let text = base
        .replace("conf/users.toml", &format!("{ROOT}/conf/users.toml"))
        .replace("threads = 2", "threads = 0")
        .replace(
            "host = \"127.0.0.1\"\nport = 9000\nauth_required = false",
            "host = \"no-such-host.invalid\"\nport = 9000\nauth_required = false",
        )
        .replace(
            "destination = \"stdout\"",
            "destination = \"/nonexistent/dir/access.log\"",
        );
    let path = write_temp("several.toml", &text);
    let out = gateway(&["-t", "-c", path.to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("server.threads: must be at least 1"), "{err}");
    // The file's checks come first; what only building finds is reported
    // once the file itself is sound.
    let fixed = text.replace("threads = 0", "threads = 2");
    std::fs::write(&path, &fixed).unwrap();
    let out = gateway(&["-t", "-c", path.to_str().unwrap()], None);
    let err = stderr(&out);
    for want in [
        "auth.secret_env: environment variable GATEWAY_JWT_SECRET is not set",
        ".host: cannot resolve 'no-such-host.invalid'",
        "log.destination: cannot open /nonexistent/dir/access.log",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}

#[test]
fn secrets_are_required_and_long_enough() {
    let out = gateway(&["-t", "-c", "conf/gateway.toml"], None);
    assert!(!out.status.success());
    assert!(stderr(&out)
        .contains("auth.secret_env: environment variable GATEWAY_JWT_SECRET is not set"));
    let out = gateway(&["-t", "-c", "conf/gateway.toml"], Some("short-secret"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("the secret is 12 bytes; HS256 needs at least 32"));
    assert!(
        !stderr(&out).contains("short-secret"),
        "the secret was printed"
    );
    // Starting (not just -t) refuses too.
    let out = gateway(&["-c", "conf/gateway.toml"], Some("short-secret"));
    assert!(!out.status.success());
}

#[test]
fn token_subcommand_mints_a_verifiable_token() {
    let out = gateway(
        &["token", "--username", "alice", "-c", "conf/gateway.toml"],
        Some(SECRET),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("minted token verifies");
    assert_eq!(data.claims["username"], "alice");
    assert!(data.claims["exp"].as_u64().unwrap() > data.claims["iat"].as_u64().unwrap());
}

fn yaml() -> serde_yaml::Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yml parses")
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| {
            p.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap()
}

#[test]
fn compose_file_agrees_with_conf() {
    let compose = yaml();
    let services = &compose["services"];
    let gw = &services["gateway"];
    let pg = &services["postgres"];
    let echo = &services["echo-upstream"];

    // The gateway's config file is mounted from conf/ and is a postgres config.
    let volume = gw["volumes"][0].as_str().unwrap();
    let (host_path, container_path) = volume.split_once(':').unwrap();
    let container_path = container_path.trim_end_matches(":ro");
    let conf_path = Path::new(ROOT).join(host_path);
    assert!(conf_path.exists(), "{host_path} missing");
    let command: Vec<&str> = gw["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command, ["-c", container_path]);
    let conf =
        config::parse(&std::fs::read_to_string(&conf_path).unwrap()).expect("compose config valid");
    assert_eq!(conf.users.source, UserSource::Postgres);

    // The environment variable names the config reads are set.
    let env = &gw["environment"];
    let db_var = conf.users.database_url_env.as_deref().unwrap();
    let secret_var = conf.auth.secret_env.as_deref().unwrap();
    let database_url = env[db_var].as_str().expect("DATABASE_URL set in compose");
    assert!(
        env[secret_var].as_str().is_some(),
        "{secret_var} set in compose"
    );

    // PostgreSQL: the URL's port and database match the postgres service.
    let pg_command: Vec<&str> = pg["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let pg_port = pg_command
        .iter()
        .find_map(|a| a.strip_prefix("port="))
        .unwrap();
    let url: tokio_postgres::Config = database_url.parse().unwrap();
    assert_eq!(url.get_ports(), [pg_port.parse::<u16>().unwrap()]);
    assert_eq!(url.get_dbname(), pg["environment"]["POSTGRES_DB"].as_str());
    assert_eq!(url.get_user(), pg["environment"]["POSTGRES_USER"].as_str());
    let init = pg["volumes"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    let init_sql = std::fs::read_to_string(Path::new(ROOT).join(init)).unwrap();
    assert!(init_sql.contains("CREATE TABLE IF NOT EXISTS \"user\""));

    // Every route of the compose config points at the example upstream.
    let echo_args: Vec<&str> = echo["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let echo_port = port_of(echo_args[1]);
    for route in &conf.routes {
        assert_eq!(route.get_ref().host.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            route.get_ref().port,
            Some(echo_port),
            "{}",
            route.get_ref().path
        );
    }
    // Loopback only, everywhere.
    for listen in &conf.server.listen {
        assert!(listen.starts_with("127.0.0.1:"), "{listen}");
    }
    assert!(echo_args[1].starts_with("127.0.0.1:"));
    assert!(pg_command.contains(&"listen_addresses=127.0.0.1"));

    // Several instances: Redis holds the shared limits, the init script
    // installs the user-change trigger on the config's channel.
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    let redis_args = strings(&services["redis"]["command"]);
    let after = |flag: &str| {
        let i = redis_args.iter().position(|a| a == flag).unwrap();
        redis_args[i + 1].clone()
    };
    assert_eq!(after("--bind"), "127.0.0.1");
    let limit = conf
        .rate_limit
        .as_ref()
        .expect("[rate_limit] in the compose config");
    assert_eq!(limit.store.to_string(), "redis");
    let redis_url = env[limit.redis_url_env.as_deref().unwrap()]
        .as_str()
        .unwrap();
    assert_eq!(redis_url, format!("redis://127.0.0.1:{}/", after("--port")));
    let notify_sql = pg["volumes"][1]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    let notify_sql = std::fs::read_to_string(Path::new(ROOT).join(notify_sql)).unwrap();
    let channel = conf
        .users
        .notify_channel
        .as_deref()
        .expect("notify_channel");
    assert!(notify_sql.contains(&format!("robeing_user_notify('{channel}')")));

    // The second instance differs from the first only in its listeners,
    // pid file and upgrade socket.
    let gw2 = &services["gateway-2"];
    assert_eq!(gw2["environment"], gw["environment"]);
    assert_eq!(gw2["command"], gw["command"]);
    assert_eq!(gw2["depends_on"], gw["depends_on"]);
    let conf2_path = gw2["volumes"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    let text2 = std::fs::read_to_string(Path::new(ROOT).join(conf2_path)).unwrap();
    let conf2 = config::parse(&text2).expect("second config valid");
    let text1 = std::fs::read_to_string(&conf_path).unwrap();
    let admin = |c: &config::Config| c.admin.as_ref().unwrap().listen.clone();
    assert_ne!(conf2.server.listen, conf.server.listen);
    assert_ne!(admin(&conf2), admin(&conf));
    assert_ne!(conf2.server.pid_file, conf.server.pid_file);
    assert_ne!(conf2.server.upgrade_sock, conf.server.upgrade_sock);
    let normalized = |text: &str, c: &config::Config| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                l.replace(&c.server.listen[0], "LISTEN")
                    .replace(&admin(c), "ADMIN")
                    .replace(&c.server.pid_file, "PID")
                    .replace(&c.server.upgrade_sock, "SOCK")
            })
            .collect()
    };
    assert_eq!(normalized(&text2, &conf2), normalized(&text1, &conf));

    // The Dockerfile builds the targets compose asks for.
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    for service in [gw, gw2, echo] {
        let target = service["build"]["target"].as_str().unwrap();
        assert!(
            dockerfile.contains(&format!(" AS {target}\n")),
            "Dockerfile lacks target {target}"
        );
    }

    // Every service has a health check, and starts after the ones it needs
    // are healthy; a gateway's checks its own admin listener's /readyz.
    for (name, service) in services.as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            service["healthcheck"]["test"].as_sequence().is_some(),
            "{name} has no healthcheck"
        );
        if let Some(needs) = service["depends_on"].as_mapping() {
            for (dep, how) in needs {
                assert_eq!(how["condition"], "service_healthy", "{name} -> {dep:?}");
            }
        }
    }
    for (service, conf) in [(gw, &conf), (gw2, &conf2)] {
        let test = strings(&service["healthcheck"]["test"]).join(" ");
        let admin_port = port_of(&admin(conf));
        assert!(
            test.contains(&format!("/dev/tcp/127.0.0.1/{admin_port} ")) && test.contains("/readyz"),
            "{test}"
        );
    }
    // No port a local PostgreSQL or Redis already holds.
    let text = std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml")).unwrap();
    for taken in ["5432", "6379"] {
        assert!(
            !text.contains(&format!(":{taken}/")) && !text.contains(&format!("={taken}\"")),
            "docker-compose.yml uses port {taken}"
        );
    }
}

/// The image: pinned bases, CA roots at run time, a health check on
/// /readyz, dependencies cached apart from src/, and only the binary built
/// for the gateway (no dev-dependencies).
#[test]
fn dockerfile_builds_what_the_docs_promise() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let stage = |name: &str| -> String {
        let start = dockerfile
            .lines()
            .position(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {name}")))
            .unwrap_or_else(|| panic!("no stage {name}"));
        dockerfile
            .lines()
            .skip(start)
            .take_while({
                let mut first = true;
                move |l| std::mem::take(&mut first) || !l.starts_with("FROM ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("ARG ") && l.contains("_IMAGE="))
    {
        let image = line.split_once('=').unwrap().1;
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            tag.starts_with(|c: char| c.is_ascii_digit()),
            "{line}: pin a versioned tag"
        );
    }
    let deps = stage("deps");
    assert!(
        deps.contains("COPY Cargo.toml Cargo.lock build.rs ./"),
        "{deps}"
    );
    assert!(!deps.contains("COPY . ."), "{deps}");
    let build = stage("build");
    assert!(
        build.contains("COPY src src") && build.contains("--bin robeing-gateway"),
        "{build}"
    );
    assert!(
        !build.contains("--example") && !build.contains("COPY . ."),
        "{build}"
    );
    let runtime = stage("gateway");
    assert!(runtime.contains("ca-certificates"), "{runtime}");
    assert!(
        runtime.contains("HEALTHCHECK") && runtime.contains("/readyz"),
        "{runtime}"
    );
    assert!(runtime.contains("COPY --from=build "), "{runtime}");
}

#[test]
fn quick_start_users_match_the_compose_demo_user() {
    let users: std::collections::HashMap<String, String> =
        toml::from_str(&std::fs::read_to_string(Path::new(ROOT).join("conf/users.toml")).unwrap())
            .unwrap();
    let init_sql = std::fs::read_to_string(Path::new(ROOT).join("conf/postgres-init.sql")).unwrap();
    assert!(init_sql.contains(&format!("('{}', 'alice')", users["alice"])));
}

#[test]
fn systemd_unit_reloads_through_the_handoff() {
    let unit =
        std::fs::read_to_string(Path::new(ROOT).join("conf/robeing-gateway.service")).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= missing"))
            .to_owned()
    };
    // Main-PID tracking survives the handoff: the successor sends MAINPID.
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("NotifyAccess"), "all");
    let start = value("ExecStart");
    let reload = value("ExecReload");
    let check = value("ExecStartPre");
    let (binary, start_args) = start.split_once(' ').unwrap();
    assert_eq!(reload, format!("{binary} reload {start_args}"));
    assert_eq!(check, format!("{binary} -t {start_args}"));
    // Every command line parses with this binary's CLI.
    use clap::Parser;
    for line in [&start, &reload, &check] {
        let args = line.split_whitespace().map(str::to_owned);
        robeing_gateway::process::cli::Cli::try_parse_from(args)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    // The pid file and upgrade socket paths of a config in the runtime dir
    // survive a reload (RuntimeDirectoryPreserve).
    assert_eq!(value("RuntimeDirectory"), "robeing-gateway");
    assert_eq!(value("RuntimeDirectoryPreserve"), "yes");
    assert_eq!(value("RuntimeDirectoryMode"), "0700");
    assert_eq!(value("LogsDirectory"), "robeing-gateway");
    assert_eq!(value("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    // The user it runs as is the one conf/sysusers.d creates.
    let sysusers = Path::new(ROOT).join("conf/sysusers.d/robeing-gateway.conf");
    let sysusers_text = std::fs::read_to_string(&sysusers).unwrap();
    assert!(sysusers_text
        .lines()
        .any(|l| l.starts_with(&format!("u {} ", value("User")))));
}

/// systemd itself accepts the unit and the sysusers file: every key known,
/// every value parsed, every command executable (the built binary stands
/// in for /usr/local/bin).
#[test]
fn systemd_accepts_the_unit_and_the_sysusers_file() {
    let dir = std::env::temp_dir().join(format!("robeing-systemd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("env");
    std::fs::write(&env_file, "").unwrap();
    let unit = std::fs::read_to_string(Path::new(ROOT).join("conf/robeing-gateway.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/robeing-gateway",
            env!("CARGO_BIN_EXE_robeing-gateway"),
        )
        .replace("/etc/robeing-gateway/env", env_file.to_str().unwrap());
    let unit_path = dir.join("robeing-gateway.service");
    std::fs::write(&unit_path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze (Debian's systemd; scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    // It warns on stderr, exit 0, about a key it ignores.
    assert_eq!(stderr(&out), "", "systemd-analyze verify");

    let out = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(Path::new(ROOT).join("conf/sysusers.d/robeing-gateway.conf"))
        .output()
        .expect("systemd-sysusers");
    assert!(out.status.success(), "{out:?}");
    assert!(!stderr(&out).contains("Unknown"), "{}", stderr(&out));
}

/// A public key made now by openssl (`genpkey` arguments), its PEM path.
fn public_key_file(name: &str, genpkey: &[&str]) -> std::path::PathBuf {
    let private = write_temp(&format!("{name}.key"), "");
    let public = write_temp(&format!("{name}.pub"), "");
    for args in [
        [
            &["genpkey"][..],
            genpkey,
            &["-out", private.to_str().unwrap()],
        ]
        .concat(),
        vec![
            "pkey",
            "-pubout",
            "-in",
            private.to_str().unwrap(),
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    public
}

// Signing-key problems name the key (`auth.keys[i]`, its kid, its file).
#[test]
fn signing_key_problems_name_the_key() {
    let base = std::fs::read_to_string(Path::new(ROOT).join("conf/gateway.toml")).unwrap();
    let base = base.replace("conf/users.toml", &format!("{ROOT}/conf/users.toml"));
    let shorthand = "secret_env = \"GATEWAY_JWT_SECRET\"\n";
    assert!(base.contains(shorthand));
    let small_rsa = public_key_file(
        "rsa-1024",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let p384 = public_key_file(
        "p384",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let with_keys = |keys: &str| {
        // The keys go at the end of [auth], before [users].
        let mut text = base.replace(shorthand, "");
        let at = text.find("\n[users]").unwrap();
        text.insert_str(at, &format!("\n{keys}"));
        text
    };
    let key = |kid: &str, alg: &str, source: &str| {
        format!("[[auth.keys]]\nkid = \"{kid}\"\nalgorithm = \"{alg}\"\n{source}\n")
    };
    let env = "secret_env = \"GATEWAY_JWT_SECRET\"";
    let aud = "audience = \"robeing\"\n".to_owned();
    let cases = [
        (with_keys(&key("a", "HS512", env)), "auth.keys[0].algorithm: 'HS512' is not"),
        (with_keys(&key("a b", "HS256", env)), "auth.keys[0].kid: must be"),
        (
            with_keys(&(key("a", "HS256", env) + &key("a", "HS256", env))),
            "auth.keys[1].kid: 'a' is used by an earlier key",
        ),
        (with_keys(&key("r", "RS256", env)), "auth.keys[0].secret_env: a RS256 key has"),
        (
            with_keys(&key("r", "RS256", &format!("public_key_file = \"{}\"", small_rsa.display()))),
            "auth.audience: is required with RS256/ES256/EdDSA keys or [auth.jwks]",
        ),
        (
            with_keys("[auth.jwks]\nurl = \"http://127.0.0.1:9/jwks.json\"\n"),
            "auth.audience: is required with RS256/ES256/EdDSA keys or [auth.jwks]",
        ),
        (
            with_keys(&format!("audience = \"x\"\nallow_any_audience = true\n{}", key("a", "HS256", env))),
            "auth.allow_any_audience: contradicts auth.audience",
        ),
        (
            with_keys(&(aud.clone() + &key("r", "RS256", &format!("public_key_file = \"{}\"", small_rsa.display())))),
            "key 'r', ",
        ),
        (
            with_keys(&(aud.clone() + &key("r", "RS256", &format!("public_key_file = \"{}\"", small_rsa.display())))),
            "1024 bits; at least 2048",
        ),
        (
            with_keys(&(aud.clone() + &key("e", "ES256", &format!("public_key_file = \"{}\"", p384.display())))),
            "auth.keys[0].public_key_file: key 'e'",
        ),
        (
            with_keys(&(key("a", "HS256", env) + "verify_until = \"next tuesday\"")),
            "auth.keys[0].verify_until: key 'a': 'next tuesday' is not an RFC 3339 instant",
        ),
        (
            with_keys(&key("a", "HS256", "secret_env = \"NO_SUCH_VARIABLE_SET\"")),
            "auth.keys[0].secret_env: key 'a': environment variable NO_SUCH_VARIABLE_SET is not set",
        ),
        (
            with_keys("[auth.jwks]\nurl = \"http://jwks.example/jwks.json\"\n"),
            "auth.jwks.url: http:// is only for loopback addresses",
        ),
        (
            with_keys("[auth.jwks]\nurl = \"ftp://127.0.0.1/jwks.json\"\n"),
            "auth.jwks.url: must be an https:// URL",
        ),
        (
            with_keys(&key("a", "HS256", env)).replace("[[auth.keys]]", &format!("{shorthand}[[auth.keys]]")),
            "auth.keys: use either secret_env/secret_file (one key) or [[auth.keys]]",
        ),
    ];
    each_fails_naming("bad-key", &cases);
    // And a good set of keys validates; `token --kid` signs with the one named.
    let good = with_keys(&(key("new", "HS256", env) + &key("old", "HS256", env)));
    let path = write_temp("good-keys.toml", &good);
    let out = gateway(&["-t", "-c", path.to_str().unwrap()], Some(SECRET));
    assert!(out.status.success(), "{}", stderr(&out));
    let mint = |kid: &str| {
        let conf = path.to_str().unwrap();
        let args = ["-c", conf, "token", "--username", "alice", "--kid", kid];
        gateway(&args, Some(SECRET))
    };
    let out = mint("old");
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("old"));
    let out = mint("nope");
    assert!(
        stderr(&out).contains("no HS256 key has kid 'nope'"),
        "{}",
        stderr(&out)
    );
}

/// Each file key of a working configuration pointed at a missing file:
/// `-t`, start-up and SIGHUP each name that key, not a neighbour.
#[test]
fn every_file_key_is_named_at_check_start_and_sighup() {
    let dir = common::cert_dir();
    let (cert, key) = common::make_cert(&dir, "listener");
    let public = public_key_file("file-keys-rsa", &["-algorithm", "RSA"]);
    let secret = dir.join("hs.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let users = format!("{ROOT}/conf/users.toml");
    let good = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\npid_file = \"{d}/gw.pid\"\nupgrade_sock = \"{d}/up.sock\"\n\
         [[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
         [auth]\naudience = \"robeing\"\n\
         [[auth.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret_file = \"{secret}\"\n\
         [[auth.keys]]\nkid = \"rs\"\nalgorithm = \"RS256\"\npublic_key_file = \"{public}\"\n\
         [users]\nsource = \"file\"\nusers = \"{users}\"\n\
         [[routes]]\npath = \"/x/*\"\nservice = \"x\"\nhost = \"127.0.0.1\"\nport = 9\n\
         protocol = \"h2\"\ntls_ca_file = \"{cert}\"\n",
        port = common::free_port(),
        tls_port = common::free_port(),
        d = dir.display(),
        cert = cert.display(),
        key = key.display(),
        secret = secret.display(),
        public = public.display(),
    );
    let missing = |path: &Path, what: &str| {
        good.replace(
            &format!("\"{}\"", path.display()),
            &format!("\"/nonexistent/{what}\""),
        )
    };
    // cert_file and tls_ca_file share a file: replace the key's line only.
    let bad_cert = good.replace(
        &format!("cert_file = \"{}\"", cert.display()),
        "cert_file = \"/nonexistent/cert.pem\"",
    );
    let bad_ca = good.replace(
        &format!("tls_ca_file = \"{}\"", cert.display()),
        "tls_ca_file = \"/nonexistent/ca.pem\"",
    );
    let cases = [
        (bad_cert, "server.tls[0].cert_file: cannot read"),
        (
            missing(&key, "key.pem"),
            "server.tls[0].key_file: cannot read",
        ),
        (bad_ca, "tls_ca_file: cannot read /nonexistent/ca.pem"),
        (
            missing(&public, "rs.pub"),
            "auth.keys[1].public_key_file: key 'rs', /nonexistent/rs.pub: cannot read",
        ),
        (
            missing(&secret, "hs.secret"),
            "auth.keys[0].secret_file: key 'hs': cannot read /nonexistent/hs.secret",
        ),
        (
            good.replace(&users, "/nonexistent/users.toml"),
            "users.users: cannot read",
        ),
    ];
    let conf = dir.join("gateway.toml");
    std::fs::write(&conf, &good).unwrap();
    let out = gateway(&["-t", "-c", conf.to_str().unwrap()], None);
    assert!(out.status.success(), "the good file: {}", stderr(&out));
    each_fails_naming("file-keys", &cases);

    // SIGHUP: each bad file is rejected, naming its key; the good one is
    // served throughout.
    let log = dir.join("gateway.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_robeing-gateway"))
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start gateway");
    let wait_for = |text: &str, times: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let now = std::fs::read_to_string(&log).unwrap_or_default();
            if now.matches(text).count() >= times {
                return now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {text:?} (x{times}):\n{now}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_for("serving as pid", 1);
    for (i, (text, want)) in cases.iter().enumerate() {
        std::fs::write(&conf, text).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        let now = wait_for("SIGHUP: configuration rejected", i + 1);
        let line = now
            .lines()
            .filter(|l| l.contains("SIGHUP: configuration rejected"))
            .nth(i)
            .unwrap();
        assert!(line.contains(want), "case {i} on SIGHUP: {line}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The license file is the one Cargo.toml declares, the changelog starts at
/// this release, and the docs the README sends readers to exist.
#[test]
fn license_changelog_and_linked_docs_exist() {
    let read = |name: &str| {
        std::fs::read_to_string(Path::new(ROOT).join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let package = &manifest["package"];
    assert_eq!(package["license"].as_str(), Some("Apache-2.0"));
    let license = read("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    let version = package["version"].as_str().unwrap();
    assert!(
        read("CHANGELOG.md").contains(&format!("\n## {version} ")),
        "CHANGELOG.md has no entry for {version}"
    );
    let readme = read("README.md");
    for doc in [
        "docs/deploy.md",
        "docs/benchmarks.md",
        "docs/architecture.md",
    ] {
        assert!(readme.contains(doc), "the README does not link {doc}");
        assert!(Path::new(ROOT).join(doc).exists(), "{doc} is missing");
    }
    // The deployment guide covers what operators asked for.
    let deploy = read("docs/deploy.md");
    for topic in [
        "## systemd",
        "## Container",
        "## Kubernetes",
        "shutdown_delay_seconds",
        "readinessProbe",
        "docker compose exec gateway robeing-gateway token",
    ] {
        assert!(deploy.contains(topic), "docs/deploy.md lacks {topic}");
    }
}
