//! The directories of `server.pid_file` and `server.upgrade_sock`, checked
//! (and created) when a configuration is planned: the handoff files live
//! there, so no other user may write to them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::ServerConfig;

/// `server.pid_file` and `server.upgrade_sock` (beside which the handoff
/// files live) must sit in a directory no other user can write to: there,
/// nobody can plant a link, a FIFO or a file of their own, nor replace the
/// pid file or the socket. A missing directory is created 0700 (its
/// parents too), as systemd's `RuntimeDirectory=` would; an existing one
/// must be this user's or root's and closed to writes by group and others
/// (a sticky `/tmp` included). Returns the problems, each with its key.
pub fn check_private_dirs(server: &ServerConfig) -> Vec<(&'static str, String)> {
    [
        ("server.pid_file", &server.pid_file),
        ("server.upgrade_sock", &server.upgrade_sock),
    ]
    .into_iter()
    .filter_map(|(key, file)| {
        let dir = match Path::new(file).parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        private_dir(dir).err().map(|message| (key, message))
    })
    .collect()
}

fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()));
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the directory {} is writable by other users (mode {:o}); use one only the \
             gateway's user can write, such as /run/robeing-gateway (systemd \
             RuntimeDirectory=)",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    let uid = meta.uid();
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "the directory {} belongs to uid {uid}, not this user",
            dir.display()
        ));
    }
    Ok(())
}
