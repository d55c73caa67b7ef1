//! A PgBouncer of a test's own, in transaction mode, on a spare port, in
//! front of the test server: every database name goes to the database of
//! that name on `127.0.0.1:5432` (or the host and port of
//! `DREAMNET_TEST_DATABASE_URL`). Stopped when dropped.
//!
//! Needs the `pgbouncer` binary (Debian's package; `.ci/run` installs it);
//! without it a test skips with one line, or fails under `CI=true`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PgBouncer.
pub struct PgBouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DREAMNET_TEST_PGBOUNCER") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgBouncer {
    /// Starts one with `pool_mode = transaction` and `default_pool_size`
    /// server connections per database; `None` (skipped) when PgBouncer is
    /// not installed, outside CI.
    pub async fn start(pool_size: u32) -> Option<PgBouncer> {
        let Some(bin) = binary() else {
            return super::unavailable(
                "PgBouncer",
                "install it (apt-get install pgbouncer) or set DREAMNET_TEST_PGBOUNCER to run it",
                "no pgbouncer binary",
            );
        };
        let server = url::Url::parse(&super::admin_url()).expect("a URL");
        let host = server.host_str().unwrap_or("127.0.0.1").to_owned();
        let server_port = server.port().unwrap_or(5432);
        let user = if server.username().is_empty() {
            "postgres".to_owned()
        } else {
            server.username().to_owned()
        };
        let port = super::free_port();
        let dir =
            std::env::temp_dir().join(format!("dreamnet-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={server_port} user={user}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 1000\n\
                 server_reset_query =\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n",
                users = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&bin);
        // PgBouncer refuses to run as root; it drops to `postgres`.
        if running_as_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let mut bouncer = PgBouncer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(bouncer);
            }
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                panic!("pgbouncer exited ({status}): {}", bouncer.log());
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 10 s: {}",
                bouncer.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL to database `db` through it.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
