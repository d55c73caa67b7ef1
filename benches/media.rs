//! Media throughput: a 100 MiB upload and download through `store.media()`
//! beside raw `object_store` calls on the same store (a local folder, and
//! S3 on loopback when `DREAMNET_TEST_S3_ENDPOINT`'s server answers, with
//! feature `s3`); SHA-256 and content sniffing alone, to give their share
//! of an upload; and, before the benchmarks, the peak resident memory
//! growth while uploading 1 GiB (streamed, local folder).
//!
//! ```text
//! cargo bench --features s3 --bench media
//! MEDIA_BENCH_PEAK=0 cargo bench --bench media   # skip the 1 GiB upload
//! ```
//!
//! Rows are in memory, so the figures are the bytes' path only. Both sides
//! send the same 64 KiB chunks and the same 8 MiB parts, two in flight.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dreamnet_db::object_store::path::Path;
use dreamnet_db::object_store::{ObjectStore, WriteMultipart};
use dreamnet_db::{DEFAULT_MEDIA_PART_BYTES, MediaStorage, NewMedia, Store};
use futures_util::StreamExt;
use sha2::Digest;
use tokio::runtime::Runtime;

const MIB: usize = 1024 * 1024;
const SIZE: usize = 100 * MIB;
const CHUNK: usize = 64 * 1024;

fn data(len: usize) -> Bytes {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend((0..len - v.len()).map(|i| (i % 251) as u8));
    Bytes::from(v)
}

fn stream(
    data: Bytes,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let n = data.len().div_ceil(CHUNK);
    futures_util::stream::iter(
        (0..n).map(move |i| Ok(data.slice(i * CHUNK..((i + 1) * CHUNK).min(data.len())))),
    )
}

async fn raw_put(store: &Arc<dyn ObjectStore>, key: &Path, data: Bytes) {
    let upload = store.put_multipart(key).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, DEFAULT_MEDIA_PART_BYTES);
    let mut s = std::pin::pin!(stream(data));
    while let Some(chunk) = s.next().await {
        w.wait_for_capacity(2).await.unwrap();
        w.put(chunk.unwrap());
    }
    w.finish().await.unwrap();
}

async fn drain(
    mut s: impl futures_util::Stream<Item = Result<Bytes, impl std::fmt::Debug>> + Unpin,
) -> usize {
    let mut n = 0;
    while let Some(c) = s.next().await {
        n += c.unwrap().len();
    }
    n
}

