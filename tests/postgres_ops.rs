//! What only the PostgreSQL backend has: migrations, the exact schema the
//! existing services share, TLS modes, the pool, failure of the server,
//! keys written by other services, and the plans of the hot queries.

mod common;

use std::time::{Duration, Instant};

use diesel::Connection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::MigrationHarness;
use dreamnet_db::{
    ApiKeySecret, Backend, Error, EventFilter, KeyRejection, MIGRATIONS, NewEvent, NewUser, Store,
};
use serde_json::json;

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&common::admin_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The columns of `table` as (name, type, max length).
async fn columns(url: &str, table: &str) -> Vec<(String, String, Option<i32>)> {
    common::client(url)
        .await
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 \
             ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Takes the database at `url` all the way down: no table of the crate left.
async fn revert_all(url: &str) -> usize {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap();
        conn.revert_all_migrations(MIGRATIONS).unwrap().len()
    })
    .await
    .unwrap()
}

fn col(name: &str, ty: &str, len: Option<i32>) -> (String, String, Option<i32>) {
    (name.to_owned(), ty.to_owned(), len)
}

const TZ: &str = "timestamp with time zone";
const VC: &str = "character varying";

#[tokio::test]
async fn migrations_create_the_shared_schema_exactly() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    assert_eq!(
        columns(&db.url, "users").await,
        vec![
            col("id", "uuid", None),
            col("email", VC, Some(255)),
            col("wallet_address", VC, Some(42)),
            col("passport_tier", VC, Some(50)),
            col("created_at", TZ, None),
            col("updated_at", TZ, None),
            col("metadata", "jsonb", None),
            col("preferences", "jsonb", None),
        ]
    );
    assert_eq!(
        columns(&db.url, "api_keys").await,
        vec![
            col("id", "uuid", None),
            col("user_id", "uuid", None),
            col("service", VC, Some(100)),
            col("hashed_key", VC, Some(255)),
            col("created_at", TZ, None),
            col("last_used", TZ, None),
            // Added by this crate; nothing above is renamed or retyped.
            col("key_prefix", VC, Some(16)),
            col("expires_at", TZ, None),
            col("revoked_at", TZ, None),
        ]
    );
    assert_eq!(
        columns(&db.url, "events").await,
        vec![
            col("id", "uuid", None),
            col("user_id", "uuid", None),
            col("event_type", VC, Some(100)),
            col("payload", "jsonb", None),
            col("created_at", TZ, None),
        ]
    );
    // Added by the third migration, for `Sessions::postgres`.
    assert_eq!(
        columns(&db.url, "sessions").await,
        vec![
            col("id", VC, Some(64)),
            col("user_id", "uuid", None),
            col("data", "jsonb", None),
            col("created_at", TZ, None),
            col("expires_at", TZ, None),
        ]
    );
    let client = common::client(&db.url).await;
    let default: String = client
        .query_one(
            "SELECT column_default FROM information_schema.columns \
             WHERE table_name = 'users' AND column_name = 'passport_tier'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(default.starts_with("'visitor'"), "{default}");
}

