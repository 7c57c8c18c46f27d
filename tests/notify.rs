//! Identity changes pushed by PostgreSQL (`[users] notify_channel` and
//! `conf/user-notify.sql`): three instances with a five-minute cache see a
//! deleted, renamed or created user within a second, and the listener comes
//! back after the database connection breaks.

mod common;

use std::time::{Duration, Instant};

use common::*;

const NOTIFY: &str = "cache_ttl_seconds = 300\nnegative_cache_ttl_seconds = 300\nnotify_channel = \"robeing_user_changed\"";

#[tokio::test(flavor = "multi_thread")]
async fn deletions_renames_and_creations_reach_every_instance_within_a_second() {
    ensure_user_notify_trigger();
    let up = Upstream::start();
    let routes = route("/api/robeing/*", up.port, true, "");
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| {
            Gateway::start_with(GatewayOptions {
                users_extra: NOTIFY,
                ..GatewayOptions::new(&routes)
            })
        })
        .collect();
    for gw in &gateways {
        wait_listening(gw).await;
    }
    let second = Duration::from_secs(1);

    // Deleted: cached as found everywhere, then refused everywhere.
    let gone = unique("gone");
    add_user(&gone);
    all_answer(&gateways, &token_for(&gone), 200, second).await;
    psql(&format!("DELETE FROM \"user\" WHERE username = '{gone}'"));
    all_answer(&gateways, &token_for(&gone), 404, second).await;
    assert_envelope(
        &get(
            gateways[2].port,
            "/api/robeing/x",
            &[bearer(&token_for(&gone))],
        )
        .await,
        404,
        "USER_NOT_FOUND",
    );

    // Renamed: the old name is refused, the new one served.
    let old = unique("old");
    let new = unique("new");
    add_user(&old);
    all_answer(&gateways, &token_for(&old), 200, second).await;
    all_answer(&gateways, &token_for(&new), 404, second).await;
    psql(&format!(
        "UPDATE \"user\" SET username = '{new}' WHERE username = '{old}'"
    ));
    all_answer(&gateways, &token_for(&old), 404, second).await;
    all_answer(&gateways, &token_for(&new), 200, second).await;

    // Created right after a (cached) 404: served at once.
    let late = unique("late");
    all_answer(&gateways, &token_for(&late), 404, second).await;
    add_user(&late);
    all_answer(&gateways, &token_for(&late), 200, second).await;
}

// The LISTEN connection breaks (the database "restarts" behind a fault
// proxy): the gauge says so, the listener comes back by itself, and
// notifications work again.
#[tokio::test(flavor = "multi_thread")]
async fn the_listener_comes_back_after_the_database_connection_breaks() {
    ensure_user_notify_trigger();
    let up = Upstream::start();
    let hop = FaultProxy::start(pg_port()).await;
    let routes = route("/api/robeing/*", up.port, true, "");
    let gw = Gateway::start_with(GatewayOptions {
        users_extra: NOTIFY,
        database_url: hop.database_url(),
        ..GatewayOptions::new(&routes)
    });
    wait_listening(&gw).await;
    hop.set(Fault::Down);
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric_value(gw.admin_port, "gateway_user_notify_up").await != 0 {
        assert!(
            Instant::now() < deadline,
            "a broken listener still says it is up"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    hop.set(Fault::Pass);
    wait_listening(&gw).await;
    let user = unique("back");
    add_user(&user);
    let gws = [gw];
    all_answer(&gws, &token_for(&user), 200, Duration::from_secs(1)).await;
    psql(&format!("DELETE FROM \"user\" WHERE username = '{user}'"));
    all_answer(&gws, &token_for(&user), 404, Duration::from_secs(1)).await;
}
