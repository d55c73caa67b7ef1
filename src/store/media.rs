//! [`MediaFiles`]: the media repository's facade. Rows in the store's
//! backend (`crate::backend::MediaBackend`), bytes in an object store
//! (`crate::backend::MediaStorage`).
//!
//! # Order of writes
//!
//! An upload first reads (and sniffs) the first bytes, then inserts a
//! `pending` row, then writes the object (one `put` below one part,
//! otherwise a multipart upload), then marks the row complete. Readers see
//! complete rows only, so a crash at any point never shows a row without
//! its object. What a crash leaves (a pending row, perhaps with an object)
//! is removed by [`MediaFiles::sweep`]. Every removal (a delete, an upload
//! that failed taking back its row, `sweep` removing a pending row) takes
//! the row first, then the object; a crash or a failure between them
//! leaves an object without a row, which `sweep` removes too.

use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::{Store, new_id, not_found};
use crate::backend::{MediaBackend, MediaStorage, Objects, object_error};
use crate::error::{Backend as Service, BoxError, Entity, Error, Field, Result};
use crate::model::{
    Cursor, DEFAULT_ALLOWED_TYPES, DEFAULT_MAX_MEDIA_BYTES, Media, MediaFacts, MediaRow, NewMedia,
    Page, SNIFF_BYTES, check_page, page_from, push_hex, sniff,
};
use crate::telemetry::{site, traced};

/// The default size of each part of a multipart upload: 8 MiB (S3 needs at
/// least 5 MiB).
pub const DEFAULT_MEDIA_PART_BYTES: usize = 8 * 1024 * 1024;

/// How many parts of one upload are sent at once.
const PARTS_IN_FLIGHT: usize = 2;

/// The longest lifetime of a signed URL: 7 days (S3's limit).
pub const MAX_SIGNED_URL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The media settings of a store, and its object store once resolved.
#[derive(Debug)]
pub(crate) struct MediaState {
    pub storage: MediaStorage,
    pub max_bytes: u64,
    pub allowed_types: Vec<String>,
    pub part_bytes: usize,
    objects: tokio::sync::OnceCell<Objects>,
}

impl MediaState {
    pub(crate) fn new(
        storage: MediaStorage,
        max_bytes: u64,
        allowed_types: Vec<String>,
        part_bytes: usize,
    ) -> Self {
        MediaState {
            storage,
            max_bytes,
            allowed_types,
            part_bytes: part_bytes.max(5 * 1024 * 1024),
            objects: tokio::sync::OnceCell::new(),
        }
    }

    pub(crate) fn defaults(storage: MediaStorage) -> Self {
        MediaState::new(
            storage,
            DEFAULT_MAX_MEDIA_BYTES,
            DEFAULT_ALLOWED_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            DEFAULT_MEDIA_PART_BYTES,
        )
    }

    async fn objects(&self) -> Result<&Objects> {
        self.objects
            .get_or_try_init(|| async { self.storage.resolve() })
            .await
    }
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.store)
    }
}

/// What [`MediaFiles::sweep`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Pending rows older than the bound (uploads a crash cut short), with
    /// their objects if any.
    pub pending_rows: u64,
    /// Objects under the store's prefix that had no row.
    pub orphan_objects: u64,
}

/// A download: the file's record, the byte range being sent, and the bytes.
pub struct MediaDownload {
    /// The file.
    pub media: Media,
    /// The bytes being sent: all of them, or the range asked for.
    pub range: Range<u64>,
    body: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for MediaDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaDownload")
            .field("media", &self.media)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl MediaDownload {
    /// The bytes, as they arrive from the object store.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes>> {
        self.body
    }

