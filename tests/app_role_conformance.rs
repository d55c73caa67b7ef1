//! The conformance suite with the store connected as the application role
//! of a least-privilege deployment (`RoleNames`): each test gets its own
//! database cloned from the migrated template, handed to an owner role of
//! its own (as if the owner had migrated it), which grants the
//! application and read-only roles their privileges; the store under test
//! and the SQL the behaviours write "as another service" both connect as
//! the application role. Skipped, with one line saying why, when
//! PostgreSQL is unreachable; a failure under `CI=true`.

mod common;
mod conformance;

use common::roles::TestRoles;
use conformance::Harness;
use dreamnet_db::StoreBuilder;

async fn app_role(builder: StoreBuilder) -> Option<Harness> {
    let db = common::pg_db().await?;
    let roles = TestRoles::new();
    roles.setup(&db).await;
    roles.adopt(&db).await;
    let url = roles.app_url(&db);
    // The suite really runs least-privileged.
    let row = common::client(&url)
        .await
        .query_one(
            "SELECT current_user::text, has_schema_privilege(current_schema(), 'CREATE'), \
                    has_table_privilege('users', 'TRUNCATE')",
            &[],
        )
        .await
        .expect("the application role's privileges");
    assert_eq!(row.get::<_, String>(0), roles.names.app());
    assert!(!row.get::<_, bool>(1) && !row.get::<_, bool>(2));
    let store = builder
        .database_url(url.clone())
        .max_connections(10)
        .connect()
        .await
        .expect("connect as the application role");
    // The database is dropped before the roles.
    Some(Harness::new(store, (db, roles)).with_sql(url))
}

conformance_tests!(app_role);
