//! Least-privilege roles (`RoleNames`): the owner migrates and grants; the
//! application role reads and writes the crate's tables and may do nothing
//! else (no DDL, no `TRUNCATE`, no change to the audit log); the read-only
//! role runs every list and count and no write. Refusals come back as
//! `Error::PermissionDenied`. Each test has a database and roles of its own
//! (`common::roles`). The whole conformance suite as the application role
//! is `tests/app_role_conformance.rs`.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use common::TestDb;
use common::roles::{TestRoles, empty_db};
use dreamnet_db::{
    Error, EventFilter, EventSearch, Funnel, KeyCheck, KeyPolicy, MediaStorage, NewEvent, NewMedia,
    NewSession, NewUser, Period, Retention, RoleNames, Sessions, Store, TimeBucket, TimeRange,
    UserUpdate,
};
use serde_json::json;
use tokio_postgres::error::SqlState;

/// A generous bound: a refusal must come back, never hang.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn store_as(url: String) -> Store {
    Store::builder()
        .database_url(url)
        .max_connections(4)
        .media_storage(MediaStorage::in_memory())
        .connect()
        .await
        .expect("connect")
}

#[track_caller]
fn expect_denied<T: std::fmt::Debug>(what: &str, result: dreamnet_db::Result<T>) {
    match result {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("{what}: expected PermissionDenied, got {other:?}"),
    }
}

/// Runs `sql` as the role of `client`; it must be refused for want of a
/// privilege (SQLSTATE 42501).
async fn expect_refused(client: &tokio_postgres::Client, sql: &str) {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql}: should be refused"));
    assert_eq!(
        e.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{sql}: {e:?}"
    );
}

/// The same through a diesel-async connection, classified by the crate.
async fn expect_denied_through_diesel(url: &str, sql: &str) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .expect("a diesel connection");
    let e = conn
        .batch_execute(sql)
        .await
        .expect_err("should be refused");
    expect_denied(sql, Err::<(), _>(Error::from(e)));
}