#[tokio::test]
async fn migrations_run_up_down_and_up_again() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    // The test database is cloned already migrated: take it all the way
    // down, check it is empty, and back up.
    assert_eq!(revert_all(&db.url).await, MIGRATIONS_COUNT);
    for table in ["users", "api_keys", "events", "sessions", "media"] {
        assert!(
            columns(&db.url, table).await.is_empty(),
            "{table} left behind"
        );
    }
    let store = db.store().await;
    assert_eq!(store.migrate().await.unwrap().len(), MIGRATIONS_COUNT);
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "a second run applies nothing"
    );
    let user = store
        .users()
        .create(NewUser::with_email("back@example.com".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(store.users().get(user.id).await.unwrap(), user);
}

/// How many migrations the crate ships.
const MIGRATIONS_COUNT: usize = 30;

#[tokio::test]
async fn migrating_adopts_tables_the_services_already_have() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    // Down to nothing, then the tables as the existing services made them,
    // with rows they wrote (nulls where the crate now has defaults).
    revert_all(&db.url).await;
    let client = common::client(&db.url).await;
    client
        .batch_execute(include_str!("fixtures/services_schema.sql"))
        .await
        .unwrap();
    let legacy_key = "sk_live_legacy_0123456789";
    let legacy_hash = ApiKeySecret::parse(legacy_key).unwrap().hash();
    client
        .batch_execute(&format!(
            "INSERT INTO users (id, email, wallet_address) VALUES \
               ('00000000-0000-4000-8000-000000000001', 'Old@Example.com', '0xABCDEF0000000000000000000000000000000001');
             INSERT INTO api_keys (id, user_id, service, hashed_key, created_at) VALUES \
               ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001', 'billing', '{legacy_hash}', now());
             INSERT INTO events (id, user_id, event_type, payload) VALUES \
               ('00000000-0000-4000-8000-0000000000e1', '00000000-0000-4000-8000-000000000001', 'user.login', NULL);"
        ))
        .await
        .unwrap();

    let store = db.store().await;
    store.migrate().await.unwrap();
    let old = store
        .users()
        .find_by_email(&"old@example.com".parse().unwrap())
        .await
        .unwrap()
        .expect("the old user is found case-insensitively");
    assert_eq!(old.passport_tier.as_str(), "visitor");
    assert_eq!(old.metadata, json!({}));
    let by_wallet = store
        .users()
        .find_by_wallet(
            &"0xabcdef0000000000000000000000000000000001"
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(by_wallet.map(|u| u.id), Some(old.id));
    let key = store
        .api_keys()
        .validate_for(legacy_key, "billing")
        .await
        .unwrap();
    assert_eq!((key.user_id, key.prefix.as_deref()), (old.id, None));
    let events = store
        .events()
        .list(&EventFilter::for_user(old.id), 10, None)
        .await
        .unwrap();
    assert_eq!(events.items[0].payload, json!({}));

    // The services' own delete now succeeds for a user with a key.
    let deleted = client
        .execute("DELETE FROM users WHERE id = $1", &[&old.id])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let detached: Option<uuid::Uuid> = client
        .query_one(
            "SELECT user_id FROM events WHERE id = '00000000-0000-4000-8000-0000000000e1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(detached, None);
    assert!(matches!(
        store.api_keys().validate(legacy_key).await,
        Err(Error::Unauthorized(KeyRejection::Unknown))
    ));
}

#[tokio::test]
async fn deleting_a_user_in_plain_sql_deletes_their_keys_and_detaches_their_events() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let (user, issued) = store
        .users()
        .create_with_key(
            NewUser::with_email("leaving@example.com".parse().unwrap()),
            "billing",
            None,
        )
        .await
        .unwrap();
    store
        .api_keys()
        .issue(user.id, "search", None)
        .await
        .unwrap();
    store
        .events()
        .record_many(vec![
            NewEvent::new("user.login".parse().unwrap(), json!({})).user(user.id),
            NewEvent::new("user.logout".parse().unwrap(), json!({})).user(user.id),
        ])
        .await
        .unwrap();
    // What a service outside this crate runs.
    let client = common::client(&db.url).await;
    let deleted = client
        .execute("DELETE FROM users WHERE id = $1", &[&user.id])
        .await
        .expect("the database deletes the keys and detaches the events itself");
    assert_eq!(deleted, 1);
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[&user.id])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM api_keys WHERE user_id = $1").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM events WHERE user_id = $1").await,
        0
    );
    let detached: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE user_id IS NULL AND event_type IN ('user.login', 'user.logout')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(detached, 2, "the events stay, detached");
    assert!(matches!(
        store
            .api_keys()
            .validate(issued.secret.expose_secret())
            .await,
        Err(Error::Unauthorized(KeyRejection::Unknown))
    ));
}

