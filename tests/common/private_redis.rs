//! A `redis-server` of a test's own, on a spare port, for tests that kill,
//! freeze or restart it (never the machine's shared Redis).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// A private Redis persisting every write (append-only file, fsync always),
/// so that what it held survives a kill and restart, stale entries included.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one, or `None` (skipped) without `redis-server` outside CI.
    pub async fn start() -> Option<PrivateRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return super::unavailable(
                "redis-server",
                "install Redis (redis-server on PATH) to run it",
                "not on PATH",
            );
        }
        let dir = std::env::temp_dir().join(format!("dreamnet-redis-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = PrivateRedis {
            port: super::free_port(),
            dir,
            child: None,
        };
        redis.spawn().await;
        Some(redis)
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and directory, and waits
    /// until it answers `PING` with `PONG`: a restarted Redis accepts
    /// connections while it still loads its append-only file, and answers
    /// every command with `LOADING` until it is done.
    pub async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let start = Instant::now();
        loop {
            let Err(last) = ping(&addr).await else {
                return;
            };
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server on {addr} never answered PONG: {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends it a signal (`-STOP`, `-CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }
}

/// One `PING` on a fresh connection: `Ok` only for `+PONG`.
async fn ping(addr: &str) -> Result<(), String> {
    let io = async {
        let mut conn = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        conn.write_all(b"PING\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        let n = conn.read(&mut buf).await.map_err(|e| e.to_string())?;
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        if reply.starts_with("+PONG") {
            Ok(())
        } else {
            Err(reply.trim().to_owned())
        }
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .unwrap_or_else(|_| Err("no answer in 2 s".to_owned()))
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
