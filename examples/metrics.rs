//! The crate's metrics served to Prometheus: a store in memory (PostgreSQL
//! when `DATABASE_URL` is set), a few calls, and `/metrics`.
//!
//! ```text
//! cargo run --example metrics                     # then: curl localhost:9898/metrics
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example metrics
//! METRICS_PORT=9100 cargo run --example metrics
//! ```
//!
//! `metrics-exporter-prometheus` is the recorder; the crate records through
//! the `metrics` facade and installs nothing itself. The `/metrics` handler
//! refreshes the pool's gauges (`Store::record_metrics`) before rendering.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use dreamnet_db::telemetry::{self, CALL_DURATION, DURATION_BUCKETS};
use dreamnet_db::{NewEvent, NewSession, NewUser, RateLimitPolicy, RateLimiter, Sessions, Store};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(CALL_DURATION.to_owned()), DURATION_BUCKETS)?
        .install_recorder()?;
    telemetry::describe();
    // The recorder drains histogram samples when it renders or runs upkeep.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let (store, sessions) = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let store = Store::builder()
                .database_url(url)
                .run_migrations(true)
                .connect()
                .await?;
            let sessions = Sessions::postgres(&store)?;
            (store, sessions)
        }
        Err(_) => (Store::in_memory(), Sessions::in_memory()),
    };
    let limiter = RateLimiter::in_memory(RateLimitPolicy::per_minute(60, 2)?);

    // A few calls, some of them failing, to have something to show.
    let email = format!("metrics-{}@example.com", uuid::Uuid::now_v7().simple());
    let user = store
        .users()
        .create(NewUser::with_email(email.parse()?))
        .await?;
    store.users().get(user.id).await?;
    let _ = store.users().get(uuid::Uuid::now_v7()).await; // not_found
    let issued = store.api_keys().issue(user.id, "billing", None).await?;
    store
        .api_keys()
        .validate(issued.secret.expose_secret())
        .await?;
    let _ = store.api_keys().validate("dnk_not-a-key").await; // unauthorized
    store
        .events()
        .record(NewEvent::new("user.login".parse()?, json!({})).user(user.id))
        .await?;
    let session = sessions
        .create(NewSession::new(Duration::from_secs(1800)).user(user.id))
        .await?;
    sessions.load(&session.id).await?;
    for _ in 0..3 {
        limiter.check("api-key:demo").await?; // 2 allowed, 1 refused
    }
    store.users().delete(user.id).await?;
    sessions.delete_user(user.id).await?;

    let port: u16 = std::env::var("METRICS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9898);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (store, prometheus) = (store.clone(), prometheus.clone());
            async move {
                store.record_metrics();
                prometheus.render()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("serving: curl http://127.0.0.1:{port}/metrics");
    axum::serve(listener, app).await?;
    Ok(())
}
