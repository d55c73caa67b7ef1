//! Test support shared by every integration test: real PostgreSQL
//! databases, one per test, cloned from a migrated template.
//!
//! Each test gets its own database, `CREATE DATABASE … TEMPLATE`d from one
//! with the crate's migrations applied (made once per migration set), and
//! dropped when the test ends, so tests run in parallel without sharing
//! state.
//!
//! The server is `DREAMNET_TEST_DATABASE_URL`, or
//! `postgres://postgres@127.0.0.1:5432/postgres`. When it cannot be reached a
//! test skips with one line saying so, except under `CI=true`, where it fails.
#![allow(dead_code)]

pub mod pgbouncer;
pub mod private_pg;
pub mod private_redis;
pub mod roles;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use dreamnet_db::{Store, StoreBuilder};
use tokio::sync::OnceCell;

/// `err` as a log would show it: its `Display` and `Debug`, and those of
/// every error in its chain of sources.
pub fn shown(err: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = format!("{err} {err:?}");
    let mut source = err.source();
    while let Some(s) = source {
        shown.push_str(&format!(" | {s} {s:?}"));
        source = s.source();
    }
    shown
}

/// A port on 127.0.0.1 that nothing listens on now, never the same twice in
/// this process: two tests running at once cannot be handed one port (the
/// operating system may give a port just released to the next caller).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A store of one connection on `url`, or the error connecting gave.
pub async fn store_of_one(url: String) -> dreamnet_db::Result<Store> {
    Store::builder()
        .database_url(url)
        .max_connections(1)
        .connect()
        .await
}

/// The admin URL of the test server.
pub fn admin_url() -> String {
    std::env::var("DREAMNET_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether this run is CI's, where a missing service is a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips (returns `None` after one line on stderr) or, under CI, panics.
pub fn unavailable<T>(service: &str, how: &str, why: impl std::fmt::Display) -> Option<T> {
    if ci() {
        panic!("CI=true and {service} is unreachable: {why}");
    }
    eprintln!("skipped: {service} unreachable ({why}); {how}");
    None
}

/// `url` with its database name replaced by `db`.
pub fn url_for(db: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("DREAMNET_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// A plain connection to `url`, as another service would open.
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("test database connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Everything `tracing` writes on this thread, while the guard lives.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Starts capturing this thread's logs: every level, span closings
    /// (with their fields), no colours.
    pub fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        // tracing caches each call site's interest. While at most one
        // dispatcher is registered it asks only the *calling thread's*
        // default, so another test thread reaching a call site first,
        // while this thread's subscriber is the only one, caches "never"
        // and this thread's events from that site are lost. A second
        // dispatcher that lives as long as the process makes tracing ask
        // every registered dispatcher instead.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (captured, guard)
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn admin() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn template_name() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut entries: Vec<_> = walk(&dir);
    entries.sort();
    let mut h = DefaultHasher::new();
    for path in entries {
        path.strip_prefix(&dir).unwrap().hash(&mut h);
        std::fs::read(&path).unwrap().hash(&mut h);
    }
    format!("dreamnet_template_{:016x}", h.finish())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

static TEMPLATE: OnceCell<Result<String, String>> = OnceCell::const_new();

/// Creates the migrated template database once (across processes, under an
/// advisory lock) and returns its name.
async fn template() -> Result<String, String> {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let client = admin().await.map_err(|e| e.to_string())?;
            client
                .execute("SELECT pg_advisory_lock(727274)", &[])
                .await
                .map_err(|e| e.to_string())?;
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            let result = if exists {
                Ok(name.clone())
            } else {
                make_template(&client, &name).await
            };
            let _ = client
                .execute("SELECT pg_advisory_unlock(727274)", &[])
                .await;
            result
        })
        .await
        .clone()
}

async fn make_template(client: &tokio_postgres::Client, name: &str) -> Result<String, String> {
    let building = format!("{name}_building");
    // CREATE DATABASE cannot share a (implicitly transactional) batch.
    for sql in [
        format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
        format!("CREATE DATABASE {building}"),
    ] {
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("{sql}: {e:?}"))?;
    }
    {
        let store = Store::builder()
            .database_url(url_for(&building))
            .max_connections(1)
            .connect()
            .await
            .map_err(|e| format!("connecting to {building}: {e:?}"))?;
        store
            .migrate()
            .await
            .map_err(|e| format!("migrating {building}: {e:?}"))?;
    }
    // The dropped pool's connections close in the background: end any
    // that are left, then publish the template under its final name.
    for _ in 0..50 {
        let _ = client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&building],
            )
            .await;
        match client
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
        {
            Ok(()) => return Ok(name.to_owned()),
            Err(e) => {
                let exists = client
                    .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some();
                if exists {
                    return Ok(name.to_owned());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if e.code().is_none() {
                    return Err(e.to_string());
                }
            }
        }
    }
    Err(format!("could not rename {building} to {name}"))
}

/// A database of one test's own, dropped when it goes out of scope.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
}

impl TestDb {
    /// A store on this database built from `builder` (its URL is set here).
    pub async fn store_with(&self, builder: StoreBuilder) -> Store {
        builder
            .database_url(self.url.clone())
            .connect()
            .await
            .expect("connect to the test database")
    }

    /// A store on this database with the default settings.
    pub async fn store(&self) -> Store {
        self.store_with(Store::builder().max_connections(8)).await
    }

    /// Runs `sql` (statements separated by semicolons) on a connection of
    /// its own, as another service would; panics if it fails.
    pub async fn sql(&self, sql: &str) {
        client(&self.url)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(client) = admin().await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh migrated database for one test, or `None` (skipped) when
/// PostgreSQL is unreachable outside CI.
pub async fn pg_db() -> Option<TestDb> {
    let how = "start PostgreSQL or set DREAMNET_TEST_DATABASE_URL to run it";
    let client = match admin().await {
        Ok(c) => c,
        Err(e) => return unavailable("PostgreSQL", how, e),
    };
    let template = match template().await {
        Ok(t) => t,
        Err(e) => panic!("could not build the migrated template database: {e}"),
    };
    let name = format!("dreamnet_test_{}", uuid::Uuid::new_v4().simple());
    let mut last = None;
    for _ in 0..100 {
        match client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
        {
            Ok(()) => {
                return Some(TestDb {
                    url: url_for(&name),
                    name,
                });
            }
            // 55006: the template is briefly in use by another test's clone.
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("could not create a test database: {last:?}");
}

/// The test Redis: `DREAMNET_TEST_REDIS_URL`, or `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("DREAMNET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The test Redis's URL if its port accepts a connection within a second;
/// otherwise `None` (skipped, with one line saying why) or, under CI, a
/// panic. Tests that use it should give their store a key prefix of their
/// own (`StoreBuilder::cache_prefix`) so they can run in parallel.
pub async fn redis_available() -> Option<String> {
    let how = "start Redis or set DREAMNET_TEST_REDIS_URL to run it";
    let url = redis_url();
    let addr = match url::Url::parse(&url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(6379)
        ),
        Err(e) => panic!("DREAMNET_TEST_REDIS_URL is not a URL: {e}"),
    };
    match tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        Ok(Ok(_)) => Some(url),
        Ok(Err(e)) => unavailable("Redis", how, e),
        Err(_) => unavailable("Redis", how, format!("no answer from {addr} within 1 s")),
    }
}

/// `secret` with its last hex digit changed: a well-formed key that differs
/// from it whatever digit it ends in, so it is always refused as unknown.
pub fn wrong_key(secret: &str) -> String {
    let last = if secret.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &secret[..secret.len() - 1])
}
