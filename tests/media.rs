//! The media conformance tests, on every object store (memory, a local
//! folder of each test's own, S3 on loopback with feature `s3`) with rows
//! in memory and in PostgreSQL, and the faults: a store that fails or
//! stops on purpose, a limit crossed in the last chunk, a client stream
//! that errors, concurrent identical uploads, a file deleted while read.
//! S3 and PostgreSQL tests skip with one line when their server is
//! unreachable (and fail under `CI=true`).

mod common;
mod media_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dreamnet_db::{Error, Field, Media, NewMedia};
use futures_util::StreamExt;
use media_support::{Harness, Objects, Rows, chunks, harness, png, sha256};
use uuid::Uuid;

const MIB: usize = 1024 * 1024;

/// Uploads `data` in `chunk`-byte pieces.
async fn up(h: &Harness, new: NewMedia, data: &[u8], chunk: usize) -> dreamnet_db::Result<Media> {
    h.store.media().upload(new, chunks(data, chunk)).await
}

/// Asserts no object is left, and nothing for `sweep` to remove.
async fn nothing_left(h: &Harness) {
    assert!(h.keys().await.is_empty());
    let swept = h.store.media().sweep(Duration::ZERO).await.unwrap();
    assert_eq!(swept, Default::default());
}

/// Asserts `err` refuses the content, its reason containing `needle`.
fn refused_content(err: &Error, needle: &str) {
    match err {
        Error::InvalidInput {
            field: Field::Content,
            reason,
        } => assert!(reason.contains(needle), "{reason}"),
        e => panic!("{e:?}"),
    }
}

