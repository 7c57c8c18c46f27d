//! Headless Chromium (Debian's package, which `make test` installs), run
//! as the machine allows: no sandbox as root, no background networking,
//! a fresh profile each time.

use super::*;

/// The DOM of `url` after its scripts ran, and Chromium's stderr.
pub fn chromium_dom(url: &str, extra_args: &[&str]) -> (String, String) {
    let profile = std::env::temp_dir().join(unique("robeing-chromium"));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--dump-dom",
        ])
        .args(extra_args)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium must be installed (make test installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
