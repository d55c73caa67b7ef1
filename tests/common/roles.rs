//! The three roles of a least-privilege deployment, for one test.
//!
//! Roles belong to the whole server, not to a database: each test names
//! its own with a unique suffix and drops them when it ends (panicking or
//! not), after its database is gone. Passwords are not needed (the test
//! server trusts loopback connections), so no URL built here holds one.

use dreamnet_db::{RoleNames, Store};

use super::{TestDb, admin};

/// Three roles of one test's own, dropped (best effort) when this goes
/// out of scope. Keep it after the [`TestDb`] (in a tuple, after it) so the
/// database is dropped first.
pub struct TestRoles {
    /// Their names.
    pub names: RoleNames,
}

impl TestRoles {
    /// Names with a unique suffix; nothing is created until
    /// [`TestRoles::setup`].
    pub fn new() -> TestRoles {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        TestRoles {
            names: RoleNames::new(
                format!("dn_owner_{suffix}"),
                format!("dn_app_{suffix}"),
                format!("dn_read_{suffix}"),
            )
            .expect("valid role names"),
        }
    }

    /// Creates the roles and sets the database's and schema's privileges
    /// in `db`, as the administrator.
    pub async fn setup(&self, db: &TestDb) {
        db.sql(&self.names.setup_sql()).await;
    }

    /// Hands what the administrator's migrations created in `db` (every
    /// table, sequence and function of the schema) to the owner role, as if
    /// the owner had migrated it; then the owner grants the two other roles
    /// their privileges. For databases cloned from the migrated template.
    pub async fn adopt(&self, db: &TestDb) {
        let owner = self.names.owner();
        db.sql(&format!(
            "DO $$ DECLARE r record; BEGIN \
               FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c \
                 WHERE c.relnamespace = current_schema()::regnamespace \
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') LOOP \
                 EXECUTE format('ALTER TABLE %s OWNER TO %I', r.rel, '{owner}'); \
               END LOOP; \
               FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p \
                 WHERE p.pronamespace = current_schema()::regnamespace LOOP \
                 EXECUTE format('ALTER FUNCTION %s OWNER TO %I', r.fn, '{owner}'); \
               END LOOP; \
             END $$"
        ))
        .await;
        let store = Store::builder()
            .database_url(self.url(db, owner))
            .max_connections(1)
            .connect()
            .await
            .expect("connect as the owner");
        store
            .grant_roles(&self.names)
            .await
            .expect("the owner grants the roles");
    }

    /// The URL of `db` for `role`.
    pub fn url(&self, db: &TestDb, role: &str) -> String {
        let mut url = url::Url::parse(&db.url).expect("a database URL");
        url.set_username(role).expect("a URL with a user name");
        url.set_password(None).expect("a URL without a password");
        url.to_string()
    }

    /// `db`'s URL for the owner, application and read-only roles.
    pub fn owner_url(&self, db: &TestDb) -> String {
        self.url(db, self.names.owner())
    }

    /// See [`TestRoles::owner_url`].
    pub fn app_url(&self, db: &TestDb) -> String {
        self.url(db, self.names.app())
    }

    /// See [`TestRoles::owner_url`].
    pub fn readonly_url(&self, db: &TestDb) -> String {
        self.url(db, self.names.readonly())
    }
}

impl Default for TestRoles {
    fn default() -> Self {
        TestRoles::new()
    }
}

impl Drop for TestRoles {
    fn drop(&mut self) {
        let names = [
            self.names.app().to_owned(),
            self.names.readonly().to_owned(),
            self.names.owner().to_owned(),
        ];
        // Drop runs inside a test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(client) = admin().await else { return };
                let Ok(rows) = client
                    .query(
                        "SELECT rolname::text FROM pg_roles WHERE rolname = ANY ($1)",
                        &[&names.to_vec()],
                    )
                    .await
                else {
                    return;
                };
                let list = rows
                    .iter()
                    .map(|r| format!("\"{}\"", r.get::<_, String>(0)))
                    .collect::<Vec<_>>()
                    .join(", ");
                if list.is_empty() {
                    return;
                }
                // Privileges on shared objects (the databases) go with DROP
                // OWNED; a database still holding something of theirs keeps
                // the roles, and the next run's names differ anyway.
                let _ = client
                    .batch_execute(&format!("DROP OWNED BY {list}; DROP ROLE {list}"))
                    .await;
            });
        })
        .join();
    }
}

/// A database of one test's own with nothing in it (not cloned from the
/// migrated template), or `None` (skipped) when PostgreSQL is unreachable
/// outside CI.
pub async fn empty_db() -> Option<TestDb> {
    let how = "start PostgreSQL or set DREAMNET_TEST_DATABASE_URL to run it";
    let client = match admin().await {
        Ok(c) => c,
        Err(e) => return super::unavailable("PostgreSQL", how, e),
    };
    let name = format!("dreamnet_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create an empty test database");
    Some(TestDb {
        url: super::url_for(&name),
        name,
    })
}