/// The crate's tables as the catalog has them: columns (type, NOT NULL,
/// default), constraints and indexes with their definitions, one line each.
async fn shape(url: &str) -> Vec<String> {
    let sql = "
        SELECT format('column %s.%s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                      a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relname IN ('users', 'api_keys', 'events', 'sessions')
        UNION ALL
        SELECT format('constraint %s.%s %s %s', t.relname, c.conname, pg_get_constraintdef(c.oid), c.convalidated)
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        WHERE t.relname IN ('users', 'api_keys', 'events', 'sessions')
        UNION ALL
        SELECT format('index %s %s', pg_get_indexdef(x.indexrelid), x.indisvalid)
        FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relname IN ('users', 'api_keys', 'events', 'sessions')
        ORDER BY 1";
    common::client(url)
        .await
        .query(sql, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn every_starting_point_ends_in_the_same_schema() {
    let Some(from_nothing) = common::pg_db().await else {
        return;
    };
    let expected = shape(&from_nothing.url).await;
    let starts = [
        // The services' tables, under PostgreSQL's constraint names.
        (
            "the services' tables",
            include_str!("fixtures/services_schema.sql"),
        ),
        // The services' tables as drizzle-kit names them (the first
        // migration is exactly that).
        (
            "drizzle-kit's tables",
            include_str!("../migrations/2026-11-25-000001_create_core_tables/up.sql"),
        ),
    ];
    for (what, sql) in starts {
        let db = common::pg_db().await.unwrap();
        revert_all(&db.url).await;
        common::client(&db.url)
            .await
            .batch_execute(sql)
            .await
            .unwrap();
        db.store().await.migrate().await.unwrap();
        assert_eq!(shape(&db.url).await, expected, "from {what}");
    }
    // A database that has the whole schema already (Drizzle pushed it
    // first) but no record of the migrations: they all run again, and
    // change nothing.
    let db = common::pg_db().await.unwrap();
    common::client(&db.url)
        .await
        .batch_execute("DROP TABLE __diesel_schema_migrations")
        .await
        .unwrap();
    let applied = db.store().await.migrate().await.unwrap();
    assert_eq!(applied.len(), MIGRATIONS_COUNT);
    assert_eq!(shape(&db.url).await, expected, "from the whole schema");
}

#[tokio::test]
async fn a_migration_that_cannot_take_its_lock_gives_way_and_retries() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let user = store
        .users()
        .create(NewUser::with_email("writer@example.com".parse().unwrap()))
        .await
        .unwrap();
    // users_not_null again, as if it were still to run: it needs an ACCESS
    // EXCLUSIVE lock on users.
    let version = "20261126000006";
    db.sql(&format!(
        "DELETE FROM __diesel_schema_migrations WHERE version = '{version}'"
    ))
    .await;
    // A long read of users holds a lock that conflicts with it.
    let reader = common::client(&db.url).await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM users;")
        .await
        .unwrap();

    let (captured, _guard) = common::Captured::start();
    let migrating = {
        let store = store.clone();
        tokio::spawn(async move { store.migrate().await })
    };
    // Meanwhile the services read and write as usual: the migration gives
    // up its place in the lock queue after lock_timeout, and nothing fails.
    let writer = common::client(&db.url).await;
    let started = Instant::now();
    let mut writes = 0;
    while !(captured.text().contains("retrying") && writes >= 20) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no retry logged:\n{}",
            captured.text()
        );
        // A write stuck behind the migration would wait until the read
        // ends, which it does not: give up after a (very generous) 10 s.
        let write = async {
            writer
                .query_one("SELECT id FROM users WHERE id = $1", &[&user.id])
                .await?;
            writer
                .execute(
                    "INSERT INTO events (id, user_id, event_type, payload, created_at) \
                     VALUES (gen_random_uuid(), $1, 'service.write', '{}', now())",
                    &[&user.id],
                )
                .await
        };
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("a write waited behind the migration")
            .expect("a write failed");
        writes += 1;
    }
    assert!(
        !migrating.is_finished(),
        "it cannot finish while the read lasts"
    );
    reader.batch_execute("COMMIT").await.unwrap();
    let applied = migrating.await.unwrap().unwrap();
    assert_eq!(applied, vec![version.to_owned()]);
}