    /// All the bytes in one buffer (for small files and tests).
    pub async fn bytes(self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity((self.range.end - self.range.start) as usize);
        let mut body = self.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

/// Media files: upload, download (whole or a range), look up, delete, list
/// a user's files, and clean up after crashes. Get one from
/// [`Store::media`].
///
/// **Content types** are decided from the bytes (magic numbers; UTF-8 text
/// and JSON from their first bytes), never from the client; types outside
/// the allow-list (`StoreBuilder::media_allowed_types`) are refused with
/// [`Error::InvalidInput`] on [`Field::Content`], as are empty files.
///
/// **Duplicates** are stored as separate objects, even for one user:
/// nothing is deduplicated, so no upload can learn whether someone else
/// stored the same bytes, and erasing one user's files never touches
/// another's. The SHA-256 is kept per file for integrity checks and for
/// callers that want to deduplicate within one owner themselves.
///
/// **Erasure**: deleting a user (`Users::delete`) does not touch their
/// files. Call [`delete_owner`](Self::delete_owner) first (it removes the
/// rows, then the objects); anything a crash leaves between the two is
/// removed by the next [`sweep`](Self::sweep).
#[derive(Debug, Clone, Copy)]
pub struct MediaFiles<'a> {
    pub(super) store: &'a Store,
}

impl MediaFiles<'_> {
    fn rows(&self) -> Arc<dyn MediaBackend> {
        self.store.backend.clone().media()
    }

    /// The complete file `id`; `NotFound` if there is none.
    async fn complete_row(&self, id: Uuid) -> Result<Media> {
        self.rows()
            .get(id)
            .await?
            .ok_or(not_found(Entity::Media, id))
    }

    fn state(&self) -> &MediaState {
        &self.store.media
    }

    fn key(&self, id: Uuid) -> Path {
        let prefix = &self.state().storage.prefix;
        if prefix.is_empty() {
            Path::from(id.to_string())
        } else {
            Path::from(format!("{prefix}/{id}"))
        }
    }

