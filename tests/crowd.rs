//! A crowd behind one address. Its own test binary: 1,000 connections at
//! once would disturb the timing of the fault suite running beside it.

mod common;

use common::*;

// A crowd behind one address (office NAT, carrier, L4 balancer, a load
// test): 1,000 concurrent keep-alive connections from 127.0.0.1 under the
// default configuration are all served. The per-IP cap is for pressure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_keep_alive_connections_from_one_address_are_served() {
    let up = Upstream::start();
    let gw = Gateway::start_with(GatewayOptions::new(&route("/api/*", up.port, false, "")));
    let port = gw.port;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    let clients: Vec<_> = (0..1000)
        .map(|i| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut conn = Conn::from_stream(sock);
                // All 1,000 are open at once before any asks twice.
                let first = conn
                    .try_request("GET", &format!("/api/c{i}/0"), &[], b"")
                    .await;
                barrier.wait().await;
                let second = conn
                    .try_request("GET", &format!("/api/c{i}/1"), &[], b"")
                    .await;
                match (first, second) {
                    (Ok(a), Ok(b)) if a.status == 200 && b.status == 200 => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
        })
        .collect();
    let mut errors = Vec::new();
    for client in clients {
        if let Err(e) = client.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let refused = metric_value(
        gw.admin_port,
        "gateway_connections_refused_total{reason=\"per_ip_limit\"}",
    )
    .await;
    assert_eq!(refused, 0);
}
