//! The conformance suite against PostgreSQL: each test gets its own
//! database cloned from a migrated template (see `common`). Skipped, with
//! one line saying why, when PostgreSQL is unreachable; a failure under
//! `CI=true`.

mod common;
mod conformance;

use conformance::Harness;
use dreamnet_db::StoreBuilder;

async fn postgres(builder: StoreBuilder) -> Option<Harness> {
    let db = common::pg_db().await?;
    let store = db.store_with(builder.max_connections(10)).await;
    let url = db.url.clone();
    Some(Harness::new(store, db).with_sql(url))
}

conformance_tests!(postgres);
