//! The bench's HTML report, rendered from a small fixture run
//! (`tests/fixtures/bench/`) and opened in headless Chromium: the page
//! loads without errors and shows every proxy of the run.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::chromium_dom;

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_robeing-gateway"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

#[test]
fn the_html_report_renders_every_proxy_in_a_browser() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench");
    let out = std::env::temp_dir().join(format!("robeing-bench-report-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(
        fixtures.join("instructions.jsonl"),
        out.join("instructions.jsonl"),
    )
    .unwrap();
    let report = target_dir().join("examples/bench_report");
    assert!(
        report.exists(),
        "{} is missing (cargo test builds examples)",
        report.display()
    );
    let status = Command::new(&report)
        .arg(fixtures.join("runs.jsonl"))
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run bench_report");
    assert!(status.success());
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must not fetch"
    );

    let (dom, _) = chromium_dom(&format!("file://{}", page.display()), &[]);
    let _ = std::fs::remove_dir_all(&out);
    // The page's own script ran, found its charts and caught no error.
    assert!(dom.contains("data-rendered=\""), "{dom}");
    let rendered: usize = dom
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Two scenarios: req/s, CPU, instructions and latency each.
    assert_eq!(rendered, 8, "charts rendered");
    assert!(
        dom.contains("<pre id=\"errors\"></pre>"),
        "script errors: {dom}"
    );
    for proxy in ["gateway", "nginx-proxy", "haproxy-jwt", "bare-pingora"] {
        assert!(dom.contains(&format!(">{proxy}<")), "{proxy} missing");
    }
    for scenario in ["public", "cached"] {
        assert!(
            dom.contains(&format!("<h2>{scenario}</h2>")),
            "{scenario} missing"
        );
    }
}