async fn roundtrip_whole_and_ranges(h: Harness) {
    let owner = Uuid::now_v7();
    let data = png(100_000);
    let m = up(&h, NewMedia::for_user(owner, "photo.png"), &data, 7_000)
        .await
        .unwrap();
    assert_eq!(m.content_type, "image/png");
    assert_eq!(m.size_bytes, data.len() as u64);
    assert_eq!(m.sha256, sha256(&data));
    assert_eq!(m.owner_id, Some(owner));
    assert_eq!(m.file_name, "photo.png");
    assert_eq!(m.storage_key, format!("{}/{}", h.prefix, m.id));
    assert_eq!(h.store.media().head(m.id).await.unwrap(), m);
    assert_eq!(
        h.store
            .media()
            .get(m.id)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        data
    );
    let part = h.store.media().get_range(m.id, 10..5_000).await.unwrap();
    assert_eq!(part.range, 10..5_000);
    assert_eq!(part.bytes().await.unwrap(), &data[10..5_000]);
    let tail = h
        .store
        .media()
        .get_range(m.id, 99_999..100_000)
        .await
        .unwrap();
    assert_eq!(tail.bytes().await.unwrap(), &data[99_999..]);
    #[allow(clippy::reversed_empty_ranges)]
    let bad_ranges = [5..5, 6..2, 0..100_001];
    for bad in bad_ranges {
        let err = h.store.media().get_range(m.id, bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: Field::Range,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(h.keys().await, vec![m.storage_key.clone()]);
}

async fn large_files_go_up_in_parts(h: Harness) {
    // 12 MiB with 5 MiB parts: three parts, sent while the stream is read.
    let data = png(12 * MIB + 123);
    let m = h
        .store
        .media()
        .upload_reader(NewMedia::system("big.png"), &data[..])
        .await
        .unwrap();
    assert_eq!(m.size_bytes, data.len() as u64);
    assert_eq!(m.sha256, sha256(&data));
    let back = h
        .store
        .media()
        .get(m.id)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(back == data, "the bytes read back differ");
    let mid = h
        .store
        .media()
        .get_range(m.id, 5 * MIB as u64 - 3..5 * MIB as u64 + 3)
        .await
        .unwrap();
    assert_eq!(mid.bytes().await.unwrap(), &data[5 * MIB - 3..5 * MIB + 3]);
}

async fn limit_crossed_in_the_last_chunk(h: Harness) {
    // Limit 20 000: 19 999 bytes pass, the last chunk crosses it.
    let data = png(20_001);
    let err = up(&h, NewMedia::system("a.png"), &data, 10_000)
        .await
        .unwrap_err();
    refused_content(&err, "20000");
    // Exactly at the limit is fine.
    let ok = png(20_000);
    let m = up(&h, NewMedia::system("b.png"), &ok, 10_000)
        .await
        .unwrap();
    assert_eq!(h.keys().await, vec![m.storage_key]);
    assert_eq!(
        h.store.media().sweep(Duration::ZERO).await.unwrap(),
        Default::default()
    );
}

async fn limit_crossed_during_a_multipart_upload(h: Harness) {
    // Limit 7 MiB, parts of 5 MiB: the first part is sent, then the limit
    // is crossed and the multipart upload is aborted.
    let data = png(8 * MIB);
    let err = up(&h, NewMedia::system("a.png"), &data, MIB)
        .await
        .unwrap_err();
    refused_content(&err, "");
    nothing_left(&h).await;
}

async fn types_come_from_the_bytes(h: Harness) {
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".repeat(10);
    let err = up(&h, NewMedia::system("cat.png"), &exe, 64)
        .await
        .unwrap_err();
    refused_content(&err, "not allowed");
    let binary = vec![0u8, 1, 2, 3, 0, 0, 7];
    let err = up(&h, NewMedia::system("x.txt"), &binary, 3)
        .await
        .unwrap_err();
    refused_content(&err, "");
    let err = up(&h, NewMedia::system("x.txt"), b"", 3).await.unwrap_err();
    refused_content(&err, "");
    let json = br#"  {"claimed": "image/png"}"#;
    let m = up(&h, NewMedia::system("x.png"), json, 5).await.unwrap();
    assert_eq!(m.content_type, "application/json");
    let text = "plain words, ünïcödé".as_bytes();
    let m2 = up(&h, NewMedia::system("x.pdf"), text, 5).await.unwrap();
    assert_eq!(m2.content_type, "text/plain");
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n";
    let m3 = up(&h, NewMedia::system("doc"), pdf, 5).await.unwrap();
    assert_eq!(m3.content_type, "application/pdf");
    assert_eq!(h.keys().await.len(), 3);
}

async fn hostile_names_never_reach_the_storage(h: Harness) {
    let long = "ä".repeat(1_000);
    let names = [
        "../../../../etc/passwd",
        "/etc/shadow",
        "..\\..\\windows\\system32\\x.png",
        "a\0b.png",
        "\r\nSet-Cookie: x=y",
        "quote\"and\\slash.png",
        &long,
        "日本語 файл.png",
        "..",
        "",
    ];
    let mut keys = Vec::new();
    for name in names {
        let m = up(&h, NewMedia::system(name), &png(100), 50).await.unwrap();
        assert_eq!(m.storage_key, format!("{}/{}", h.prefix, m.id));
        assert!(
            !m.file_name.contains(['/', '\\', '\0', '\r', '\n']),
            "{:?}",
            m.file_name
        );
        assert!(m.file_name.len() <= dreamnet_db::MAX_FILE_NAME_BYTES);
        let header = m.content_disposition(false);
        assert!(
            header.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{header}"
        );
        assert!(axum::http::HeaderValue::from_str(&header).is_ok());
        keys.push(m.storage_key);
    }
    keys.sort();
    assert_eq!(h.keys().await, keys);
}

/// A stream that yields `first`, then fails.
fn failing_after(
    first: Vec<u8>,
    chunk: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    chunks(&first, chunk).chain(futures_util::stream::once(async {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        ))
    }))
}

async fn a_client_that_stops_sending(h: Harness) {
    for sent in [100, 3 * MIB, 6 * MIB] {
        let err = h
            .store
            .media()
            .upload(
                NewMedia::system("a.png"),
                failing_after(png(sent), 256 * 1024),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UploadInterrupted { .. }), "{err:?}");
    }
    nothing_left(&h).await;
}

async fn list_pages_and_owners(h: Harness) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut ids = Vec::new();
    for i in 0..5 {
        h.clock.advance(chrono::Duration::seconds(1));
        let m = h
            .store
            .media()
            .upload(
                NewMedia::for_user(a, format!("{i}.png")),
                chunks(&png(200 + i), 100),
            )
            .await
            .unwrap();
        ids.push(m.id);
    }
    up(&h, NewMedia::for_user(b, "b.png"), &png(50), 50)
        .await
        .unwrap();
    up(&h, NewMedia::system("sys.png"), &png(50), 50)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = h.store.media().list(a, 2, after).await.unwrap();
        seen.extend(page.items.iter().map(|m| m.id));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(
        h.store.media().list(b, 10, None).await.unwrap().items.len(),
        1
    );
    let err = h.store.media().list(a, 0, None).await.unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidInput {
            field: Field::Limit,
            ..
        }
    ));
}

