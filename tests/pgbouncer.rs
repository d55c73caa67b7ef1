//! Behind PgBouncer in transaction mode (Debian's, before 1.21: no
//! prepared statement support): the store says so at start instead of
//! failing later, and migrations stay correct, two instances at once.

mod common;

use common::pgbouncer::PgBouncer;
use diesel::migration::MigrationSource;
use dreamnet_db::{Error, MIGRATIONS, Store};

/// An empty database (no migrations applied), dropped at the end.
async fn empty_db() -> Option<common::TestDb> {
    let admin = match tokio_postgres::connect(&common::admin_url(), tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) => {
            return common::unavailable(
                "PostgreSQL",
                "start PostgreSQL or set DREAMNET_TEST_DATABASE_URL to run it",
                e,
            );
        }
    };
    let name = format!("dreamnet_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    Some(common::TestDb {
        url: common::url_for(&name),
        name,
    })
}

fn migration_count() -> usize {
    MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_cache_behind_a_transaction_pooler_is_refused_at_start() {
    let Some(bouncer) = PgBouncer::start(4).await else {
        return;
    };
    let Some(db) = common::pg_db().await else {
        return;
    };
    let refused = Store::builder()
        .database_url(bouncer.url(&db.name))
        .max_connections(4)
        .connect()
        .await;
    match refused {
        Err(Error::Config(message)) => {
            assert!(message.contains("statement_cache(false)"), "{message}");
            assert!(message.contains("PgBouncer before 1.21"), "{message}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    // With the cache off it connects, and says what it found.
    let (logs, _guard) = common::Captured::start();
    let store = Store::builder()
        .database_url(bouncer.url(&db.name))
        .statement_cache(false)
        .max_connections(4)
        .connect()
        .await
        .unwrap();
    store.health().await.unwrap();
    assert!(
        logs.text()
            .contains("every call runs in a transaction of its own"),
        "{}",
        logs.text()
    );
    // Directly, the statement cache is fine and nothing is said.
    let (logs, _guard) = common::Captured::start();
    let direct = Store::builder()
        .database_url(db.url.clone())
        .max_connections(4)
        .connect()
        .await
        .unwrap();
    direct.health().await.unwrap();
    assert!(!logs.text().contains("pooler"), "{}", logs.text());
}

/// Two instances start together through PgBouncer on an empty database:
/// they take turns, every migration is applied once, and both see the
/// whole schema.
async fn two_instances_migrate_at_once(direct: bool) {
    let Some(bouncer) = PgBouncer::start(4).await else {
        return;
    };
    let Some(db) = empty_db().await else {
        return;
    };
    let (logs, _guard) = common::Captured::start();
    let builder = || {
        let b = Store::builder()
            .database_url(bouncer.url(&db.name))
            .statement_cache(false)
            .max_connections(3)
            .run_migrations(true);
        if direct {
            b.migration_url(db.url.clone())
        } else {
            b
        }
    };
    let (a, b) = tokio::join!(builder().connect(), builder().connect());
    let (a, b) = (a.expect("first instance"), b.expect("second instance"));
    a.verify_schema().await.unwrap();
    b.verify_schema().await.unwrap();
    assert!(
        logs.text()
            .contains("another instance is migrating; waiting for it"),
        "the instances did not take turns: {}",
        logs.text()
    );
    let sql = common::client(&db.url).await;
    let rows = sql
        .query(
            "SELECT version, count(*) FROM __diesel_schema_migrations GROUP BY version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), migration_count());
    assert!(rows.iter().all(|r| r.get::<_, i64>(1) == 1));
    let invalid: i64 = sql
        .query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0);
    // Both work through the pooler.
    let user = a
        .users()
        .create(dreamnet_db::NewUser::with_email(
            "ada@example.com".parse().unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(b.users().get(user.id).await.unwrap().id, user.id);
    // A third start finds nothing to do.
    assert!(
        builder()
            .connect()
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_migrating_through_pgbouncer_take_turns() {
    two_instances_migrate_at_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_migrating_over_a_direct_migration_url_take_turns() {
    two_instances_migrate_at_once(true).await;
}