    /// Stores the bytes of `body`, a stream of chunks, and returns the
    /// file's record. The bytes are never held whole in memory: at most
    /// one part plus the parts in flight. Refused with `InvalidInput` (and
    /// nothing kept anywhere): a file larger than the limit, as soon as a
    /// chunk crosses it ([`Field::Content`], naming the limit); a content
    /// type outside the allow-list or that cannot be recognised. A stream
    /// that ends in an error gives [`Error::UploadInterrupted`]; an object
    /// store that fails, `Unavailable`. In every failing case the pending
    /// row and whatever was written of the object are removed before the
    /// call returns (a crash leaves them to [`sweep`](Self::sweep)).
    pub async fn upload<S, E>(&self, new: NewMedia, body: S) -> Result<Media>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        traced(site!("upload", "media"), self.upload_inner(new, body)).await
    }

    /// [`upload`](Self::upload) from an `AsyncRead` (a file, a request
    /// body), read in 64 KiB chunks.
    pub async fn upload_reader<R>(&self, new: NewMedia, reader: R) -> Result<Media>
    where
        R: AsyncRead + Send,
    {
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024);
        self.upload(new, stream).await
    }

    async fn upload_inner<S, E>(&self, new: NewMedia, body: S) -> Result<Media>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let state = self.state();
        let objects = state.objects().await?;
        let mut body = pin!(body);
        let mut upload = Counted::new(state.max_bytes);

        // The first bytes decide the type, before anything is written.
        let mut head: Vec<Bytes> = Vec::new();
        let mut ended = false;
        while upload.size < SNIFF_BYTES as u64 {
            match next_chunk(&mut body).await? {
                Some(chunk) => head.push(upload.take(chunk).await?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let prefix = joined_prefix(&head, SNIFF_BYTES);
        let content_type = match sniff(&prefix) {
            Some(t) if state.allowed_types.iter().any(|a| a == t) => t.to_owned(),
            Some(t) => {
                return Err(Error::invalid(
                    Field::Content,
                    format!("content type {t} is not allowed"),
                ));
            }
            None if upload.size == 0 => return Err(Error::invalid(Field::Content, "empty file")),
            None => {
                return Err(Error::invalid(
                    Field::Content,
                    "content type not recognised from the bytes",
                ));
            }
        };

        let now = self.store.now();
        let id = new_id(now);
        let key = self.key(id);
        let row = MediaRow {
            id,
            owner_id: new.owner_id,
            file_name: new.file_name(),
            storage_key: key.to_string(),
            created_at: now,
            facts: None,
        };
        let rows = self.rows();
        rows.insert_pending(&row).await?;

        let written = write_object(
            objects,
            &key,
            state.part_bytes,
            head,
            ended,
            &mut body,
            &mut upload,
        )
        .await;
        let digest = match written {
            Ok(()) => upload.hex_digest().await,
            Err(e) => Err(e),
        };
        let result = match digest {
            Ok(sha256) => {
                let facts = MediaFacts {
                    content_type,
                    size_bytes: upload.size,
                    sha256,
                    completed_at: self.store.now(),
                };
                match self.store.audited(rows.complete(id, &facts)).await {
                    Ok(Some(media)) => return Ok(media),
                    Ok(None) => Err(Error::UploadInterrupted {
                        source: "the pending upload was swept before it completed".into(),
                    }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        // Failed after the row: take back the row, then the object. In
        // this order a reader never sees a row without its object, even
        // when `complete` committed but its answer was lost: if removing
        // the row fails, row and object stay together (pending or
        // complete); if removing the object fails, `sweep` finds it.
        if self.store.audited(rows.remove(id)).await.is_ok() {
            let _ = objects.store.delete(&key).await;
        }
        result
    }

    /// The record of the file `id` (no bytes); `NotFound` if there is no
    /// such complete file.
    pub async fn head(&self, id: Uuid) -> Result<Media> {
        traced(site!("head", "media"), async {
            self.rows()
                .get(id)
                .await?
                .ok_or(not_found(Entity::Media, id))
        })
        .await
    }

    /// The file `id`, whole. `NotFound` if there is no such file, or if its
    /// object was deleted since its record was read. A download that has
    /// started keeps the bytes it began with on the local and in-memory
    /// stores (an open file, a shared buffer); a cloud store may end it
    /// with an error.
    pub async fn get(&self, id: Uuid) -> Result<MediaDownload> {
        traced(site!("get", "media"), self.download(id, None)).await
    }

    /// The bytes `range` (end exclusive) of the file `id`. The range must
    /// be non-empty and within the file (`InvalidInput` on
    /// [`Field::Range`] otherwise).
    pub async fn get_range(&self, id: Uuid, range: Range<u64>) -> Result<MediaDownload> {
        traced(site!("get_range", "media"), self.download(id, Some(range))).await
    }

    async fn download(&self, id: Uuid, range: Option<Range<u64>>) -> Result<MediaDownload> {
        let objects = self.state().objects().await?;
        let media = self.complete_row(id).await?;
        if let Some(r) = &range {
            if r.start >= r.end || r.end > media.size_bytes {
                return Err(Error::invalid(
                    Field::Range,
                    format!(
                        "must be a non-empty range within the file's {} bytes",
                        media.size_bytes
                    ),
                ));
            }
        }
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        let got = objects
            .store
            .get_opts(&Path::from(media.storage_key.as_str()), options)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => not_found(Entity::Media, id),
                e => object_error(e),
            })?;
        let body = match got.payload {
            GetResultPayload::File(file, _) => read_file(file, got.range),
            GetResultPayload::Stream(stream) => stream.map_err(object_error).boxed(),
        };
        let range = range.unwrap_or(0..media.size_bytes);
        Ok(MediaDownload { media, range, body })
    }

    /// Deletes the file `id`: its row, then its object. `NotFound` if
    /// there is no such file (complete or pending).
    pub async fn delete(&self, id: Uuid) -> Result<()> {
        traced(site!("delete", "media"), async {
            let objects = self.state().objects().await?;
            let key = self
                .store
                .audited(self.rows().remove(id))
                .await?
                .ok_or(not_found(Entity::Media, id))?;
            delete_object(objects, &key).await
        })
        .await
    }

    /// Erases every file of `owner` (complete or pending): the rows, then
    /// the objects. Returns how many files were erased. If an object
    /// cannot be deleted, the error is returned and the next
    /// [`sweep`](Self::sweep) removes it (its row is already gone).
    pub async fn delete_owner(&self, owner: Uuid) -> Result<u64> {
        traced(site!("delete_owner", "media"), async {
            let objects = self.state().objects().await?;
            let keys = self.store.audited(self.rows().remove_owner(owner)).await?;
            for key in &keys {
                delete_object(objects, key).await?;
            }
            Ok(keys.len() as u64)
        })
        .await
    }

    /// The complete files of `owner`, oldest first, `limit` (1 to 1000)
    /// at a time; pass the page's `next` back to get the following page.
    pub async fn list(
        &self,
        owner: Uuid,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Page<Media>> {
        traced(site!("list", "media"), async {
            check_page(limit, after)?;
            let items = self.rows().list(owner, after, limit + 1).await?;
            Ok(page_from(items, limit, |m| Cursor::new(m.created_at, m.id)))
        })
        .await
    }

    /// A URL that downloads the file `id` straight from the cloud store
    /// for `expires_in` (at most [`MAX_SIGNED_URL_TTL`]), signed with the
    /// store's credentials; `None` for stores that cannot sign (the local
    /// folder, memory, custom stores): serve those yourself.
    pub async fn signed_url(&self, id: Uuid, expires_in: Duration) -> Result<Option<url::Url>> {
        traced(site!("signed_url", "media"), async {
            if expires_in.is_zero() || expires_in > MAX_SIGNED_URL_TTL {
                return Err(Error::invalid(
                    Field::Expiry,
                    "must be between 1 s and 7 days",
                ));
            }
            let objects = self.state().objects().await?;
            let media = self.complete_row(id).await?;
            sign(objects, &media.storage_key, expires_in).await
        })
        .await
    }

    /// Removes what crashes left: pending rows created more than
    /// `older_than` ago (with their objects, if written), then every object
    /// under the store's key prefix that has no row. Run it from time to
    /// time with a bound well above the longest upload; an upload still
    /// running when its row is swept fails with
    /// [`Error::UploadInterrupted`] and removes its object.
    ///
    /// Not found by `sweep`: the parts of a multipart upload that a crash
    /// cut short on a cloud store (they are not objects yet); give the
    /// bucket a lifecycle rule that aborts incomplete multipart uploads
    /// after a day. The local store's part files are removed when the
    /// upload is dropped, and lost with the process in memory.
    pub async fn sweep(&self, older_than: Duration) -> Result<SweepReport> {
        traced(site!("sweep", "media"), async {
            let objects = self.state().objects().await?;
            let rows = self.rows();
            let mut report = SweepReport::default();
            let bound = chrono::Duration::from_std(older_than)
                .map_err(|_| Error::invalid(Field::Expiry, "too long"))?;
            let before = self.store.now() - bound;
            loop {
                let stale = rows.stale_pending(before, 500).await?;
                if stale.is_empty() {
                    break;
                }
                for (id, _) in stale {
                    // The row first, and only if still pending: an upload
                    // that completes meanwhile keeps its row and object;
                    // one that completes after finds no row, fails, and
                    // removes its object itself.
                    if let Some(key) = rows.remove_pending(id).await? {
                        delete_object(objects, &key).await?;
                        report.pending_rows += 1;
                    }
                }
            }
            let prefix = Path::from(self.state().storage.prefix.as_str());
            let mut listed = objects.store.list(Some(&prefix)).chunks(500);
            while let Some(batch) = listed.next().await {
                let mut found = Vec::with_capacity(batch.len());
                for meta in batch {
                    let meta = meta.map_err(object_error)?;
                    let id = meta
                        .location
                        .filename()
                        .and_then(|n| Uuid::parse_str(n).ok());
                    if let Some(id) = id.filter(|id| self.key(*id) == meta.location) {
                        found.push(id);
                    }
                }
                let kept = rows.existing(&found).await?;
                for id in found.into_iter().filter(|id| !kept.contains(id)) {
                    delete_object(objects, self.key(id).as_ref()).await?;
                    report.orphan_objects += 1;
                }
            }
            Ok(report)
        })
        .await
    }
}

/// Bytes hashed on the uploading task itself; past them, the hashing goes
/// to a thread of its own, beside the writing.
const INLINE_HASH_BYTES: u64 = 1024 * 1024;
/// The hashing thread is given the bytes in batches of about this size.
const HASH_BATCH_BYTES: usize = 1024 * 1024;
/// Batches queued for the hashing thread before the upload waits for it.
const HASH_QUEUE: usize = 4;

/// Counts and hashes the bytes of an upload, and enforces its limit.
///
/// SHA-256 is the only real work an upload adds to moving the bytes. The
/// first MiB is hashed in line (a small file costs no thread); beyond it,
/// batches of the same `Bytes` (shared, not copied) go in order to a
/// blocking thread, so hashing runs beside the writes instead of between
/// them. At most [`HASH_QUEUE`] batches wait for it.
struct Counted {
    size: u64,
    max: u64,
    hash: Hashing,
}

enum Hashing {
    Inline(Sha256),
    Thread {
        batch: Vec<Bytes>,
        batch_bytes: usize,
        queue: tokio::sync::mpsc::Sender<Vec<Bytes>>,
        done: tokio::task::JoinHandle<Sha256>,
    },
    Taken,
}

impl Counted {
    fn new(max: u64) -> Self {
        Counted {
            size: 0,
            max,
            hash: Hashing::Inline(Sha256::new()),
        }
    }

    async fn take(&mut self, chunk: Bytes) -> Result<Bytes> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(Error::invalid(
                Field::Content,
                format!("larger than the limit of {} bytes", self.max),
            ));
        }
        if let Hashing::Inline(hasher) = &mut self.hash {
            if self.size <= INLINE_HASH_BYTES {
                hasher.update(&chunk);
                return Ok(chunk);
            }
            let Hashing::Inline(mut hasher) = std::mem::replace(&mut self.hash, Hashing::Taken)
            else {
                unreachable!()
            };
            let (queue, mut batches) = tokio::sync::mpsc::channel::<Vec<Bytes>>(HASH_QUEUE);
            let done = tokio::task::spawn_blocking(move || {
                while let Some(batch) = batches.blocking_recv() {
                    for bytes in &batch {
                        hasher.update(bytes);
                    }
                }
                hasher
            });
            self.hash = Hashing::Thread {
                batch: Vec::new(),
                batch_bytes: 0,
                queue,
                done,
            };
        }
        if let Hashing::Thread {
            batch,
            batch_bytes,
            queue,
            ..
        } = &mut self.hash
        {
            *batch_bytes += chunk.len();
            batch.push(chunk.clone());
            if *batch_bytes >= HASH_BATCH_BYTES {
                *batch_bytes = 0;
                let full = std::mem::take(batch);
                queue.send(full).await.map_err(|_| hashing_failed())?;
            }
        }
        Ok(chunk)
    }

    async fn hex_digest(&mut self) -> Result<String> {
        let hasher = match std::mem::replace(&mut self.hash, Hashing::Taken) {
            Hashing::Inline(hasher) => hasher,
            Hashing::Thread {
                batch, queue, done, ..
            } => {
                if !batch.is_empty() {
                    queue.send(batch).await.map_err(|_| hashing_failed())?;
                }
                drop(queue);
                done.await.map_err(|_| hashing_failed())?
            }
            Hashing::Taken => return Err(hashing_failed()),
        };
        let digest = hasher.finalize();
        let mut hex = String::with_capacity(64);
        push_hex(&mut hex, &digest);
        Ok(hex)
    }
}

/// The hashing thread ended without a digest (it panicked, or the runtime
/// is shutting down).
fn hashing_failed() -> Error {
    Error::UploadInterrupted {
        source: "the upload's hashing stopped before the end of the bytes".into(),
    }
}

async fn next_chunk<S, E>(body: &mut std::pin::Pin<&mut S>) -> Result<Option<Bytes>>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: Into<BoxError>,
{
    loop {
        match body.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(Error::UploadInterrupted { source: e.into() }),
            Some(Ok(c)) if c.is_empty() => continue,
            Some(Ok(c)) => return Ok(Some(c)),
        }
    }
}

/// The first `n` bytes of `chunks`, copied into one buffer.
fn joined_prefix(chunks: &[Bytes], n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    for c in chunks {
        let take = (n - out.len()).min(c.len());
        out.extend_from_slice(&c[..take]);
        if out.len() == n {
            break;
        }
    }
    out
}

/// Writes the object: one `put` if it fits in one part, otherwise a
/// multipart upload, aborted if anything fails.
async fn write_object<S, E>(
    objects: &Objects,
    key: &Path,
    part_bytes: usize,
    mut buffered: Vec<Bytes>,
    mut ended: bool,
    body: &mut std::pin::Pin<&mut S>,
    upload: &mut Counted,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: Into<BoxError>,
{
    let mut held: usize = buffered.iter().map(Bytes::len).sum();
    while !ended && held < part_bytes {
        match next_chunk(body).await? {
            Some(chunk) => {
                held += chunk.len();
                buffered.push(upload.take(chunk).await?);
            }
            None => ended = true,
        }
    }
    if ended {
        let payload: PutPayload = buffered.into_iter().collect();
        objects
            .store
            .put(key, payload)
            .await
            .map_err(object_error)?;
        return Ok(());
    }
    let multipart = objects
        .store
        .put_multipart(key)
        .await
        .map_err(object_error)?;
    let mut writer = WriteMultipart::new_with_chunk_size(multipart, part_bytes);
    let sent: Result<()> = async {
        for chunk in buffered {
            writer.put(chunk);
        }
        while let Some(chunk) = next_chunk(body).await? {
            let chunk = upload.take(chunk).await?;
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(object_error)?;
            writer.put(chunk);
        }
        Ok(())
    }
    .await;
    match sent {
        Ok(()) => writer.finish().await.map(drop).map_err(object_error),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// How much of a local file each blocking read takes.
const FILE_READ_BYTES: usize = 256 * 1024;

/// The bytes `range` of a local store's open file, read on the blocking
/// pool in [`FILE_READ_BYTES`] pieces. (`GetResult::into_stream` reads 8 KiB
/// per blocking call, which made a local download cost about 1.7 times
/// the work of the bytes.)
fn read_file(file: std::fs::File, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
    use std::io::{Read, Seek, SeekFrom};
    let unreadable = |e: std::io::Error| Error::Unavailable {
        backend: Service::ObjectStore,
        source: BoxError::from(e),
    };
    futures_util::stream::try_unfold(
        (Some(file), range.start, range.end - range.start),
        move |(file, offset, left)| async move {
            let Some(mut file) = file.filter(|_| left > 0) else {
                return Ok(None);
            };
            let (file, read) = tokio::task::spawn_blocking(move || {
                let want = left.min(FILE_READ_BYTES as u64) as usize;
                let mut buf = Vec::with_capacity(want);
                file.seek(SeekFrom::Start(offset))?;
                (&mut file).take(want as u64).read_to_end(&mut buf)?;
                if buf.len() < want {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                Ok::<_, std::io::Error>((file, buf))
            })
            .await
            .map_err(|e| unreadable(std::io::Error::other(e)))?
            .map_err(unreadable)?;
            let n = read.len() as u64;
            Ok(Some((
                Bytes::from(read),
                (Some(file), offset + n, left - n),
            )))
        },
    )
    .boxed()
}

async fn delete_object(objects: &Objects, key: &str) -> Result<()> {
    match objects.store.delete(&Path::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(object_error(e)),
    }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
async fn sign(objects: &Objects, key: &str, expires_in: Duration) -> Result<Option<url::Url>> {
    let Some(signer) = &objects.signer else {
        return Ok(None);
    };
    signer
        .signed_url(http::Method::GET, &Path::from(key), expires_in)
        .await
        .map(Some)
        .map_err(object_error)
}

#[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
async fn sign(_: &Objects, _: &str, _: Duration) -> Result<Option<url::Url>> {
    Ok(None)
}
