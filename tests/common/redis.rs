//! A real Redis (Debian's `redis-server`) on a free loopback port, started
//! by the harness like PostgreSQL; a missing binary fails loudly.

use super::*;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// `requirepass`, when it was started with one.
    password: Option<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// A Redis that wants `AUTH <password>` (`requirepass`) first.
    pub fn start_with_password(password: Option<&str>) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            password: password.map(str::to_owned),
        };
        server.start_again();
        server
    }

    /// `redis://127.0.0.1:<port>/`, for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again) on the same port, with nothing persisted.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis already runs");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass", p.as_str()]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): apt-get install redis-server (scripts/install-deps.sh does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT: a Redis that holds its connections
    /// and answers nothing, as a hung or swapping server does.
    pub fn pause(&self, paused: bool) {
        let child = self.child.as_ref().expect("redis runs");
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn answers_ping(&self) -> bool {
        self.try_command("PING")
            .is_some_and(|reply| reply == "+PONG")
    }

    /// The first line of Redis's reply to one inline command (after
    /// `AUTH`, when it wants one), on a connection of its own.
    pub fn command(&self, inline: &str) -> String {
        self.try_command(inline)
            .unwrap_or_else(|| panic!("redis on {} did not answer {inline:?}", self.port))
    }

    /// [`Self::command`] in database `db`.
    pub fn command_in(&self, db: u32, inline: &str) -> String {
        self.command(&format!("SELECT {db}\r\n{inline}"))
    }

    /// Connections Redis has open (`INFO clients`), this query's own
    /// included.
    pub fn connected_clients(&self) -> usize {
        let info = self.command("INFO clients");
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
    }

    /// Sends every command in `inline` (one per line); the last one's
    /// answer: its line, or a bulk string's text. The others must answer
    /// in one line.
    fn try_command(&self, inline: &str) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        let mut reader = BufReader::new(s.try_clone().ok()?);
        let mut line = String::new();
        if let Some(password) = &self.password {
            s.write_all(format!("AUTH {password}\r\n").as_bytes())
                .ok()?;
            reader.read_line(&mut line).ok()?;
            line.clear();
        }
        s.write_all(format!("{inline}\r\n").as_bytes()).ok()?;
        for _ in inline.lines() {
            line.clear();
            reader.read_line(&mut line).ok()?;
        }
        // A bulk string (`INFO`): its text.
        if let Some(len) = line
            .strip_prefix('$')
            .and_then(|n| n.trim_end().parse::<usize>().ok())
        {
            use std::io::Read;
            let mut text = vec![0; len];
            reader.read_exact(&mut text).ok()?;
            return String::from_utf8(text).ok();
        }
        Some(line.trim_end().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