#[tokio::test]
async fn keys_are_stored_as_lowercase_sha256_and_revocation_hides_them_from_other_services() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let (_, issued) = store
        .users()
        .create_with_key(
            NewUser::with_email("hash@example.com".parse().unwrap()),
            "billing",
            None,
        )
        .await
        .unwrap();
    let client = common::client(&db.url).await;
    let stored: String = client
        .query_one(
            "SELECT hashed_key FROM api_keys WHERE id = $1",
            &[&issued.key.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, issued.secret.hash());
    assert_eq!(stored.len(), 64);
    assert!(
        stored
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert!(!stored.contains(issued.secret.expose_secret()));

    store.api_keys().revoke(issued.key.id).await.unwrap();
    // What a service outside this crate asks: no longer found.
    let other_service = client
        .query_opt(
            "SELECT id FROM api_keys WHERE hashed_key = $1",
            &[&issued.secret.hash()],
        )
        .await
        .unwrap();
    assert!(other_service.is_none());
    assert!(matches!(
        store
            .api_keys()
            .validate(issued.secret.expose_secret())
            .await,
        Err(Error::Unauthorized(KeyRejection::Revoked))
    ));
}

fn snakeoil(client_rows: &str) -> String {
    client_rows.to_owned()
}

async fn server_cert() -> Option<String> {
    let path: String = admin()
        .await
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .ok()?
        .get(0);
    let ssl: String = admin().await.query_one("SHOW ssl", &[]).await.ok()?.get(0);
    (ssl == "on" && std::fs::metadata(&path).is_ok()).then(|| snakeoil(&path))
}

/// `db.url` with `host` and extra query parameters.
fn with(db_url: &str, host: &str, params: &str) -> String {
    let mut url = url::Url::parse(db_url).unwrap();
    url.set_host(Some(host)).unwrap();
    url.set_query(Some(params));
    url.to_string()
}

async fn ssl_in_use(store: &Store, db: &common::TestDb) -> bool {
    // The store's own session is the one that wrote this row.
    let user = store
        .users()
        .create(NewUser::with_email(
            format!("tls-{}@example.com", uuid::Uuid::new_v4().simple())
                .parse()
                .unwrap(),
        ))
        .await
        .unwrap();
    let client = common::client(&db.url).await;
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.usename = 'postgres'",
            &[],
        )
        .await
        .unwrap();
    drop(user);
    !rows.is_empty() && rows.iter().all(|r| r.get::<_, bool>(0))
}

#[tokio::test]
async fn sslmode_is_honoured_as_libpq_does() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let Some(cert) = server_cert().await else {
        return common::unavailable::<()>(
            "TLS on the test server",
            "turn ssl on in postgresql.conf",
            "ssl is off",
        )
        .unwrap_or(());
    };
    let connect = common::store_of_one;

    let require = connect(with(&db.url, "127.0.0.1", "sslmode=require"))
        .await
        .expect("require connects");
    assert!(
        ssl_in_use(&require, &db).await,
        "sslmode=require must encrypt"
    );
    drop(require);

    let disable = connect(with(&db.url, "127.0.0.1", "sslmode=disable"))
        .await
        .expect("disable connects");
    assert!(
        !ssl_in_use(&disable, &db).await,
        "sslmode=disable must not encrypt"
    );
    drop(disable);

    let root = format!("sslmode=verify-full&sslrootcert={cert}");
    connect(with(&db.url, "localhost", &root))
        .await
        .expect("verify-full with the right root and name connects");
    let wrong_name = connect(with(&db.url, "127.0.0.1", &root)).await;
    assert!(
        matches!(wrong_name, Err(Error::Unavailable { .. })),
        "{wrong_name:?}"
    );
    let ca_only = format!("sslmode=verify-ca&sslrootcert={cert}");
    connect(with(&db.url, "127.0.0.1", &ca_only))
        .await
        .expect("verify-ca does not check the name");
    let public_roots = connect(with(&db.url, "localhost", "sslmode=verify-full")).await;
    assert!(
        matches!(public_roots, Err(Error::Unavailable { .. })),
        "a self-signed server certificate is not trusted by the public roots: {public_roots:?}"
    );
    let unknown = connect(with(&db.url, "localhost", "sslmode=sometimes")).await;
    assert!(matches!(unknown, Err(Error::Config(_))), "{unknown:?}");
    let missing_root = connect(with(
        &db.url,
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent.pem",
    ))
    .await;
    assert!(
        matches!(missing_root, Err(Error::Config(_))),
        "{missing_root:?}"
    );
}

