//! How long the in-memory backend takes to read a user and to validate an
//! API key, with 100,000 users and keys loaded.
//!
//! ```text
//! cargo bench --bench memory            # about a minute
//! cargo bench --bench memory -- --quick # a few seconds per benchmark
//! ```
//!
//! Each call goes through the public [`Store`] API, so the figures include
//! what a caller pays: input checks, tracing spans (no subscriber
//! installed), the lock, the index lookup and cloning the record out. Key
//! validation also parses the presented key and hashes it with SHA-256.
//! Every key is validated once before measuring, so `last_used` is fresh
//! and the measured validations are reads (as almost all are in a running
//! service, with `last_used` written at most once a minute per key).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dreamnet_db::{Email, EventFilter, NewEvent, NewUser, Store};
use serde_json::json;
use tokio::runtime::Runtime;
use uuid::Uuid;

const USERS: usize = 100_000;
/// Events per user, for the listing benchmark.
const EVENTS_PER_USER: usize = 5;

struct Loaded {
    store: Store,
    ids: Vec<Uuid>,
    emails: Vec<Email>,
    keys: Vec<String>,
}

fn load(rt: &Runtime) -> Loaded {
    rt.block_on(async {
        let store = Store::in_memory();
        let mut ids = Vec::with_capacity(USERS);
        let mut emails = Vec::with_capacity(USERS);
        let mut keys = Vec::with_capacity(USERS);
        for i in 0..USERS {
            let email: Email = format!("user-{i}@example.com").parse().unwrap();
            let (user, issued) = store
                .users()
                .create_with_key(
                    NewUser::with_email(email.clone()).metadata(json!({"source": "bench", "n": i})),
                    "bench",
                    None,
                )
                .await
                .unwrap();
            ids.push(user.id);
            emails.push(email);
            keys.push(issued.secret.expose_secret().to_owned());
        }
        for k in &keys {
            store.api_keys().validate(k).await.unwrap();
        }
        let events: Vec<_> = ids
            .iter()
            .flat_map(|&id| {
                (0..EVENTS_PER_USER).map(move |n| {
                    NewEvent::new("user.login".parse().unwrap(), json!({"n": n})).user(id)
                })
            })
            .collect();
        for chunk in events.chunks(10_000) {
            store.events().record_many(chunk.to_vec()).await.unwrap();
        }
        Loaded {
            store,
            ids,
            emails,
            keys,
        }
    })
}

/// The next index in a cycle over `n` items, so each iteration reads a
/// different record (not one that stays hot in the cache).
fn next(counter: &AtomicUsize, n: usize) -> usize {
    // A stride coprime with n spreads reads over the whole table.
    counter.fetch_add(7_919, Ordering::Relaxed) % n
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = load(&rt);
    let store = &data.store;

    let mut group = c.benchmark_group("memory");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let i = AtomicUsize::new(0);
    group.bench_function("users.get", |b| {
        b.to_async(&rt).iter(|| async {
            let id = data.ids[next(&i, USERS)];
            black_box(store.users().get(id).await.unwrap())
        })
    });

    group.bench_function("users.find_by_email", |b| {
        b.to_async(&rt).iter(|| async {
            let email = &data.emails[next(&i, USERS)];
            black_box(store.users().find_by_email(email).await.unwrap())
        })
    });

    group.bench_function("api_keys.validate", |b| {
        b.to_async(&rt).iter(|| async {
            let key = &data.keys[next(&i, USERS)];
            black_box(store.api_keys().validate(key).await.unwrap())
        })
    });

    group.bench_function("events.list (user, newest 5)", |b| {
        b.to_async(&rt).iter(|| async {
            let filter = EventFilter::for_user(data.ids[next(&i, USERS)]);
            black_box(store.events().list(&filter, 5, None).await.unwrap())
        })
    });
    group.finish();
}

criterion_group!(memory, benches);
criterion_main!(memory);
