//! Fault hops: a TCP proxy in front of PostgreSQL that can hang, drop or
//! slow the directory.

use super::*;

/// What a [`FaultProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward bytes both ways.
    Pass,
    /// Close every connection, open or new: the service is down.
    Down,
    /// Keep connections open and move no byte: the service hangs.
    Hang,
}

/// A TCP hop in front of a real service (PostgreSQL) that can be switched
/// between passing, down and hung without the client's address changing.
pub struct FaultProxy {
    pub port: u16,
    mode: tokio::sync::watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, watch) = tokio::sync::watch::channel(Fault::Pass);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(Self::serve(client, target_port, watch.clone()));
            }
        });
        Self { port, mode, task }
    }

    async fn serve(
        mut client: TcpStream,
        target_port: u16,
        mut watch: tokio::sync::watch::Receiver<Fault>,
    ) {
        let mode = *watch.borrow_and_update();
        match mode {
            Fault::Down => return,
            Fault::Hang => return std::future::pending().await,
            Fault::Pass => {}
        }
        let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                changed = watch.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let mode = *watch.borrow_and_update();
                    match mode {
                        Fault::Down => return,
                        // Hold both sockets, forward nothing.
                        Fault::Hang => return std::future::pending().await,
                        Fault::Pass => {}
                    }
                }
            }
        }
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }

    /// The test cluster's connection string, through this hop.
    pub fn database_url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=2",
            self.port,
            pg_env("PGUSER"),
            std::env::var("PGPASSWORD").unwrap_or_default(),
            pg_env("PGDATABASE"),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
