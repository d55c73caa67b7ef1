//! Media test support: one harness per object store (memory, a local
//! folder of the test's own, S3 on loopback), an object store wrapper that
//! fails or stops on purpose, and a private S3 server (moto) a test can
//! kill.
#![allow(dead_code)]

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use dreamnet_db::object_store::path::Path;
use dreamnet_db::object_store::{
    self, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use dreamnet_db::{ManualClock, MediaStorage, Store, StoreBuilder};
use futures_util::stream::{BoxStream, StreamExt};

use crate::common;

/// The S3 server the tests use: `DREAMNET_TEST_S3_ENDPOINT` (default
/// `http://127.0.0.1:5000`, where `.ci/run` starts moto), bucket
/// `DREAMNET_TEST_S3_BUCKET` (default `dreamnet-test`, created if missing),
/// keys `DREAMNET_TEST_S3_ACCESS_KEY_ID` / `DREAMNET_TEST_S3_SECRET_ACCESS_KEY`
/// (default `test` / `test`), region `us-east-1`.
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[cfg(feature = "s3")]
impl S3Env {
    pub fn from_env() -> Self {
        S3Env {
            endpoint: env_or("DREAMNET_TEST_S3_ENDPOINT", "http://127.0.0.1:5000"),
            bucket: env_or("DREAMNET_TEST_S3_BUCKET", "dreamnet-test"),
            access_key: env_or("DREAMNET_TEST_S3_ACCESS_KEY_ID", "test"),
            secret_key: env_or("DREAMNET_TEST_S3_SECRET_ACCESS_KEY", "test"),
        }
    }

    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint", self.endpoint.clone()),
            ("access_key_id", self.access_key.clone()),
            ("secret_access_key", self.secret_key.clone()),
            ("region", "us-east-1".to_owned()),
            ("allow_http", "true".to_owned()),
        ]
    }

    /// A client with few retries, so a dead server fails fast.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        let retry = object_store::RetryConfig {
            max_retries: 1,
            retry_timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        };
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_retry(retry);
        for (k, v) in self.options() {
            b = b.with_config(k.parse().unwrap(), v);
        }
        Arc::new(b.build().expect("an S3 client"))
    }

    /// Creates the bucket (an unsigned `PUT /bucket`, which moto accepts),
    /// or `None` (skipped) when the server cannot be reached.
    pub async fn reachable(&self) -> Option<()> {
        let how = "run `.ci/run` (ensure_s3) or set DREAMNET_TEST_S3_ENDPOINT to run it";
        match http(&self.endpoint, "PUT", &format!("/{}", self.bucket)).await {
            Ok((status, _)) if status < 300 || status == 409 => Some(()),
            Ok((status, body)) => panic!("creating the test bucket: HTTP {status}: {body:?}"),
            Err(e) => common::unavailable("S3", how, e),
        }
    }
}

/// A minimal HTTP/1.1 request over a fresh connection: status and body.
pub async fn http(
    base: &str,
    method: &str,
    path_and_query: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url::Url::parse(base).expect("an http URL");
    let host = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let mut conn = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(&host),
    )
    .await
    .map_err(|_| std::io::Error::other(format!("no answer from {host} within 2 s")))??;
    let req = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Ok((status, body))
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
    out
}

/// A folder of the test's own, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p =
            std::env::temp_dir().join(format!("dreamnet-media-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a [`Faulty`] store does on purpose.
#[derive(Default)]
pub struct Faults {
    /// Every write (put, multipart part) fails.
    pub fail_writes: AtomicBool,
    /// Every delete fails.
    pub fail_deletes: AtomicBool,
    /// The next `put` writes, then signals and never returns.
    pub hang_after_put: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The next `put` writes, signals the first, and returns when the
    /// second fires.
    pub pause_after_put: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
}

/// An object store that forwards to another, failing as [`Faults`] says.
pub struct Faulty {
    pub inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: "fault injected by the test".into(),
    }
}

struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Arc<Faults>,
}

