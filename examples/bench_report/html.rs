//! The bench report as one self-contained HTML page (no script from
//! elsewhere, no font, no network): per scenario, bars of requests/s, CPU
//! µs and instructions per request for each proxy, and its latency
//! percentiles as curves. A browser opens `target/bench/report.html`.

use std::fmt::Write as _;

use serde_json::Value;

/// One color per proxy, the same in every chart.
fn color(proxy: &str) -> &'static str {
    match proxy {
        "gateway" => "#1f77b4",
        "gateway-nolog" => "#aec7e8",
        "gateway-pool" => "#17becf",
        "bare-pingora" => "#9467bd",
        "nginx-proxy" => "#2ca02c",
        "haproxy" => "#ffbb78",
        "haproxy-jwt" => "#ff7f0e",
        _ => "#7f7f7f",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar per (label, value), scaled to the largest.
fn bars(title: &str, unit: &str, items: &[(String, f64)]) -> String {
    let items: Vec<&(String, f64)> = items.iter().filter(|(_, v)| v.is_finite()).collect();
    if items.is_empty() {
        return String::new();
    }
    let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
    let (row, label_w, bar_w) = (22.0, 130.0, 360.0);
    let height = row * items.len() as f64 + 30.0;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" width=\"{}\" height=\"{height}\" \
         role=\"img\" aria-label=\"{}\">",
        escape(title),
        label_w + bar_w + 120.0,
        escape(title)
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let w = bar_w * value / max;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{}\">{} {}</text>",
            label_w - 6.0,
            y + 14.0,
            escape(label),
            row - 6.0,
            color(label),
            label_w + w + 6.0,
            y + 14.0,
            format_value(*value),
            escape(unit),
        );
    }
    svg + "</svg></figure>"
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Latency percentiles (p50, p99, p99.9) as one curve per proxy, log scale.
fn curves(title: &str, series: &[(String, [f64; 3])]) -> String {
    let points: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if points.is_empty() {
        return String::new();
    }
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (lo, hi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let (w, h, left, top) = (420.0, 200.0, 60.0, 10.0);
    let x = |i: usize| left + w * i as f64 / 2.0;
    let y = |v: f64| top + h - h * (v.log10() - lo) / (hi - lo);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" width=\"{}\" height=\"{}\" \
         role=\"img\" aria-label=\"{}\">",
        escape(title),
        left + w + 170.0,
        top + h + 40.0,
        escape(title)
    );
    for decade in lo as i32..=hi as i32 {
        let v = 10f64.powi(decade);
        let (right, line_y, label_x) = (left + w, y(v), left - 6.0);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{right}\" y1=\"{line_y:.1}\" y2=\"{line_y:.1}\" \
             class=\"grid\"/><text x=\"{label_x}\" y=\"{:.1}\" text-anchor=\"end\">{} ms</text>",
            line_y + 4.0,
            format_value(v)
        );
    }
    for (i, label) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            x(i),
            top + h + 20.0
        );
    }
    for (n, (proxy, p)) in series.iter().enumerate() {
        let color = color(proxy);
        let path: Vec<String> = p
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite() && **v > 0.0)
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            path.join(" "),
            left + w + 10.0,
            top + 14.0 + 18.0 * n as f64,
            escape(proxy)
        );
    }
    svg + "</svg></figure>"
}

/// The page: `rows` as summarized by `bench_report`, `instructions` the
/// lines of `instructions.jsonl` (may be empty).
pub fn page(rows: &[Value], instructions: &[Value]) -> String {
    let mut scenarios: Vec<&str> = rows
        .iter()
        .chain(instructions)
        .filter_map(|r| r["scenario"].as_str())
        .collect();
    scenarios.dedup();
    let mut seen = Vec::new();
    scenarios.retain(|s| {
        let new = !seen.contains(s);
        seen.push(*s);
        new
    });
    let mut body = String::new();
    for scenario in scenarios {
        let of = |list: &[Value]| -> Vec<Value> {
            list.iter()
                .filter(|r| r["scenario"] == scenario)
                .cloned()
                .collect()
        };
        let (runs, counted) = (of(rows), of(instructions));
        let metric = |k: &str| -> Vec<(String, f64)> {
            runs.iter()
                .map(|r| (proxy_name(r), r[k].as_f64().unwrap_or(f64::NAN)))
                .collect()
        };
        let per_request: Vec<(String, f64)> = counted
            .iter()
            .map(|r| (proxy_name(r), r["per_request"].as_f64().unwrap_or(f64::NAN)))
            .collect();
        let latency: Vec<(String, [f64; 3])> = runs
            .iter()
            .map(|r| {
                let ms = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
                (proxy_name(r), [ms("p50_ms"), ms("p99_ms"), ms("p999_ms")])
            })
            .collect();
        let _ = write!(
            body,
            "<section><h2>{}</h2>{}{}{}{}</section>",
            escape(scenario),
            bars(
                "requests per second",
                "req/s",
                &metric("requests_per_second")
            ),
            bars("CPU per request", "µs", &metric("cpu_us_per_request")),
            bars("instructions per request (callgrind)", "", &per_request),
            curves("latency percentiles", &latency),
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>robeing-gateway bench report</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}\
         figure{{display:inline-block;margin:0 2em 1.5em 0;vertical-align:top}}\
         figcaption{{font-weight:600;margin-bottom:.3em}}\
         .chart text{{font-size:12px;fill:#333}}.grid{{stroke:#ddd}}\
         </style></head><body><h1>robeing-gateway bench report</h1>\
         <p>Load bench (wrk, medians of the rounds) and instruction bench (callgrind); \
         ratios only between proxies measured in the same run.</p>{body}\
         <pre id=\"errors\"></pre><script>\
         window.addEventListener('error',function(e){{document.getElementById('errors')\
         .textContent+=String(e.message)+'\\n'}});\
         document.body.dataset.rendered=document.querySelectorAll('svg.chart').length;\
         </script></body></html>"
    )
}

fn proxy_name(row: &Value) -> String {
    row["proxy"].as_str().unwrap_or("?").to_owned()
}