#[tokio::test]
async fn a_dead_server_is_a_typed_error_without_the_password() {
    // Port 9 (discard) on loopback: nothing listens there.
    let url = "postgres://app:hunter2-secret@127.0.0.1:9/dreamnet?sslmode=disable";
    let started = Instant::now();
    let err = Store::builder()
        .database_url(url)
        .connection_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect_err("nothing listens on port 9");
    // A guard against hanging, not a measure of speed (connecting gives up
    // after 1 s).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::Unavailable {
                backend: Backend::Postgres,
                ..
            } | Error::PoolTimeout { .. }
        ),
        "{err:?}"
    );
    let shown = common::shown(&err);
    assert!(!shown.contains("hunter2"), "the password leaked: {shown}");
    let builder = Store::builder().database_url(url);
    assert!(!format!("{builder:?}").contains("hunter2"));
    let bad = Store::connect("mysql://app:hunter2-secret@127.0.0.1/db")
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::Config(_)) && !format!("{bad:?}").contains("hunter2"));
}

#[tokio::test]
async fn an_exhausted_pool_times_out_with_a_typed_error() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db
        .store_with(
            Store::builder()
                .max_connections(1)
                .connection_timeout(Duration::from_millis(300)),
        )
        .await;
    let client = common::client(&db.url).await;
    // Hold the store's only connection: an update blocks on a row lock
    // taken by another session.
    let user = store
        .users()
        .create(NewUser::with_email("busy@example.com".parse().unwrap()))
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user.id])
        .await
        .unwrap();
    let blocked = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .users()
                .update(user.id, dreamnet_db::UserUpdate::new())
                .await
        })
    };
    // Wait until the update holds the connection and waits for the lock
    // (not a fixed sleep, which a slow machine can outrun).
    let admin = admin().await;
    let since = Instant::now();
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db.name],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            !blocked.is_finished(),
            "the update did not wait for the lock"
        );
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the update never blocked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let err = store.users().get(user.id).await.unwrap_err();
    assert!(matches!(err, Error::PoolTimeout { .. }), "{err:?}");
    // A guard against hanging, not a measure of speed (the checkout gives
    // up after 300 ms).
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(err.is_transient());
    let state = store.pool_state().expect("the postgres store has a pool");
    assert_eq!((state.connections, state.in_use), (1, 1));
    assert!(state.timeouts >= 1);
    client.batch_execute("COMMIT").await.unwrap();
    blocked
        .await
        .unwrap()
        .expect("the blocked update finishes once the lock is gone");
    store.health().await.unwrap();
}

#[tokio::test]
async fn the_pool_recovers_after_the_server_drops_its_connections() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db
        .store_with(Store::builder().max_connections(4).min_idle(Some(4)))
        .await;
    let user = store
        .users()
        .create(NewUser::with_email("restart@example.com".parse().unwrap()))
        .await
        .unwrap();
    for _ in 0..8 {
        store.users().get(user.id).await.unwrap();
    }
    // What a restart does to every open session.
    let killed: i64 = admin()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each broken connection fails at most the one call it was handed to,
    // and is never handed out again.
    let mut failures = 0;
    for _ in 0..20 {
        match store.users().get(user.id).await {
            Ok(u) => assert_eq!(u.id, user.id),
            Err(Error::Unavailable { .. }) => failures += 1,
            Err(e) => panic!("unexpected error after the restart: {e:?}"),
        }
    }
    assert!(
        failures <= 4,
        "{failures} failures for 4 broken connections"
    );
    store.health().await.unwrap();
    store.users().get(user.id).await.unwrap();
}

