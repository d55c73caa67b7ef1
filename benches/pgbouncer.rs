//! The cost of PgBouncer in transaction mode: a point read (`users().get`)
//! and a key validation (`api_keys().validate`), through a PgBouncer of
//! the bench's own (statement cache off, as Debian's 1.18 needs) beside
//! the same calls direct (statement cache on, and off), in one run.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench pgbouncer
//! ```
//! Seeds 10,000 users and keys tagged `pgbouncer` once (see
//! `benches/common`); needs the `pgbouncer` binary.

mod common;
#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod test_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::Criterion;
use dreamnet_db::Store;
use test_support::pgbouncer::PgBouncer;

const N: usize = 10_000;

fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "benches/pgbouncer skipped: set DATABASE_URL to a PostgreSQL database it may fill"
        );
        return;
    };
    let mut direct = url::Url::parse(&url).expect("DATABASE_URL is a URL");
    if !direct.query_pairs().any(|(k, _)| k == "sslmode") {
        direct.query_pairs_mut().append_pair("sslmode", "disable");
    }
    let db = direct.path().trim_start_matches('/').to_owned();
    let direct = direct.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seeded = rt.block_on(common::users_and_keys(&direct, "pgbouncer", N));
    // SAFETY of the environment: the test support reads the server from
    // DREAMNET_TEST_DATABASE_URL; point it at DATABASE_URL's server.
    let bouncer = rt
        .block_on(async {
            // SAFETY: set before any other thread reads the environment.
            unsafe { std::env::set_var("DREAMNET_TEST_DATABASE_URL", &direct) };
            PgBouncer::start(4).await
        })
        .expect("pgbouncer");
    let stores = [
        ("direct", direct.clone(), true),
        ("direct_no_statement_cache", direct.clone(), false),
        ("pgbouncer_transaction_mode", bouncer.url(&db), false),
    ]
    .map(|(name, url, cache)| {
        let store = rt
            .block_on(
                Store::builder()
                    .database_url(url)
                    .statement_cache(cache)
                    .max_connections(1)
                    .min_idle(Some(1))
                    .connect(),
            )
            .expect("connect");
        (name, store)
    });
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let next = AtomicUsize::new(0);
    let pick = || next.fetch_add(7919, Ordering::Relaxed) % N;
    let mut g = c.benchmark_group("pgbouncer_get_user");
    for (name, store) in &stores {
        g.bench_function(*name, |b| {
            b.to_async(&rt)
                .iter(|| async { store.users().get(seeded.users[pick()]).await.unwrap() })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("pgbouncer_validate_key");
    for (name, store) in &stores {
        g.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                store
                    .api_keys()
                    .validate(&seeded.keys[pick()])
                    .await
                    .unwrap()
            })
        });
    }
    g.finish();
    c.final_summary();
    drop(stores);
    drop(bouncer);
}
