//! Unit tests of `process/handoff.rs` (kept apart so the module reads as the code it tests).
use super::*;
use crate::gateway::check_private_dirs;
use std::os::unix::fs::PermissionsExt;

fn server_in(dir: &Path) -> ServerConfig {
    let sock = format!("upgrade_sock = \"{}/up.sock\"", dir.display());
    crate::config::testing::TestConfig::new()
        .set("server", &sock)
        .parse()
        .server
}

/// A directory of the test's own, removed when the test ends (passed or
/// not), so runs leave nothing in the system's temporary directory.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A test may have taken the write bit away.
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("handoff-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

#[test]
fn a_file_is_taken_once_and_is_private() {
    let dir = temp_dir("once");
    let server = server_in(&dir);
    let offered = OfferedConfig {
        path: "/x/gateway.toml".into(),
        source: "[server]".into(),
    };
    HandoffFile::Config.leave(&server, &offered).unwrap();
    let mode = std::fs::metadata(HandoffFile::Config.path(&server))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let taken: Option<OfferedConfig> = HandoffFile::Config.take(&server).unwrap();
    assert_eq!(taken, Some(offered));
    let again: Option<OfferedConfig> = HandoffFile::Config.take(&server).unwrap();
    assert_eq!(again, None);
}

#[test]
fn a_file_open_to_others_is_refused_and_removed() {
    let dir = temp_dir("open");
    let server = server_in(&dir);
    let path = HandoffFile::Limits.path(&server);
    std::fs::write(&path, b"[]").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let taken: Result<Option<Vec<u8>>, _> = HandoffFile::Limits.take(&server);
    assert!(
        matches!(taken, Err(HandoffError::Untrusted(..))),
        "{taken:?}"
    );
    assert!(!path.exists());
}

#[test]
fn a_symlink_or_fifo_is_refused_without_reading_or_blocking() {
    let dir = temp_dir("planted");
    let server = server_in(&dir);
    let secret = dir.join("secret.json");
    std::fs::write(&secret, "[]").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = HandoffFile::Identity.path(&server);
    std::os::unix::fs::symlink(&secret, &path).unwrap();
    let taken = HandoffFile::Identity.take::<Vec<SnapshotEntry>>(&server);
    assert!(
        matches!(taken, Err(HandoffError::Untrusted(_, "a symbolic link"))),
        "{taken:?}"
    );
    assert!(secret.exists(), "the link's target is left alone");
    // A FIFO: nothing writes to it, and taking it returns at once.
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let started = Instant::now();
    let taken = HandoffFile::Identity.take::<Vec<SnapshotEntry>>(&server);
    assert!(
        matches!(taken, Err(HandoffError::Untrusted(_, "not a regular file"))),
        "{taken:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!path.exists(), "the FIFO is removed");
}

#[test]
fn a_file_of_another_user_is_refused() {
    let dir = temp_dir("nobody");
    let server = server_in(&dir);
    let path = HandoffFile::Limits.path(&server);
    std::fs::write(&path, "[]").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Giving a file away needs root, as `make test` runs.
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    std::os::unix::fs::chown(&path, Some(nobody.uid.as_raw()), None).unwrap();
    let taken = HandoffFile::Limits.take::<Vec<LimitSnapshotEntry>>(&server);
    assert!(
        matches!(
            taken,
            Err(HandoffError::Untrusted(_, "owned by another user"))
        ),
        "{taken:?}"
    );
}

#[test]
fn writes_never_go_through_a_planted_link() {
    let dir = temp_dir("write");
    let server = server_in(&dir);
    let path = HandoffFile::Identity.path(&server);
    let target = dir.join("elsewhere");
    // The temporary name writes used to take, and the final name.
    let mut old_tmp = path.as_os_str().to_owned();
    old_tmp.push(".tmp");
    std::os::unix::fs::symlink(&target, &old_tmp).unwrap();
    HandoffFile::Identity
        .leave(&server, &Vec::<SnapshotEntry>::new())
        .unwrap();
    assert!(!target.exists(), "nothing written through the link");
    // A link at the final name is replaced, not followed.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    HandoffFile::Identity
        .leave(&server, &Vec::<SnapshotEntry>::new())
        .unwrap();
    assert!(!target.exists());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_file());
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .filter(|e| e.path().as_os_str() != old_tmp.as_os_str())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn handoff_paths_must_be_in_a_private_directory() {
    let server = |dir: &Path| {
        let mut server = server_in(dir);
        server.pid_file = dir.join("gateway.pid").display().to_string();
        server
    };
    let open = temp_dir("open-dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let found = check_private_dirs(&server(&open));
    let keys: Vec<_> = found.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        ["server.pid_file", "server.upgrade_sock"],
        "{found:?}"
    );
    assert!(
        found[0].1.contains("writable by other users (mode 1777)"),
        "{found:?}"
    );
    let group = temp_dir("group-dir");
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o770)).unwrap();
    assert_eq!(check_private_dirs(&server(&group)).len(), 2);
    let private = temp_dir("private-dir");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(check_private_dirs(&server(&private)).is_empty());
    // Missing: created, closed to others.
    let missing = private.join("run/robeing-gateway");
    assert!(check_private_dirs(&server(&missing)).is_empty());
    let mode = std::fs::metadata(&missing).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}
