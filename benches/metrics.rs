//! What metrics cost a call: an in-memory `users().get` with no metrics
//! recorder installed, and with a Prometheus recorder
//! (`metrics-exporter-prometheus`, buckets set for the call histogram, upkeep
//! on a thread as a service runs it).
//!
//! ```text
//! cargo bench --bench metrics
//! ```
//!
//! The in-memory read is the cheapest call the store makes (about a
//! microsecond), so the difference between the two is the whole price of
//! the instrumentation; against PostgreSQL or Redis it disappears in the
//! round trip.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dreamnet_db::{NewUser, Store};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::runtime::Runtime;
use uuid::Uuid;

const USERS: usize = 10_000;

fn load(rt: &Runtime) -> (Store, Vec<Uuid>) {
    rt.block_on(async {
        let store = Store::in_memory();
        let mut ids = Vec::with_capacity(USERS);
        for i in 0..USERS {
            let email = format!("user-{i}@example.com").parse().unwrap();
            ids.push(
                store
                    .users()
                    .create(NewUser::with_email(email))
                    .await
                    .unwrap()
                    .id,
            );
        }
        (store, ids)
    })
}

fn benches(c: &mut Criterion) {
    // One thread: the recorder set for this thread sees every call.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (store, ids) = load(&rt);
    let i = AtomicUsize::new(0);
    let get = || async {
        let id = ids[i.fetch_add(7_919, Ordering::Relaxed) % USERS];
        black_box(store.users().get(id).await.unwrap())
    };

    let mut group = c.benchmark_group("metrics");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.bench_function("users.get, no recorder", |b| b.to_async(&rt).iter(get));

    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("dreamnet_db_call_duration_seconds".to_owned()),
            &[0.000_1, 0.001, 0.01, 0.1, 1.0],
        )
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let upkeep = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                handle.run_upkeep();
            }
        })
    };
    {
        let _local = metrics::set_default_local_recorder(&recorder);
        group.bench_function("users.get, Prometheus recorder", |b| {
            b.to_async(&rt).iter(get)
        });
    }
    stop.store(true, Ordering::Relaxed);
    upkeep.join().unwrap();
    group.finish();
}

criterion_group!(metrics_overhead, benches);
criterion_main!(metrics_overhead);