async fn delete_and_erase_an_owner(h: Harness) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut a_files = Vec::new();
    for i in 0..3 {
        a_files.push(
            up(&h, NewMedia::for_user(a, "a.png"), &png(100 + i), 64)
                .await
                .unwrap(),
        );
    }
    let kept = up(&h, NewMedia::for_user(b, "b.png"), &png(100), 64)
        .await
        .unwrap();
    h.store.media().delete(a_files[0].id).await.unwrap();
    let err = h.store.media().head(a_files[0].id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    let err = h.store.media().delete(a_files[0].id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!(h.store.media().delete_owner(a).await.unwrap(), 2);
    assert!(
        h.store
            .media()
            .list(a, 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(h.keys().await, vec![kept.storage_key.clone()]);
    assert_eq!(h.store.media().head(kept.id).await.unwrap(), kept);
}

async fn identical_uploads_at_once(h: Harness) {
    let owner = Uuid::now_v7();
    let data = png(300_000);
    let media = h.store.media();
    let (x, y) = tokio::join!(
        media.upload(NewMedia::for_user(owner, "x.png"), chunks(&data, 10_000)),
        media.upload(NewMedia::for_user(owner, "y.png"), chunks(&data, 10_000)),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_ne!(x.id, y.id);
    assert_eq!(x.sha256, y.sha256);
    assert_eq!(h.keys().await.len(), 2, "no deduplication: two objects");
    h.store.media().delete(x.id).await.unwrap();
    assert_eq!(
        h.store
            .media()
            .get(y.id)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        data
    );
}

async fn download_of_a_file_deleted_meanwhile(h: Harness) {
    let data = png(50_000);
    let m = up(&h, NewMedia::system("a.png"), &data, 10_000)
        .await
        .unwrap();
    // The object vanishes behind the row's back (a delete between the
    // reader's row lookup and its object read looks the same).
    h.raw.delete(&m.storage_key.as_str().into()).await.unwrap();
    let err = h.store.media().get(m.id).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { id, .. } if id == m.id),
        "{err:?}"
    );
    // A row deleted: not found either.
    let m2 = up(&h, NewMedia::system("b.png"), &data, 10_000)
        .await
        .unwrap();
    h.store.media().delete(m2.id).await.unwrap();
    let err = h.store.media().get(m2.id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

/// Starts an upload of `body`, waits for `reached`, and drops the upload
/// there, as a crash would: no cleanup code runs.
async fn crash_during<S>(h: &Harness, body: S, reached: tokio::sync::oneshot::Receiver<()>)
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let store = h.store.clone();
    let task =
        tokio::spawn(async move { store.media().upload(NewMedia::system("a.png"), body).await });
    reached.await.unwrap();
    task.abort();
    let _ = task.await;
}

/// Two hours later, sweeps what is older than one hour.
async fn sweep_two_hours_later(h: &Harness) -> dreamnet_db::SweepReport {
    h.clock.advance(chrono::Duration::hours(2));
    h.store
        .media()
        .sweep(Duration::from_secs(3600))
        .await
        .unwrap()
}

async fn crash_after_the_pending_row(h: Harness) {
    // The stream passes the sniffing, then stalls: a pending row, no object.
    let (reached_tx, reached) = tokio::sync::oneshot::channel::<()>();
    let stalled = chunks(&png(20_000), 10_000).chain(futures_util::stream::once(async move {
        let _ = reached_tx.send(());
        std::future::pending::<Result<Bytes, std::io::Error>>().await
    }));
    crash_during(&h, stalled, reached).await;
    assert!(
        h.store
            .media()
            .list(Uuid::nil(), 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Younger than the bound: kept (it may be an upload under way).
    let early = h
        .store
        .media()
        .sweep(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(early.pending_rows, 0);
    assert_eq!(sweep_two_hours_later(&h).await.pending_rows, 1);
    assert!(h.keys().await.is_empty());
}

async fn crash_after_the_object(h: Harness) {
    // The object is written, then the process dies before the row is
    // marked complete: nothing visible, and sweep removes both.
    let (reached_tx, reached) = tokio::sync::oneshot::channel();
    *h.faults.hang_after_put.lock().unwrap() = Some(reached_tx);
    crash_during(&h, chunks(&png(1_000), 100), reached).await;
    assert_eq!(h.keys().await.len(), 1, "the object was written");
    assert_eq!(sweep_two_hours_later(&h).await.pending_rows, 1);
    assert!(h.keys().await.is_empty());
}

async fn sweep_during_a_slow_upload(h: Harness) {
    // The upload has written its object but not yet completed its row when
    // a sweep (with a bound shorter than the upload's age) takes the row:
    // the upload then fails and removes its object itself.
    let (reached_tx, reached) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    *h.faults.pause_after_put.lock().unwrap() = Some((reached_tx, release_rx));
    let store = h.store.clone();
    let uploading = tokio::spawn(async move {
        store
            .media()
            .upload(NewMedia::system("a.png"), chunks(&png(1_000), 100))
            .await
    });
    reached.await.unwrap();
    assert_eq!(h.keys().await.len(), 1, "the object was written");
    let swept = sweep_two_hours_later(&h).await;
    assert_eq!(swept.pending_rows, 1);
    assert!(h.keys().await.is_empty());
    release.send(()).unwrap();
    let err = uploading.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::UploadInterrupted { .. }), "{err:?}");
    nothing_left(&h).await;
}

/// A client that goes silent: the caller gives up (a request timeout, a
/// dropped connection) and drops the upload. Nothing is visible; the
/// pending row is left for `sweep`, and no object was made.
async fn a_client_that_goes_silent(h: Harness) {
    let owner = Uuid::now_v7();
    for sent in [20_000, 6 * MIB] {
        let (silent_tx, silent) = tokio::sync::oneshot::channel::<()>();
        let body = chunks(&png(sent), MIB / 2).chain(futures_util::stream::once(async move {
            let _ = silent_tx.send(());
            std::future::pending::<Result<Bytes, std::io::Error>>().await
        }));
        let media = h.store.media();
        let upload = media.upload(NewMedia::for_user(owner, "a.png"), body);
        tokio::select! {
            done = upload => panic!("the upload cannot finish: {done:?}"),
            _ = silent => {}
        }
        // A request timeout fires now, dropping the upload.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = h.store.media().list(owner, 10, None).await.unwrap();
    assert!(listed.items.is_empty());
    assert!(h.keys().await.is_empty(), "{:?}", h.keys().await);
    assert_eq!(sweep_two_hours_later(&h).await.pending_rows, 2);
    nothing_left(&h).await;
}

/// PostgreSQL refuses the "mark complete" step (a trigger of the test's
/// own): the upload fails with a typed error and takes back its row and
/// object. When the cleanup is refused too (the database gone), the
/// pending row and its object stay together, no reader sees them, and
/// `sweep` removes both.
async fn marking_complete_fails(h: Harness) {
    let db = h.db.as_ref().expect("rows in PostgreSQL");
    db.sql(
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER test_refuse_complete BEFORE UPDATE ON media FOR EACH ROW \
           WHEN (NEW.status = 'complete') EXECUTE FUNCTION test_refuse();",
    )
    .await;
    let owner = Uuid::now_v7();
    for len in [1_000, 6 * MIB] {
        let err = up(&h, NewMedia::for_user(owner, "a.png"), &png(len), MIB)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Database { .. }), "{err:?}");
    }
    assert!(h.keys().await.is_empty());
    nothing_left(&h).await;

    // Now removing rows fails as well: the failed upload cannot clean up.
    db.sql(
        "CREATE TRIGGER test_refuse_delete BEFORE DELETE ON media FOR EACH ROW \
           EXECUTE FUNCTION test_refuse();",
    )
    .await;
    let err = up(&h, NewMedia::for_user(owner, "b.png"), &png(6 * MIB), MIB)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    let keys = h.keys().await;
    assert_eq!(keys.len(), 1, "the object stays beside its pending row");
    let id: Uuid = keys[0].rsplit('/').next().unwrap().parse().unwrap();
    let pending = common::client(&db.url)
        .await
        .query_one("SELECT status FROM media WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(pending.get::<_, String>(0), "pending");
    for err in [
        h.store.media().head(id).await.unwrap_err(),
        h.store.media().get(id).await.unwrap_err(),
        h.store.media().get_range(id, 0..10).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }
    let listed = h.store.media().list(owner, 10, None).await.unwrap();
    assert!(listed.items.is_empty());

    db.sql("DROP TRIGGER test_refuse_delete ON media; DROP TRIGGER test_refuse_complete ON media;")
        .await;
    let early = h
        .store
        .media()
        .sweep(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(early, Default::default(), "an upload under way is kept");
    assert_eq!(sweep_two_hours_later(&h).await.pending_rows, 1);
    nothing_left(&h).await;
    let m = up(&h, NewMedia::for_user(owner, "c.png"), &png(1_000), 100)
        .await
        .unwrap();
    assert_eq!(h.keys().await, vec![m.storage_key]);
}

async fn object_store_failures(h: Harness) {
    // Writes fail: typed error, no row, no object (small and multipart).
    h.faults.fail_writes.store(true, Ordering::SeqCst);
    for len in [1_000, 11 * MIB] {
        let err = up(&h, NewMedia::system("a.png"), &png(len), MIB)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    backend: dreamnet_db::Backend::ObjectStore,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    h.faults.fail_writes.store(false, Ordering::SeqCst);
    h.clock.advance(chrono::Duration::hours(2));
    assert_eq!(
        h.store.media().sweep(Duration::from_secs(1)).await.unwrap(),
        Default::default()
    );
    assert!(h.keys().await.is_empty());

    // A delete whose object delete fails: the row is gone (never a row
    // without its object), the object stays until sweep.
    let m = up(&h, NewMedia::system("b.png"), &png(1_000), 100)
        .await
        .unwrap();
    h.faults.fail_deletes.store(true, Ordering::SeqCst);
    let err = h.store.media().delete(m.id).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(matches!(
        h.store.media().head(m.id).await.unwrap_err(),
        Error::NotFound { .. }
    ));
    assert_eq!(h.keys().await, vec![m.storage_key.clone()]);
    h.faults.fail_deletes.store(false, Ordering::SeqCst);
    let swept = h
        .store
        .media()
        .sweep(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(swept.orphan_objects, 1);
    assert!(h.keys().await.is_empty());
}

macro_rules! media_tests {
    ($name:ident, $objects:expr, $rows:expr) => {
        mod $name {
            use super::*;

            async fn h() -> Option<Harness> {
                harness($objects, $rows, |b| b).await
            }

            async fn limited(max: u64) -> Option<Harness> {
                harness($objects, $rows, |b| {
                    b.media_max_bytes(max).media_part_bytes(5 * MIB)
                })
                .await
            }

            macro_rules! t {
                ($t:ident) => {
                    t!($t, h());
                };
                ($t:ident, $h:expr) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $t() {
                        if let Some(h) = $h.await {
                            super::$t(h).await;
                        }
                    }
                };
            }

            t!(roundtrip_whole_and_ranges);
            t!(types_come_from_the_bytes);
            t!(hostile_names_never_reach_the_storage);
            t!(a_client_that_stops_sending);
            t!(list_pages_and_owners);
            t!(delete_and_erase_an_owner);
            t!(identical_uploads_at_once);
            t!(download_of_a_file_deleted_meanwhile);
            t!(crash_after_the_pending_row);
            t!(crash_after_the_object);
            t!(sweep_during_a_slow_upload);
            t!(a_client_that_goes_silent, limited(64 * MIB as u64));

            t!(large_files_go_up_in_parts, limited(64 * MIB as u64));

            t!(limit_crossed_in_the_last_chunk, limited(20_000));

            t!(
                limit_crossed_during_a_multipart_upload,
                limited(7 * MIB as u64)
            );

            t!(object_store_failures, limited(64 * MIB as u64));
        }
    };
}

media_tests!(memory_objects, Objects::Memory, Rows::Memory);
media_tests!(local_objects, Objects::Local, Rows::Memory);
media_tests!(local_objects_postgres_rows, Objects::Local, Rows::Postgres);
#[cfg(feature = "s3")]
media_tests!(s3_objects, Objects::S3, Rows::Memory);
#[cfg(feature = "s3")]
media_tests!(s3_objects_postgres_rows, Objects::S3, Rows::Postgres);

/// The steps only PostgreSQL can fail on purpose (a trigger), on each
/// object store.
mod postgres_steps {
    use super::*;

    async fn h(objects: Objects) -> Option<Harness> {
        harness(objects, Rows::Postgres, |b| b.media_part_bytes(5 * MIB)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn marking_complete_fails_local() {
        if let Some(h) = h(Objects::Local).await {
            super::marking_complete_fails(h).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn marking_complete_fails_memory_objects() {
        if let Some(h) = h(Objects::Memory).await {
            super::marking_complete_fails(h).await;
        }
    }

    #[cfg(feature = "s3")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn marking_complete_fails_s3() {
        if let Some(h) = h(Objects::S3).await {
            super::marking_complete_fails(h).await;
        }
    }
}

/// Signed URLs and a server that dies mid-upload, on S3 (moto).
#[cfg(feature = "s3")]
mod s3 {
    use super::*;
    use dreamnet_db::{MediaStorage, Store};
    use media_support::{S3Env, http};
    use std::process::{Child, Command, Stdio};

    #[tokio::test]
    async fn signed_urls_download_the_object() {
        let env = S3Env::from_env();
        if env.reachable().await.is_none() {
            return;
        }
        let prefix = format!("t-{}", Uuid::new_v4().simple());
        let storage = MediaStorage::s3(&format!("s3://{}", env.bucket), env.options())
            .unwrap()
            .key_prefix(prefix);
        let store = Store::builder().media_storage(storage).in_memory();
        let data = png(3_000);
        let m = store
            .media()
            .upload(NewMedia::system("a.png"), chunks(&data, 1_000))
            .await
            .unwrap();
        let url = store
            .media()
            .signed_url(m.id, Duration::from_secs(60))
            .await
            .unwrap()
            .expect("S3 signs");
        assert!(url.query().unwrap().contains("X-Amz-Signature="));
        let (status, body) = http(&env.endpoint, "GET", &url[url::Position::BeforePath..])
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert!(body == data, "the signed URL serves the object");
        let err = store
            .media()
            .signed_url(m.id, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidInput {
                field: Field::Expiry,
                ..
            }
        ));
        store.media().delete(m.id).await.unwrap();
        // Stores that cannot sign say so.
        let local = Store::in_memory();
        let m = local
            .media()
            .upload(NewMedia::system("a.png"), chunks(&data, 1_000))
            .await
            .unwrap();
        let none = local
            .media()
            .signed_url(m.id, Duration::from_secs(60))
            .await;
        assert!(none.unwrap().is_none());
    }

    /// A moto of this test's own on a spare port.
    struct PrivateMoto {
        child: Child,
        port: u16,
    }

    impl PrivateMoto {
        async fn start(port: Option<u16>) -> Option<PrivateMoto> {
            let port = port.unwrap_or_else(|| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            });
            let child = match Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) => {
                    return common::unavailable(
                        "moto_server",
                        "run `.ci/run` (ensure_s3) to install it",
                        e,
                    );
                }
            };
            let moto = PrivateMoto { child, port };
            let env = moto.env();
            // A guard against hanging, not a timing check: moto's start
            // (a Python import) takes seconds, far more on a loaded machine.
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while std::time::Instant::now() < deadline {
                if http(&env.endpoint, "PUT", &format!("/{}", env.bucket))
                    .await
                    .is_ok()
                {
                    return Some(moto);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the private moto on port {port} did not come up within 90 s");
        }

        fn env(&self) -> S3Env {
            S3Env {
                endpoint: format!("http://127.0.0.1:{}", self.port),
                bucket: "private".to_owned(),
                ..S3Env::from_env()
            }
        }

        fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for PrivateMoto {
        fn drop(&mut self) {
            self.kill();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_killed_during_an_upload() {
        let Some(mut moto) = PrivateMoto::start(None).await else {
            return;
        };
        let env = moto.env();
        let clock = dreamnet_db::ManualClock::new("2026-11-26T08:00:00Z".parse().unwrap());
        let store = Store::builder()
            .clock(clock.clone())
            .media_part_bytes(5 * MIB)
            .media_storage(MediaStorage::custom(env.store()))
            .in_memory();
        // 6 MiB (one part sent), then the server dies, then 6 MiB more.
        let (reached_tx, reached) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
        let data = png(6 * MIB);
        let body = chunks(&data, MIB)
            .chain(futures_util::stream::once(async move {
                let _ = reached_tx.send(());
                let _ = go.await;
                Ok(Bytes::from(vec![7u8; MIB]))
            }))
            .chain(chunks(&data, MIB));
        let uploading = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .media()
                    .upload(NewMedia::for_user(Uuid::nil(), "a.png"), body)
                    .await
            })
        };
        reached.await.unwrap();
        moto.kill();
        go_tx.send(()).unwrap();
        let err = uploading.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    backend: dreamnet_db::Backend::ObjectStore,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            store
                .media()
                .list(Uuid::nil(), 10, None)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        // Back up (empty: moto keeps its state in memory): sweep finds no
        // pending row and no object.
        let moto = PrivateMoto::start(Some(moto.port)).await.unwrap();
        clock.advance(chrono::Duration::hours(2));
        let swept = store
            .media()
            .sweep(Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(swept, Default::default());
        drop(moto);
    }
}