async fn plan(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query(&format!("EXPLAIN (COSTS OFF) {sql}"), &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn hot_queries_use_their_indexes() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let client = common::client(&db.url).await;
    // A realistic spread: 2,000 users with a key each, 60,000 events of
    // 12 types over 30 days.
    client
        .batch_execute(
            "INSERT INTO users (id, email) SELECT gen_random_uuid(), 'u' || i || '@example.com' FROM generate_series(1, 2000) i;
             INSERT INTO api_keys (user_id, service, hashed_key) SELECT id, 'billing', md5(id::text) || md5(email) FROM users;
             INSERT INTO events (id, user_id, event_type, payload, created_at)
               SELECT gen_random_uuid(), u.id, 'type.' || (i % 12), jsonb_build_object('n', i % 100, 'country', 'C' || (i % 20), 'order', i),
                      now() - (i || ' minutes')::interval
               FROM generate_series(1, 60000) i
               JOIN LATERAL (SELECT id FROM users OFFSET (i % 2000) LIMIT 1) u ON true;
             INSERT INTO sessions (id, user_id, data, created_at, expires_at)
               SELECT md5(i::text) || md5((i + 1)::text), CASE WHEN i % 4 = 0 THEN NULL ELSE gen_random_uuid() END,
                      jsonb_build_object('n', i), now() - interval '1 hour',
                      now() + ((i % 1440) - 14) * interval '1 minute'
               FROM generate_series(1, 100000) i;
",
        )
        .await
        .unwrap();
    // As autovacuum would: statistics, and the GIN index's pending list merged.
    for table in ["users", "api_keys", "events", "sessions", "media"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .unwrap();
    }
    let user: uuid::Uuid = client
        .query_one("SELECT id FROM users LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let hash: String = client
        .query_one("SELECT hashed_key FROM api_keys LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let cases = [
        (
            "a user's newest events",
            format!("SELECT * FROM events WHERE user_id = '{user}' ORDER BY created_at DESC, id DESC LIMIT 51"),
            "events_user_id_created_at_idx",
        ),
        (
            "one type in a time range",
            "SELECT * FROM events WHERE event_type = 'type.3' AND created_at >= now() - interval '1 day' \
             ORDER BY created_at DESC, id DESC LIMIT 51"
                .to_owned(),
            "events_event_type_created_at_idx",
        ),
        (
            "payload containment",
            r#"SELECT * FROM events WHERE payload @> '{"order": 4242}'"#.to_owned(),
            "events_payload_idx",
        ),
        (
            "a key by hash",
            format!("SELECT * FROM api_keys WHERE hashed_key = '{hash}'"),
            "api_keys_hashed_key_key",
        ),
        (
            "a user by email",
            "SELECT * FROM users WHERE lower(email) = 'u7@example.com'".to_owned(),
            "users_email_lower_key|users_email_prefix_idx",
        ),
        (
            "a user by wallet",
            "SELECT * FROM users WHERE lower(wallet_address) = '0x0000000000000000000000000000000000000001'".to_owned(),
            "users_wallet_address_lower_key|users_wallet_address_prefix_idx",
        ),
        (
            "expired-session cleanup (1 % of 100,000 sessions)",
            "DELETE FROM sessions WHERE expires_at <= now()".to_owned(),
            "sessions_expires_at_idx",
        ),
        (
            "every session of one user",
            format!("DELETE FROM sessions WHERE user_id = '{user}'"),
            "sessions_user_id_idx",
        ),
    ];
    for (what, sql, index) in cases {
        let plan = plan(&client, &sql).await;
        println!("-- {what}:\n{plan}\n");
        // `a|b`: either index answers (an equality on `lower(email)` can
        // use the unique index or the prefix-search one).
        assert!(
            index.split('|').any(|i| plan.contains(i)),
            "{what} should use {index}:\n{plan}"
        );
    }
    // And the store's own queries answer from that data.
    let page = store
        .events()
        .list(&EventFilter::for_user(user), 50, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 30);
    store
        .events()
        .record(NewEvent::new("type.1".parse().unwrap(), json!({"n": 1})).user(user))
        .await
        .unwrap();
}