/// A database migrated by the administrator and handed to the owner of
/// fresh roles, which granted the others their privileges.
async fn granted_db() -> Option<(TestDb, TestRoles)> {
    let db = common::pg_db().await?;
    let roles = TestRoles::new();
    roles.setup(&db).await;
    roles.adopt(&db).await;
    Some((db, roles))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_migrates_and_the_app_reads_and_writes_but_changes_no_schema() {
    let Some(db) = empty_db().await else { return };
    let roles = TestRoles::new();
    roles.setup(&db).await;

    // The owner, not a superuser, applies every migration and grants.
    let owner = Store::builder()
        .database_url(roles.owner_url(&db))
        .max_connections(2)
        .run_migrations(true)
        .grant_roles(roles.names.clone())
        .connect()
        .await
        .expect("the owner migrates");
    owner.verify_schema().await.unwrap();

    // The application role: every repository works.
    let app = store_as(roles.app_url(&db)).await;
    let user = app
        .users()
        .create(NewUser::with_email("ada@example.com".parse().unwrap()))
        .await
        .unwrap();
    app.users()
        .update(
            user.id,
            UserUpdate::new().merge_preferences(json!({"theme": "dark"})),
        )
        .await
        .unwrap();
    let issued = app
        .api_keys()
        .issue_with(user.id, "billing", None, KeyPolicy::new().credits(2))
        .await
        .unwrap();
    // The credits spend runs the crate's SQL function.
    let verdict = app
        .api_keys()
        .verify(issued.secret.expose_secret(), &KeyCheck::new())
        .await
        .unwrap();
    assert_eq!(verdict.credits_remaining, Some(1), "{verdict:?}");
    app.api_keys().flush_usage().await.unwrap();
    app.events()
        .record(NewEvent::new("user.login".parse().unwrap(), json!({})).user(user.id))
        .await
        .unwrap();
    let sessions = Sessions::postgres(&app).unwrap();
    let created = sessions
        .create(NewSession::new(Duration::from_secs(60)).user(user.id))
        .await
        .unwrap();
    assert!(sessions.load(&created.id).await.unwrap().is_some());
    app.api_keys().rotate(issued.key.id, None).await.unwrap();
    // Nothing is pending, so migrating as the application role has nothing
    // to do and needs no privilege.
    assert_eq!(app.migrate().await.unwrap(), Vec::<String>::new());
    app.verify_schema().await.unwrap();
    app.users().delete(user.id).await.unwrap();

    // No DDL, no TRUNCATE, no write to the migrations' bookkeeping.
    let client = common::client(&roles.app_url(&db)).await;
    for sql in [
        "CREATE TABLE app_owned (id int)",
        "DROP TABLE users",
        "ALTER TABLE users ADD COLUMN nickname text",
        "CREATE INDEX users_nickname_idx ON users (email)",
        "TRUNCATE events",
        "TRUNCATE users CASCADE",
        "DELETE FROM __diesel_schema_migrations",
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('99999999999999')",
        "DROP FUNCTION dreamnet_spend_key_credits(uuid, bigint, timestamptz)",
        "CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ] {
        expect_refused(&client, sql).await;
    }
    // Through the crate's error classification: the typed error.
    let url = roles.app_url(&db);
    expect_denied_through_diesel(&url, "TRUNCATE events").await;
    expect_denied_through_diesel(&url, "DROP TABLE users").await;
    expect_denied_through_diesel(&url, "CREATE TABLE app_owned (id int)").await;
    // Granting is the owner's: the application role is refused.
    expect_denied(
        "grant_roles as the app",
        app.grant_roles(&roles.names).await,
    );

    drop((app, owner));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_cannot_migrate_and_is_told_so_at_once() {
    let Some(db) = empty_db().await else { return };
    let roles = TestRoles::new();
    roles.setup(&db).await;
    let started = std::time::Instant::now();
    let connected = tokio::time::timeout(
        HANG_GUARD,
        Store::builder()
            .database_url(roles.app_url(&db))
            .max_connections(1)
            .run_migrations(true)
            .connect(),
    )
    .await
    .expect("refused within the hang guard, not retried");
    expect_denied("run_migrations(true) as the app", connected);
    assert!(started.elapsed() < HANG_GUARD);
    // Nothing was created.
    let client = common::client(&db.url).await;
    let created: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 0);

    // The read-only role is refused the same way.
    let refused = Store::builder()
        .database_url(roles.readonly_url(&db))
        .max_connections(1)
        .run_migrations(true)
        .connect()
        .await;
    expect_denied("run_migrations(true) as the read-only role", refused);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_append_only_for_the_app() {
    let Some((db, roles)) = granted_db().await else {
        return;
    };
    // A later migration of the owner's adds the audit log and a table of
    // chain heads: small stand-ins replace the audit migration's, so that
    // the tables are created after the grants, as a later migration's are.
    let owner = common::client(&roles.owner_url(&db)).await;
    owner
        .batch_execute(
            "DROP TABLE audit_log, audit_chain_heads; \
             CREATE TABLE audit_log (id bigserial PRIMARY KEY, action text NOT NULL, \
                 at timestamptz NOT NULL DEFAULT now()); \
             CREATE TABLE audit_chain_heads (chain text PRIMARY KEY, head bigint NOT NULL)",
        )
        .await
        .unwrap();
    let app = common::client(&roles.app_url(&db)).await;
    // Before the grants run again, the default privileges give the app
    // SELECT and INSERT on new tables, never more.
    app.batch_execute("INSERT INTO audit_log (action) VALUES ('before grants')")
        .await
        .unwrap();
    expect_refused(&app, "UPDATE audit_log SET action = 'x'").await;
    expect_refused(&app, "DELETE FROM audit_log").await;
    expect_refused(
        &app,
        "UPDATE audit_chain_heads SET head = 1 WHERE chain = 'x'",
    )
    .await;

    let owner_store = store_as(roles.owner_url(&db)).await;
    owner_store.grant_roles(&roles.names).await.unwrap();
    // Twice is the same as once.
    owner_store.grant_roles(&roles.names).await.unwrap();

    app.batch_execute(
        "INSERT INTO audit_log (action) VALUES ('user.created'); \
         INSERT INTO audit_chain_heads VALUES ('main', 1); \
         UPDATE audit_chain_heads SET head = 2 WHERE chain = 'main'",
    )
    .await
    .unwrap();
    let rows: i64 = app
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
    for sql in [
        "UPDATE audit_log SET action = 'forged'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER ALL",
        "DROP TABLE audit_log",
        "INSERT INTO audit_log (action) VALUES ('x') ON CONFLICT (id) DO UPDATE SET action = 'y'",
    ] {
        expect_refused(&app, sql).await;
    }
    let url = roles.app_url(&db);
    expect_denied_through_diesel(&url, "UPDATE audit_log SET action = 'forged'").await;
    expect_denied_through_diesel(&url, "DELETE FROM audit_log").await;
    expect_denied_through_diesel(&url, "TRUNCATE audit_log").await;
    // The records are as written.
    let actions: Vec<String> = owner
        .query("SELECT action FROM audit_log ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["before grants", "user.created"]);

    // The read-only role reads it and writes nothing.
    let readonly = common::client(&roles.readonly_url(&db)).await;
    readonly
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap();
    expect_refused(&readonly, "INSERT INTO audit_log (action) VALUES ('x')").await;
    expect_refused(&readonly, "UPDATE audit_chain_heads SET head = 3").await;

    // Retention and erasure are the owner's.
    owner
        .batch_execute("DELETE FROM audit_log WHERE action = 'before grants'")
        .await
        .unwrap();
    drop(owner_store);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readonly_role_lists_and_counts_and_never_writes() {
    let Some((db, roles)) = granted_db().await else {
        return;
    };
    let app = store_as(roles.app_url(&db)).await;
    let ada = app
        .users()
        .create(
            NewUser::with_email("ada@example.com".parse().unwrap())
                .metadata(json!({"display_name": "Ada Lovelace"})),
        )
        .await
        .unwrap();
    let issued = app.api_keys().issue(ada.id, "billing", None).await.unwrap();
    let login = "user.login".parse().unwrap();
    let signup = "user.signup".parse().unwrap();
    app.events()
        .record_many(vec![
            NewEvent::new(signup, json!({"country": "uk"})).user(ada.id),
            NewEvent::new(
                "user.login".parse().unwrap(),
                json!({"country": "uk", "note": "payment failed"}),
            )
            .user(ada.id),
        ])
        .await
        .unwrap();
    let file = app
        .media()
        .upload_reader(NewMedia::for_user(ada.id, "notes.txt"), &b"plain text"[..])
        .await
        .unwrap();

    let readonly = store_as(roles.readonly_url(&db)).await;
    let now = Utc::now();
    let range = TimeRange::between(now - TimeDelta::days(2), now + TimeDelta::days(1));
    // Every list and count.
    assert_eq!(
        readonly.users().list(10, None).await.unwrap().items.len(),
        1
    );
    assert_eq!(readonly.users().get(ada.id).await.unwrap().id, ada.id);
    assert!(
        readonly
            .users()
            .find_by_email(&"ADA@example.com".parse().unwrap())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        readonly
            .api_keys()
            .list_for_user(ada.id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        readonly.api_keys().get(issued.key.id).await.unwrap().id,
        issued.key.id
    );
    readonly
        .api_keys()
        .usage(issued.key.id, TimeBucket::Day, range)
        .await
        .unwrap();
    assert_eq!(
        readonly
            .events()
            .list(&EventFilter::for_user(ada.id), 10, None)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(readonly.events().count(&login, range).await.unwrap(), 1);
    readonly
        .events()
        .count_by_bucket(TimeBucket::Day, range, None)
        .await
        .unwrap();
    let analytics = readonly.analytics();
    analytics
        .active_users(Period::Day, range, None)
        .await
        .unwrap();
    analytics
        .funnel(&Funnel::new(
            [
                "user.signup".parse().unwrap(),
                "user.login".parse().unwrap(),
            ],
            TimeDelta::days(1),
            range,
        ))
        .await
        .unwrap();
    analytics
        .retention(&Retention::new(Period::Day, range))
        .await
        .unwrap();
    analytics
        .breakdown("country", range, None, 5)
        .await
        .unwrap();
    assert_eq!(analytics.top_event_types(range, 5).await.unwrap().len(), 2);
    assert_eq!(
        analytics
            .search_events(&EventSearch::new("payment failed"), 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        analytics
            .search_users("ada", 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        readonly
            .media()
            .list(ada.id, 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    readonly.verify_schema().await.unwrap();
    readonly.health().await.unwrap();
    let sessions = Sessions::postgres(&readonly).unwrap();
    assert!(
        sessions
            .load(&dreamnet_db::SessionId::parse(&"a".repeat(64)).unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // No write.
    let users_before = app.users().list(10, None).await.unwrap().items;
    let events_before = app
        .events()
        .list(&EventFilter::all(), 10, None)
        .await
        .unwrap()
        .items;
    let keys_before = app.api_keys().list_for_user(ada.id).await.unwrap();
    expect_denied(
        "create",
        readonly
            .users()
            .create(NewUser::with_email("bob@example.com".parse().unwrap()))
            .await,
    );
    expect_denied(
        "update",
        readonly
            .users()
            .update(ada.id, UserUpdate::new().merge_preferences(json!({"a": 1})))
            .await,
    );
    expect_denied("delete", readonly.users().delete(ada.id).await);
    expect_denied(
        "issue",
        readonly.api_keys().issue(ada.id, "billing", None).await,
    );
    expect_denied("revoke", readonly.api_keys().revoke(issued.key.id).await);
    expect_denied(
        "rotate",
        readonly.api_keys().rotate(issued.key.id, None).await,
    );
    expect_denied("disable", readonly.api_keys().disable(issued.key.id).await);
    expect_denied(
        "record",
        readonly
            .events()
            .record(NewEvent::new("user.login".parse().unwrap(), json!({})))
            .await,
    );
    expect_denied(
        "record_many",
        readonly
            .events()
            .record_many(vec![NewEvent::new(
                "user.login".parse().unwrap(),
                json!({}),
            )])
            .await,
    );
    expect_denied(
        "purge_before",
        readonly
            .events()
            .purge_before(Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap())
            .run()
            .await,
    );
    expect_denied(
        "upload",
        readonly
            .media()
            .upload_reader(NewMedia::for_user(ada.id, "x.txt"), &b"text"[..])
            .await,
    );
    expect_denied("delete media", readonly.media().delete(file.id).await);
    expect_denied(
        "create session",
        sessions
            .create(NewSession::new(Duration::from_secs(60)).user(ada.id))
            .await,
    );
    expect_denied("grant_roles", readonly.grant_roles(&roles.names).await);
    assert_eq!(
        app.users().list(10, None).await.unwrap().items,
        users_before
    );
    assert_eq!(
        app.events()
            .list(&EventFilter::all(), 10, None)
            .await
            .unwrap()
            .items,
        events_before
    );
    assert_eq!(
        app.api_keys().list_for_user(ada.id).await.unwrap(),
        keys_before
    );
    drop((app, readonly));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_refused_for_roles_with_more_than_their_grants() {
    let Some((db, roles)) = granted_db().await else {
        return;
    };
    // An application role that inherits the owner's privileges could do
    // DDL whatever is granted: the grants refuse to run.
    db.sql(&format!(
        "GRANT \"{}\" TO \"{}\"",
        roles.names.owner(),
        roles.names.app()
    ))
    .await;
    let owner = store_as(roles.owner_url(&db)).await;
    match owner.grant_roles(&roles.names).await {
        Err(e @ Error::Database { .. }) => {
            let shown = common::shown(&e);
            assert!(shown.contains("privileges beyond its grants"), "{shown}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(owner);
    drop(db);
}

#[test]
fn role_names_are_validated_and_never_change_the_sql() {
    for bad in ["", "x\"; DROP TABLE users; --", "a'b", "pg_read_all_data"] {
        assert!(
            matches!(
                RoleNames::new(bad, "app", "read"),
                Err(Error::InvalidInput {
                    field: dreamnet_db::Field::Role,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    let roles = RoleNames::new("dreamnet_owner", "dreamnet_app", "dreamnet_readonly").unwrap();
    for sql in [roles.setup_sql(), roles.grant_sql()] {
        assert!(sql.contains("'dreamnet_owner'") && sql.contains("'dreamnet_app'"));
        assert!(!sql.contains("{{"));
        assert!(!sql.to_lowercase().contains("password '"));
    }
}
