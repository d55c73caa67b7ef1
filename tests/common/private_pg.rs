//! A PostgreSQL server of one test's own: `initdb` into a temporary
//! directory, a spare port on 127.0.0.1, started, stopped and restarted by
//! the test with `pg_ctl`, removed when dropped.
//!
//! For tests that must do to a server what the machine's shared one must
//! never suffer: restart it, crash it, turn TLS on, replicate it, put a
//! pooler in front of it.
//!
//! The binaries are those of `pg_config --bindir`, or else of the newest
//! `/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root, so
//! under root every binary runs as the `postgres` OS user (`runuser`), which
//! owns the directory. Without the binaries (or, under root, without a
//! `postgres` user) a test skips with one line saying so, and fails under
//! `CI=true`.
//!
//! The server trusts every local TCP connection (`initdb --auth=trust`);
//! [`PrivatePg::hba`] puts stricter lines first. Its superuser is
//! `postgres`.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use super::free_port;

/// How `pg_ctl stop` ends the server (its `-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Ends every session, checkpoints, and exits: an orderly restart.
    Fast,
    /// Exits at once without a checkpoint, as a crash does; the next start
    /// replays the WAL.
    Immediate,
}

impl StopMode {
    fn arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A private PostgreSQL server; stopped and deleted on drop.
pub struct PrivatePg {
    bindir: PathBuf,
    /// Owned by the server's OS user: `data/`, the log.
    base: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Under root: run every binary as the `postgres` OS user.
    as_postgres: bool,
    running: bool,
    started_once: bool,
}

impl PrivatePg {
    /// The binaries, a directory owned by the server's user, a spare
    /// port: everything but the data directory.
    fn prepare() -> Option<PrivatePg> {
        let how = "install PostgreSQL's server binaries (initdb, pg_ctl) to run it";
        let bindir = match bindir() {
            Ok(dir) => dir,
            Err(why) => return super::unavailable("initdb", how, why),
        };
        // Under root: the postgres user's uid and gid.
        let owner = if output("id", &["-u"]).trim() == "0" {
            let runuser = std::process::Command::new("runuser")
                .arg("--version")
                .output();
            if !runuser.is_ok_and(|o| o.status.success()) {
                return super::unavailable(
                    "runuser",
                    "install util-linux to run PostgreSQL as root",
                    "running as root and runuser is missing",
                );
            }
            match (postgres_id("-u"), postgres_id("-g")) {
                (Some(uid), Some(gid)) => Some((uid, gid)),
                _ => {
                    return super::unavailable(
                        "the postgres OS user",
                        "create it (useradd postgres) to run PostgreSQL as root",
                        "running as root and there is no postgres user",
                    );
                }
            }
        } else {
            None
        };
        let base =
            std::env::temp_dir().join(format!("dreamnet-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&base).expect("create the private server's directory");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&base, Some(uid), Some(gid)).unwrap();
        }
        Some(PrivatePg {
            data: base.join("data"),
            log: base.join("server.log"),
            base,
            bindir,
            port: free_port(),
            as_postgres: owner.is_some(),
            running: false,
            started_once: false,
        })
    }

    /// Runs `initdb` (the server is not started: configure it, then
    /// [`PrivatePg::start`]). `None` after one line on stderr when the
    /// binaries are missing, or a panic under `CI=true`.
    pub async fn init() -> Option<PrivatePg> {
        let mut pg = PrivatePg::prepare()?;
        let data = pg.data.to_str().unwrap().to_owned();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        .await;
        pg.configure(&[
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "max_connections = 40",
            "shared_buffers = 16MB",
        ]);
        pg.set_port(pg.port);
        Some(pg)
    }

    /// A streaming replica of `primary` (which must be running), started:
    /// `pg_basebackup -R` (so it streams from the primary over TCP) into a
    /// directory of its own, on a spare port, read-only (`hot_standby`).
    /// Databases made on the primary before or after appear on it too.
    pub async fn replica_of(primary: &PrivatePg) -> Option<PrivatePg> {
        let mut pg = PrivatePg::prepare()?;
        if !pg.bindir.join("pg_basebackup").is_file() {
            return super::unavailable(
                "pg_basebackup",
                "install PostgreSQL's server binaries to run it",
                "pg_basebackup is missing beside initdb",
            );
        }
        let data = pg.data.to_str().unwrap().to_owned();
        let port = primary.port.to_string();
        pg.run(
            "pg_basebackup",
            &[
                "-D",
                &data,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )
        .await;
        pg.configure(&["hot_standby = on"]);
        pg.set_port(pg.port);
        pg.start().await;
        Some(pg)
    }

    /// [`PrivatePg::init`], `conf` added to `postgresql.conf`, then started.
    pub async fn started(conf: &[&str]) -> Option<PrivatePg> {
        let mut pg = PrivatePg::init().await?;
        pg.configure(conf);
        pg.start().await;
        Some(pg)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A URL for `user` (and `password`) on database `db`, on 127.0.0.1.
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let auth = match password {
            Some(p) => format!("{user}:{p}"),
            None => user.to_owned(),
        };
        format!("postgres://{auth}@127.0.0.1:{}/{db}", self.port)
    }

    /// The superuser's URL on the `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url("postgres", None, "postgres")
    }

    /// A plain (no TLS) superuser connection.
    pub async fn admin(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the private server: {e}\n{}", self.log()));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Creates database `name` and returns the superuser's URL for it.
    pub async fn create_database(&self, name: &str) -> String {
        self.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        self.url("postgres", None, name)
    }

    /// Appends `lines` to `postgresql.conf` (later lines win); they take
    /// effect at the next start, or reload for those that allow it.
    pub fn configure(&self, lines: &[&str]) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .unwrap();
        for line in lines {
            writeln!(f, "{line}").unwrap();
        }
    }

    /// Puts `lines` first in `pg_hba.conf` (the first matching line
    /// decides); they take effect at the next start or reload.
    pub fn hba(&self, lines: &[&str]) {
        let path = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{}\n{old}", lines.join("\n"))).unwrap();
    }

    /// Writes `name` into the data directory, readable by the server's user
    /// only (as PostgreSQL wants of a private key), and returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.data.join(name);
        let _ = std::fs::remove_file(&path);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(contents))
            .unwrap();
        let owner = std::fs::metadata(&self.data).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        path
    }

