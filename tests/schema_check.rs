//! The store notices a database that lost part of the schema its migrations
//! promise: `Store::verify_schema` names each difference, `Store::migrate`
//! rebuilds lost or invalid indexes and fails on the rest, and connecting
//! without migrating logs every difference as an error.

mod common;

use dreamnet_db::{Error, SchemaProblem, Store};

/// The problems `verify_schema` reports (none when it passes).
async fn problems(store: &Store) -> Vec<SchemaProblem> {
    match store.verify_schema().await {
        Ok(()) => Vec::new(),
        Err(Error::Schema(mismatch)) => {
            // The message names every problem too.
            let shown = mismatch.to_string();
            for p in mismatch.problems() {
                assert!(shown.contains(&p.to_string()), "{shown}");
            }
            mismatch.problems().to_vec()
        }
        Err(e) => panic!("verify_schema failed: {e:?}"),
    }
}

#[tokio::test]
async fn a_migrated_database_has_the_promised_schema() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    assert_eq!(problems(&db.store().await).await, vec![]);
    // In memory there is no schema to lose.
    Store::in_memory().verify_schema().await.unwrap();
}

#[tokio::test]
async fn a_dropped_column_index_constraint_and_not_null_are_named() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    db.sql(
        "ALTER TABLE api_keys DROP COLUMN expires_at;
             DROP INDEX events_payload_idx;
             ALTER TABLE api_keys DROP CONSTRAINT api_keys_user_id_users_id_fk;
             ALTER TABLE sessions ALTER COLUMN expires_at DROP NOT NULL;",
    )
    .await;
    let found = problems(&store).await;
    assert_eq!(
        found,
        vec![
            SchemaProblem::MissingColumn("api_keys.expires_at".into()),
            SchemaProblem::Differs {
                what: "column sessions.expires_at".into(),
                expected: "NOT NULL".into(),
                found: "nullable".into(),
            },
            SchemaProblem::MissingConstraint("api_keys_user_id_users_id_fk".into()),
            SchemaProblem::MissingIndex("events_payload_idx".into()),
        ]
    );

    // Migrating builds the lost index again (its migration is idempotent),
    // and fails on what it cannot repair, naming it.
    let err = store.migrate().await.unwrap_err();
    let Error::Schema(mismatch) = &err else {
        panic!("expected a schema error, got {err:?}");
    };
    assert_eq!(mismatch.problems(), &found[..3]);
    assert!(!err.to_string().contains("events_payload_idx"), "{err}");
}

#[tokio::test]
async fn a_foreign_key_without_its_delete_rule_is_a_difference() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    db.sql(
            "ALTER TABLE events DROP CONSTRAINT events_user_id_users_id_fk,
                 ADD CONSTRAINT events_user_id_users_id_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
    )
    .await;
    assert_eq!(
        problems(&store).await,
        vec![SchemaProblem::Differs {
            what: "constraint events_user_id_users_id_fk".into(),
            expected: "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE SET NULL".into(),
            found: "FOREIGN KEY (user_id) REFERENCES users(id)".into(),
        }]
    );
    // The right rule, never validated: rows older than it were not checked.
    db.sql(
            "ALTER TABLE events DROP CONSTRAINT events_user_id_users_id_fk,
                 ADD CONSTRAINT events_user_id_users_id_fk FOREIGN KEY (user_id) REFERENCES users (id)
                     ON DELETE SET NULL NOT VALID;",
    )
    .await;
    assert_eq!(
        problems(&store).await,
        vec![SchemaProblem::NotValidated(
            "events_user_id_users_id_fk".into()
        )]
    );
}

/// Leaves `api_keys_hashed_key_key` INVALID, as a concurrent build that
/// failed does: rebuilt while two keys share a hash.
async fn break_hash_index(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "DROP INDEX api_keys_hashed_key_key;
             INSERT INTO users (id, email) VALUES ('00000000-0000-4000-8000-000000000001', 'twice@example.com');
             INSERT INTO api_keys (id, user_id, service, hashed_key) VALUES
               ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001', 'billing', 'same'),
               ('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-000000000001', 'billing', 'same');",
        )
        .await
        .unwrap();
    let failed = client
        .batch_execute(
            "CREATE UNIQUE INDEX CONCURRENTLY api_keys_hashed_key_key ON api_keys (hashed_key)",
        )
        .await;
    assert!(failed.is_err(), "duplicate hashes make the build fail");
    client
        .batch_execute("DELETE FROM api_keys WHERE id = '00000000-0000-4000-8000-0000000000a2'")
        .await
        .unwrap();
}

async fn hash_index_is_valid(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'api_keys_hashed_key_key'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn an_index_a_failed_build_left_invalid_is_built_again_on_the_next_start() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let client = common::client(&db.url).await;
    break_hash_index(&client).await;
    assert!(!hash_index_is_valid(&client).await);
    let store = db.store().await;
    assert_eq!(
        problems(&store).await,
        vec![SchemaProblem::InvalidIndex(
            "api_keys_hashed_key_key".into()
        )]
    );
    // Its migration is recorded as applied: the invalid index is dropped and
    // the migration's build runs again.
    assert_eq!(store.migrate().await.unwrap(), Vec::<String>::new());
    assert!(hash_index_is_valid(&client).await);
    assert_eq!(problems(&store).await, vec![]);
}

#[tokio::test]
async fn an_interrupted_index_migration_is_completed_on_the_next_start() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let client = common::client(&db.url).await;
    break_hash_index(&client).await;
    // The build failed before its migration was recorded.
    let version = "20261126000012";
    db.sql(&format!(
        "DELETE FROM __diesel_schema_migrations WHERE version = '{version}'"
    ))
    .await;
    let store = db.store().await;
    assert_eq!(
        problems(&store).await,
        vec![SchemaProblem::PendingMigration(version.into())]
    );
    assert_eq!(store.migrate().await.unwrap(), vec![version.to_owned()]);
    assert!(hash_index_is_valid(&client).await);
}

#[tokio::test]
async fn connecting_to_a_damaged_database_logs_an_error_naming_the_damage() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    db.sql("ALTER TABLE api_keys DROP COLUMN expires_at").await;
    let (captured, _guard) = common::Captured::start();
    // The store is still handed out: the service decides.
    let store = db.store().await;
    let out = captured.text();
    assert!(
        out.contains("ERROR") && out.contains("column api_keys.expires_at is missing"),
        "{out}"
    );
    assert!(store.verify_schema().await.is_err());
}

#[tokio::test]
async fn connecting_before_migrating_warns_of_pending_migrations() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    db.sql("DELETE FROM __diesel_schema_migrations WHERE version = '20261126000019'")
        .await;
    let (captured, _guard) = common::Captured::start();
    let store = db.store().await;
    let out = captured.text();
    assert!(
        out.contains("WARN") && out.contains("1 of the crate's migrations are not applied"),
        "{out}"
    );
    assert!(!out.contains("ERROR"), "{out}");
    assert_eq!(
        store.migrate().await.unwrap(),
        vec!["20261126000019".to_owned()]
    );
}
