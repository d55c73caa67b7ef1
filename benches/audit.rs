//! What the audit log costs a write: a user update with its audit record
//! beside the same update without auditing, on the same database, in the
//! same process and run; one writer, then eight writers at once on
//! different users (which spread over the audit log's chains).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/dreamnet_audit_bench cargo bench --bench audit
//! ```
//!
//! `DATABASE_URL` names a database the benchmark may fill (created if it
//! is missing, on the server's `postgres` database); default
//! `postgres://postgres@127.0.0.1:5432/dreamnet_audit_bench`. The ratios
//! are printed at the end from criterion's estimates.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::Criterion;
use dreamnet_db::{NewUser, Store, UserUpdate};
use serde_json::json;
use tokio::runtime::Runtime;
use uuid::Uuid;

const USERS: usize = 1_000;
const WRITERS: usize = 8;

fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/dreamnet_audit_bench?sslmode=disable".to_owned()
    })
}

async fn ensure_database(url: &str) {
    let parsed = url::Url::parse(url).unwrap();
    let name = parsed.path().trim_start_matches('/').to_owned();
    let mut admin = parsed.clone();
    admin.set_path("/postgres");
    let (client, conn) = tokio_postgres::connect(admin.as_str(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is reachable");
    tokio::spawn(conn);
    // Fails if it exists, which is fine.
    let _ = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await;
}

struct Setup {
    audited: Store,
    plain: Store,
    users: Vec<Uuid>,
}

async fn setup() -> Setup {
    let url = url();
    ensure_database(&url).await;
    let audited = Store::builder()
        .database_url(url.clone())
        .max_connections(WRITERS as u32 + 2)
        .run_migrations(true)
        .connect()
        .await
        .unwrap();
    let plain = Store::builder()
        .database_url(url)
        .max_connections(WRITERS as u32 + 2)
        .audit(false)
        .connect()
        .await
        .unwrap();
    let run = Uuid::new_v4().simple().to_string();
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let u = plain
            .users()
            .create(NewUser::with_email(
                format!("bench-{run}-{i}@example.com").parse().unwrap(),
            ))
            .await
            .unwrap();
        users.push(u.id);
    }
    Setup {
        audited,
        plain,
        users,
    }
}

async fn update(store: &Store, id: Uuid, n: usize) {
    store
        .users()
        .update(id, UserUpdate::new().merge_metadata(json!({"n": n})))
        .await
        .unwrap();
}

fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let path = format!("target/criterion/{group}/{name}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    // The slope where criterion fitted one (what it prints), else the mean.
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

fn main() {
    let rt = Runtime::new().unwrap();
    let s = Arc::new(rt.block_on(setup()));
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));

    let next = Arc::new(AtomicUsize::new(0));
    {
        let mut g = c.benchmark_group("audit_user_update");
        for (name, audited) in [("unaudited", false), ("audited", true)] {
            g.bench_function(name, |b| {
                b.to_async(&rt).iter(|| {
                    let s = s.clone();
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let store = if audited { &s.audited } else { &s.plain };
                        update(store, s.users[i % USERS], i).await;
                    }
                })
            });
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("audit_user_update_8_writers");
        for (name, audited) in [("unaudited", false), ("audited", true)] {
            g.bench_function(name, |b| {
                b.to_async(&rt).iter(|| {
                    let s = s.clone();
                    let i = next.fetch_add(WRITERS, Ordering::Relaxed);
                    async move {
                        let tasks: Vec<_> = (0..WRITERS)
                            .map(|w| {
                                let s = s.clone();
                                tokio::spawn(async move {
                                    let store = if audited { &s.audited } else { &s.plain };
                                    update(store, s.users[(i + w) % USERS], i).await;
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                })
            });
        }
        g.finish();
    }
    c.final_summary();

    for group in ["audit_user_update", "audit_user_update_8_writers"] {
        if let (Some(a), Some(p)) = (mean_ns(group, "audited"), mean_ns(group, "unaudited")) {
            println!(
                "{group}: audited {:.1} µs, unaudited {:.1} µs, ratio {:.2}",
                a / 1e3,
                p / 1e3,
                a / p
            );
        }
    }
}
