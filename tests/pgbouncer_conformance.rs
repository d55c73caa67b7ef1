//! The conformance suite through PgBouncer in transaction mode (each test
//! starts its own on a spare port, in front of its own database), with the
//! statement cache off: Debian's PgBouncer predates prepared statement
//! support. Skipped, with one line saying why, when PostgreSQL or the
//! `pgbouncer` binary is missing; a failure under `CI=true`.

mod common;
mod conformance;

use common::pgbouncer::PgBouncer;
use conformance::Harness;
use dreamnet_db::StoreBuilder;

async fn through_pgbouncer(builder: StoreBuilder) -> Option<Harness> {
    let bouncer = PgBouncer::start(4).await?;
    let db = common::pg_db().await?;
    let store = builder
        .database_url(bouncer.url(&db.name))
        .statement_cache(false)
        .max_connections(10)
        .connect()
        .await
        .expect("connect through PgBouncer");
    let direct = db.url.clone();
    Some(Harness::new(store, (bouncer, db)).with_sql(direct))
}

conformance_tests!(through_pgbouncer);
