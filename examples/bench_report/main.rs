//! Summarizes the load bench's runs (`runs.jsonl`): medians per scenario
//! and proxy of requests/s, p50/p99/p99.9 latency and CPU microseconds per
//! request; ratios against the peers measured in the same run.
//!
//! `bench_report RUNS.jsonl OUT_DIR` writes OUT_DIR/report.md, report.json
//! and report.html (with OUT_DIR/instructions.jsonl of the instruction
//! bench, when there is one).

mod html;

use std::collections::BTreeMap;

use serde_json::{json, Value};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs_path = args.next().expect("usage: bench_report RUNS.jsonl OUT_DIR");
    let out_dir = std::path::PathBuf::from(args.next().expect("OUT_DIR"));
    let text = std::fs::read_to_string(&runs_path).expect("runs file");
    let mut groups: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("run line");
        let key = (
            v["scenario"].as_str().unwrap().to_owned(),
            v["proxy"].as_str().unwrap().to_owned(),
        );
        groups.entry(key).or_default().push(v);
    }
    let mut rows = Vec::new();
    for ((scenario, proxy), runs) in &groups {
        let field = |f: &dyn Fn(&Value) -> f64| median(runs.iter().map(f).collect());
        let rps = field(&|r| {
            r["wrk"]["requests"].as_f64().unwrap()
                / (r["wrk"]["duration_us"].as_f64().unwrap() / 1e6)
        });
        let cpu_us = field(&|r| {
            r["cpu_ticks"].as_f64().unwrap() / r["hz"].as_f64().unwrap() * 1e6
                / r["wrk"]["requests"].as_f64().unwrap()
        });
        let ms = |k: &str| field(&|r| r["wrk"][k].as_f64().unwrap() / 1000.0);
        let errors: f64 = runs
            .iter()
            .map(|r| r["wrk"]["socket_errors"].as_f64().unwrap())
            .sum();
        let non2xx: f64 = runs
            .iter()
            .map(|r| r["wrk"]["non2xx"].as_f64().unwrap())
            .sum();
        // Decisions of the Redis-limited gateway that Redis did not make.
        let fallbacks: f64 = runs
            .iter()
            .map(|r| r["store_fallbacks"].as_f64().unwrap_or(0.0))
            .sum();
        rows.push(json!({
            "scenario": scenario, "proxy": proxy, "rounds": runs.len(),
            "requests_per_second": rps.round(), "p50_ms": ms("p50_us"), "p99_ms": ms("p99_us"),
            "p999_ms": ms("p999_us"), "cpu_us_per_request": (cpu_us * 100.0).round() / 100.0,
            "socket_errors": errors, "non_2xx": non2xx, "store_fallbacks": fallbacks,
        }));
    }
    let mut md = String::from(
        "Ratios are against HAProxy-JWT; in the `limited` scenario against the gateway with its local limiter.\n\n\
         | scenario | proxy | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | req/s vs peer | CPU vs peer | non-2xx |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &rows {
        let peer_name = if row["scenario"] == "limited" {
            "gateway-limit"
        } else {
            "haproxy-jwt"
        };
        let peer = rows
            .iter()
            .find(|r| r["scenario"] == row["scenario"] && r["proxy"] == peer_name);
        let ratio = |k: &str| {
            peer.map(|p| format!("{:.2}", row[k].as_f64().unwrap() / p[k].as_f64().unwrap()))
                .unwrap_or_else(|| "-".into())
        };
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.2} | {} | {} | {} |\n",
            row["scenario"].as_str().unwrap(),
            row["proxy"].as_str().unwrap(),
            row["requests_per_second"].as_f64().unwrap(),
            row["p50_ms"].as_f64().unwrap(),
            row["p99_ms"].as_f64().unwrap(),
            row["p999_ms"].as_f64().unwrap(),
            row["cpu_us_per_request"].as_f64().unwrap(),
            ratio("requests_per_second"),
            ratio("cpu_us_per_request"),
            row["non_2xx"].as_f64().unwrap(),
        ));
    }
    for row in rows.iter().filter(|r| r["proxy"] == "gateway-redis") {
        md.push_str(&format!(
            "\ngateway-redis: {:.0} decisions fell back to the local limiter (Redis missed the \
             budget); every other one was made in Redis.\n",
            row["store_fallbacks"].as_f64().unwrap_or(0.0)
        ));
    }
    // Streams of JSON values (oha pretty-prints, so not one per line).
    let values = |name: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(out_dir.join(name)).unwrap_or_default();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .filter_map(Result::ok)
            .collect()
    };
    let fixed = values("fixed.jsonl");
    if !fixed.is_empty() {
        md.push_str(
            "\nFixed rate at half of the gateway's own cached-path maximum, cached path, latency \
             corrected for coordinated omission (oha --latency-correction):\n\n\
             | proxy | rate/s | achieved/s | p50 ms | p99 ms | p99.9 ms |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for f in &fixed {
            let pct = |k: &str| {
                f["oha"]["latencyPercentiles"][k]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    * 1000.0
            };
            md.push_str(&format!(
                "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} |\n",
                f["proxy"].as_str().unwrap_or("?"),
                f["rate"],
                f["oha"]["summary"]["requestsPerSec"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                pct("p50"),
                pct("p99"),
                pct("p99.9"),
            ));
        }
    }
    let memory = values("memory.jsonl");
    if !memory.is_empty() {
        md.push_str(
            "\nMemory with 10,000 idle keep-alive connections (RSS of the proxy's processes):\n\n\
             | proxy | idle MiB | with connections MiB | KiB per connection |\n|---|---:|---:|---:|\n",
        );
        for m in &memory {
            let idle = m["rss_idle_kb"].as_f64().unwrap_or(f64::NAN);
            let busy = m["rss_with_connections_kb"].as_f64().unwrap_or(f64::NAN);
            md.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.2} |\n",
                m["proxy"].as_str().unwrap_or("?"),
                idle / 1024.0,
                busy / 1024.0,
                (busy - idle) / m["connections"].as_f64().unwrap_or(1.0),
            ));
        }
    }
    let instructions = values("instructions.jsonl");
    if !instructions.is_empty() {
        md.push_str("\nInstructions per request (callgrind, `make bench-instructions`):\n\n");
        md.push_str("| scenario | proxy | instructions/request |\n|---|---|---:|\n");
        for i in &instructions {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                i["scenario"].as_str().unwrap_or("?"),
                i["proxy"].as_str().unwrap_or("?"),
                i["per_request"]
            ));
        }
    }
    // The TLS bench (benches/tls/run.sh) writes its own table.
    if let Ok(tls) = std::fs::read_to_string(out_dir.join("tls.md")) {
        md.push('\n');
        md.push_str(&tls);
    }
    let tls = values("tls.jsonl");
    std::fs::write(
        out_dir.join("report.html"),
        html::page(&rows, &instructions),
    )
    .expect("write report.html");
    let report = json!({"runs": rows, "fixed_rate": fixed, "memory": memory, "instructions": instructions, "tls": tls});
    std::fs::write(out_dir.join("report.md"), &md).expect("write report.md");
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .expect("write report.json");
    print!("{md}");
}