    /// Starts the server and waits until it accepts connections. The first
    /// start moves to another spare port if its port was taken meanwhile.
    pub async fn start(&mut self) {
        assert!(!self.running, "the private server is already running");
        for _ in 0..5 {
            let data = self.data.to_str().unwrap().to_owned();
            let log = self.log.to_str().unwrap().to_owned();
            let out = self
                .try_run(
                    "pg_ctl",
                    &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
                )
                .await;
            if out.status.success() {
                self.running = true;
                self.started_once = true;
                return;
            }
            let log = self.log();
            if !self.started_once && log.contains("could not bind") {
                self.set_port(free_port());
                continue;
            }
            panic!("pg_ctl start failed: {}\n{log}", describe(&out));
        }
        panic!("no spare port for the private server:\n{}", self.log());
    }

    /// Stops the server and waits until it has exited.
    pub async fn stop(&mut self, mode: StopMode) {
        let data = self.data.to_str().unwrap().to_owned();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", mode.arg(), "-w", "-t", "60", "stop"],
        )
        .await;
        self.running = false;
    }

    /// Stops the server in `mode`, then starts it again on the same port.
    pub async fn restart(&mut self, mode: StopMode) {
        self.stop(mode).await;
        self.start().await;
    }

    /// Asks the running server to reread its configuration files
    /// (`pg_ctl reload`); it does so asynchronously.
    pub async fn reload(&self) {
        let data = self.data.to_str().unwrap().to_owned();
        self.run("pg_ctl", &["-D", &data, "reload"]).await;
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn set_port(&mut self, port: u16) {
        self.port = port;
        self.configure(&[&format!("port = {port}")]);
    }

    /// `program` of the server's binaries with `args`, as the server's user.
    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            std::process::Command::new(path)
        };
        // The server's user must be able to enter the working directory.
        cmd.args(args).current_dir(&self.base);
        cmd
    }

    async fn try_run(&self, program: &str, args: &[&str]) -> Output {
        tokio::process::Command::from(self.command(program, args))
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let out = self.try_run(program, args).await;
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}",
            describe(&out),
            self.log()
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.running {
            let data = self.data.to_str().unwrap().to_owned();
            let _ = self
                .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, or the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bindir() -> Result<PathBuf, String> {
    let complete = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && complete(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        "neither `pg_config --bindir` nor /usr/lib/postgresql/*/bin has initdb and pg_ctl"
            .to_owned()
    })
}

/// `id <flag> postgres`: the user's uid (`-u`) or gid (`-g`), if it exists.
fn postgres_id(flag: &str) -> Option<u32> {
    let out = std::process::Command::new("id")
        .args([flag, "postgres"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn output(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}; {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