impl fmt::Debug for FaultyUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultyUpload")
    }
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Box::pin(async { Err(injected()) });
        }
        self.inner.put_part(data)
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(injected());
        }
        let done = self.inner.put_opts(location, payload, opts).await?;
        let hang = self.faults.hang_after_put.lock().unwrap().take();
        if let Some(reached) = hang {
            let _ = reached.send(());
            std::future::pending::<()>().await;
        }
        let pause = self.faults.pause_after_put.lock().unwrap().take();
        if let Some((reached, release)) = pause {
            let _ = reached.send(());
            let _ = release.await;
        }
        Ok(done)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            faults: self.faults.clone(),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        if self.faults.fail_deletes.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// One test's store: rows in memory or PostgreSQL, bytes in `raw` (behind
/// a [`Faulty`] wrapper), time from `clock`.
pub struct Harness {
    pub store: Store,
    pub raw: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
    pub clock: ManualClock,
    pub prefix: String,
    /// The test's database, when rows are in PostgreSQL.
    pub db: Option<common::TestDb>,
    _guards: Vec<Box<dyn std::any::Any + Send>>,
}

impl Harness {
    /// Every object key under the harness's prefix.
    pub async fn keys(&self) -> Vec<String> {
        let prefix = Path::from(self.prefix.as_str());
        let mut keys: Vec<String> = self
            .raw
            .list(Some(&prefix))
            .map(|m| m.expect("list objects").location.to_string())
            .collect()
            .await;
        keys.sort();
        keys
    }
}

/// Where the bytes go.
#[derive(Clone, Copy, Debug)]
pub enum Objects {
    Memory,
    Local,
    #[cfg(feature = "s3")]
    S3,
}

/// Where the rows go.
#[derive(Clone, Copy, Debug)]
pub enum Rows {
    Memory,
    Postgres,
}

/// A harness, or `None` when the service it needs is unreachable
/// outside CI. `tune` sets limits and the like on the builder.
pub async fn harness(
    objects: Objects,
    rows: Rows,
    tune: impl FnOnce(StoreBuilder) -> StoreBuilder,
) -> Option<Harness> {
    let mut guards: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    let raw: Arc<dyn ObjectStore> = match objects {
        Objects::Memory => Arc::new(object_store::memory::InMemory::new()),
        Objects::Local => {
            let dir = TempDir::new();
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir.0).unwrap();
            guards.push(Box::new(dir));
            Arc::new(fs)
        }
        #[cfg(feature = "s3")]
        Objects::S3 => {
            let env = S3Env::from_env();
            env.reachable().await?;
            env.store()
        }
    };
    let faults = Arc::new(Faults::default());
    let faulty = Arc::new(Faulty {
        inner: raw.clone(),
        faults: faults.clone(),
    });
    let clock = ManualClock::new("2026-11-26T08:00:00Z".parse().unwrap());
    let builder = tune(
        Store::builder()
            .clock(clock.clone())
            .media_storage(MediaStorage::custom(faulty).key_prefix(prefix.clone())),
    );
    let (store, db) = match rows {
        Rows::Memory => (builder.in_memory(), None),
        Rows::Postgres => {
            let db = common::pg_db().await?;
            let store = db.store_with(builder.max_connections(6)).await;
            (store, Some(db))
        }
    };
    Some(Harness {
        store,
        raw,
        faults,
        clock,
        prefix,
        db,
        _guards: guards,
    })
}

/// `data` as a stream of `chunk`-byte pieces.
pub fn chunks(
    data: &[u8],
    chunk: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let pieces: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(pieces)
}

/// A PNG-signed file of `len` bytes (a PNG header, then a counting pattern).
pub fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend((0..len.saturating_sub(v.len())).map(|i| (i % 251) as u8));
    v.truncate(len);
    v
}

/// Lower-case hex SHA-256.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
