//! The conformance suite against the Redis cache: PostgreSQL behind the
//! cache (the production setup), and the in-memory backend behind it (the
//! cache's logic without a database). Each test gets its own database and
//! its own Redis key prefix. Skipped, with one line saying why, when
//! PostgreSQL or Redis is unreachable; a failure under `CI=true`.
#![cfg(feature = "redis")]

mod common;
mod conformance;

use conformance::Harness;
use dreamnet_db::StoreBuilder;

fn prefix() -> String {
    format!("dreamnet-test:{}:", uuid::Uuid::new_v4().simple())
}

async fn postgres_redis(builder: StoreBuilder) -> Option<Harness> {
    let url = common::redis_available().await?;
    let db = common::pg_db().await?;
    let store = db
        .store_with(
            builder
                .redis_url(url)
                .cache_prefix(prefix())
                .max_connections(10),
        )
        .await;
    let url = db.url.clone();
    Some(Harness::new(store, db).with_sql(url))
}

#[cfg(feature = "memory")]
async fn memory_redis(builder: StoreBuilder) -> Option<Harness> {
    let url = common::redis_available().await?;
    let store = builder
        .redis_url(url)
        .cache_prefix(prefix())
        .in_memory_cached()
        .await
        .expect("an in-memory store behind Redis");
    Some(Harness::new(store, ()))
}

/// PostgreSQL behind the cache.
mod postgres {
    use crate::conformance_tests;
    conformance_tests!(crate::postgres_redis);
}

/// The in-memory backend behind the cache.
#[cfg(feature = "memory")]
mod memory {
    use crate::conformance_tests;
    conformance_tests!(crate::memory_redis);
}