struct Target {
    name: &'static str,
    raw: Arc<dyn ObjectStore>,
    store: Store,
    _dir: Option<tempdir::Dir>,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p =
                std::env::temp_dir().join(format!("dreamnet-media-bench-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn store_over(raw: Arc<dyn ObjectStore>) -> Store {
    Store::builder()
        .media_storage(MediaStorage::custom(raw))
        .media_max_bytes(2 * 1024 * MIB as u64)
        .in_memory()
}

fn local() -> Target {
    let dir = tempdir::Dir::new();
    let raw: Arc<dyn ObjectStore> = Arc::new(
        dreamnet_db::object_store::local::LocalFileSystem::new_with_prefix(&dir.0).unwrap(),
    );
    Target {
        name: "local",
        store: store_over(raw.clone()),
        raw,
        _dir: Some(dir),
    }
}

#[cfg(feature = "s3")]
fn s3(rt: &Runtime) -> Option<Target> {
    let endpoint = std::env::var("DREAMNET_TEST_S3_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let bucket = "dreamnet-bench";
    let reachable = rt.block_on(async {
        let url = url::Url::parse(&endpoint).ok()?;
        let addr = format!("{}:{}", url.host_str()?, url.port_or_known_default()?);
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut sink = Vec::new();
        conn.read_to_end(&mut sink).await.ok()?;
        Some(())
    });
    if reachable.is_none() {
        eprintln!(
            "skipped S3: nothing answers at {endpoint} (run .ci/run or set DREAMNET_TEST_S3_ENDPOINT)"
        );
        return None;
    }
    let raw: Arc<dyn ObjectStore> = Arc::new(
        dreamnet_db::object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    Some(Target {
        name: "s3",
        store: store_over(raw.clone()),
        raw,
        _dir: None,
    })
}

fn vm(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Uploads 1 GiB from a generator (never held whole) and reports the peak
/// resident growth (VmHWM after, reset before, minus VmRSS before).
fn peak_memory(rt: &Runtime) {
    if std::env::var("MEDIA_BENCH_PEAK").is_ok_and(|v| v == "0") {
        return;
    }
    let t = local();
    let block = data(CHUNK);
    // A fresh buffer per chunk, as from a socket: nothing is shared, so
    // whatever the upload holds shows in the resident size.
    let chunks = futures_util::stream::iter(
        (0..(1024 * MIB / CHUNK))
            .map(move |_| Ok::<_, std::io::Error>(Bytes::copy_from_slice(&block))),
    );
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM
    let before = vm("VmRSS:");
    let start = std::time::Instant::now();
    let m = rt
        .block_on(t.store.media().upload(NewMedia::system("big.png"), chunks))
        .unwrap();
    let took = start.elapsed();
    let peak = vm("VmHWM:");
    println!(
        "media/peak_memory: 1 GiB upload (local) in {:.1} s, {:.0} MB/s; resident before {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB",
        took.as_secs_f64(),
        m.size_bytes as f64 / 1e6 / took.as_secs_f64(),
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        peak.saturating_sub(before) as f64 / MIB as f64
    );
    rt.block_on(t.store.media().delete(m.id)).unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    peak_memory(&rt);
    let payload = data(SIZE);
    #[allow(unused_mut)]
    let mut targets = vec![local()];
    #[cfg(feature = "s3")]
    targets.extend(s3(&rt));

    let mut g = c.benchmark_group("media_100MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes(SIZE as u64));
    for t in &targets {
        g.bench_function(BenchmarkId::new("upload_store", t.name), |b| {
            b.to_async(&rt).iter(|| async {
                let m = t
                    .store
                    .media()
                    .upload(NewMedia::system("b.png"), stream(payload.clone()))
                    .await
                    .unwrap();
                t.store.media().delete(m.id).await.unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("upload_raw", t.name), |b| {
            let key = Path::from("raw/upload");
            b.to_async(&rt).iter(|| async {
                raw_put(&t.raw, &key, payload.clone()).await;
                t.raw.delete(&key).await.unwrap();
            })
        });
        let m = rt
            .block_on(
                t.store
                    .media()
                    .upload(NewMedia::system("b.png"), stream(payload.clone())),
            )
            .unwrap();
        let key = Path::from(m.storage_key.as_str());
        g.bench_function(BenchmarkId::new("download_store", t.name), |b| {
            b.to_async(&rt).iter(|| async {
                let got = t.store.media().get(m.id).await.unwrap();
                assert_eq!(drain(got.into_stream()).await, SIZE);
            })
        });
        g.bench_function(BenchmarkId::new("download_raw", t.name), |b| {
            b.to_async(&rt).iter(|| async {
                let got = t.raw.get(&key).await.unwrap();
                assert_eq!(drain(got.into_stream()).await, SIZE);
            })
        });
    }
    g.finish();

    // The hot path's own work, for its share of an upload.
    let mut g = c.benchmark_group("media_hot_path_100MiB");
    g.sample_size(10).throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("sha256_64KiB_chunks", |b| {
        b.iter(|| {
            let mut h = sha2::Sha256::new();
            for chunk in payload.chunks(CHUNK) {
                h.update(chunk);
            }
            std::hint::black_box(h.finalize())
        })
    });
    g.finish();
    c.bench_function("media_sniff_8KiB", |b| {
        b.iter(|| std::hint::black_box(infer::get(&payload[..8 * 1024])))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
