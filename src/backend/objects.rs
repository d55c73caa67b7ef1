//! Where media bytes live: an `object_store` store (a local folder, memory,
//! S3 and other clouds), chosen by [`MediaStorage`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
use object_store::signer::Signer;

use crate::error::{Backend as Service, BoxError, Error, Result};

/// The object store media bytes go to. Build one with
/// [`local`](Self::local), [`in_memory`](Self::in_memory), a cloud
/// constructor (`s3`, `gcs`, `azure`, each behind the cargo feature of
/// that name) or [`custom`](Self::custom), and give it to
/// `StoreBuilder::media_storage`. Every object's key is
/// `{key_prefix}/{id}` (see [`key_prefix`](Self::key_prefix)).
#[derive(Clone)]
pub struct MediaStorage {
    pub(crate) kind: StorageKind,
    pub(crate) prefix: String,
}

#[derive(Clone)]
pub(crate) enum StorageKind {
    /// A folder, created (with its parents) on first use.
    Local(PathBuf),
    Ready(Objects),
}

/// A resolved store: the objects, and the signer for cloud stores.
#[derive(Clone)]
pub(crate) struct Objects {
    pub store: Arc<dyn ObjectStore>,
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    pub signer: Option<Arc<dyn Signer>>,
}

impl Objects {
    fn plain(store: Arc<dyn ObjectStore>) -> Self {
        Objects {
            store,
            #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
            signer: None,
        }
    }

    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn signing<S: ObjectStore + Signer>(store: S) -> Self {
        let store = Arc::new(store);
        Objects {
            store: store.clone(),
            signer: Some(store),
        }
    }
}

/// The default folder of the local store: `./media`.
pub const DEFAULT_MEDIA_ROOT: &str = "./media";
/// The default prefix of every object key: `media`.
pub const DEFAULT_KEY_PREFIX: &str = "media";

impl fmt::Debug for MediaStorage {
    /// The kind of store only: no URL or credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            StorageKind::Local(root) => format!("local({})", root.display()),
            StorageKind::Ready(o) => format!("{}", o.store),
        };
        // A cloud store's Display names its bucket, never its credentials.
        f.debug_struct("MediaStorage")
            .field("store", &kind)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Default for MediaStorage {
    /// The local folder `./media`.
    fn default() -> Self {
        MediaStorage::local(DEFAULT_MEDIA_ROOT)
    }
}

impl MediaStorage {
    fn of(kind: StorageKind) -> Self {
        MediaStorage {
            kind,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
        }
    }

    /// Files under the folder `root` (created, with its parents, on first
    /// use). Signed URLs are not available: serve the files yourself (see
    /// the `axum_media` example).
    pub fn local(root: impl Into<PathBuf>) -> Self {
        MediaStorage::of(StorageKind::Local(root.into()))
    }

    /// Files in this process's memory, lost when it exits: for tests.
    pub fn in_memory() -> Self {
        MediaStorage::of(StorageKind::Ready(Objects::plain(Arc::new(
            object_store::memory::InMemory::new(),
        ))))
    }

    /// Any `object_store` store, for stores this crate has no constructor
    /// for (or a wrapper around one). Signed URLs are not available.
    pub fn custom(store: Arc<dyn ObjectStore>) -> Self {
        MediaStorage::of(StorageKind::Ready(Objects::plain(store)))
    }

    /// Every object key starts with `prefix/` (default `media`). Stores that
    /// share a bucket need prefixes of their own: [`sweep`] removes any
    /// object under its prefix that has no row in its own database.
    ///
    /// [`sweep`]: crate::MediaFiles::sweep
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_matches('/').to_owned();
        self
    }

    /// The store, the local folder created if need be.
    pub(crate) fn resolve(&self) -> Result<Objects> {
        match &self.kind {
            StorageKind::Ready(o) => Ok(o.clone()),
            StorageKind::Local(root) => {
                std::fs::create_dir_all(root).map_err(|e| {
                    Error::Config(format!(
                        "cannot create the media folder {}: {e}",
                        root.display()
                    ))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| Error::Config(format!("media folder {}: {e}", root.display())))?;
                Ok(Objects::plain(Arc::new(fs)))
            }
        }
    }
}

#[cfg(feature = "s3")]
#[cfg_attr(docsrs, doc(cfg(feature = "s3")))]
impl MediaStorage {
    /// Amazon S3 or any S3-compatible service (Cloudflare R2, MinIO, ...):
    /// `s3://bucket`, with the usual AWS variables read from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT` for a non-AWS service,
    /// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint, ...), then
    /// overridden by `options`: pairs of `object_store`'s
    /// `AmazonS3ConfigKey` names (`"endpoint"`, `"access_key_id"`,
    /// `"region"`, `"allow_http"`, ...) and values. Signed URLs work.
    pub fn s3<K: AsRef<str>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let mut builder = AmazonS3Builder::from_env().with_url(url);
        for (k, v) in options {
            let key: AmazonS3ConfigKey = k.as_ref().parse().map_err(config)?;
            builder = builder.with_config(key, v);
        }
        let s3 = builder.build().map_err(config)?;
        Ok(MediaStorage::of(StorageKind::Ready(Objects::signing(s3))))
    }
}

#[cfg(feature = "gcs")]
#[cfg_attr(docsrs, doc(cfg(feature = "gcs")))]
impl MediaStorage {
    /// Google Cloud Storage: `gs://bucket`, credentials from the
    /// environment (`GOOGLE_SERVICE_ACCOUNT`, ...). Signed URLs work.
    pub fn gcs(url: &str) -> Result<Self> {
        let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(url)
            .build()
            .map_err(config)?;
        Ok(MediaStorage::of(StorageKind::Ready(Objects::signing(gcs))))
    }
}

#[cfg(feature = "azure")]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
impl MediaStorage {
    /// Azure Blob Storage: `az://container`, credentials from the
    /// environment (`AZURE_STORAGE_ACCOUNT_NAME`, ...). Signed URLs work.
    pub fn azure(url: &str) -> Result<Self> {
        let az = object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(url)
            .build()
            .map_err(config)?;
        Ok(MediaStorage::of(StorageKind::Ready(Objects::signing(az))))
    }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn config(e: object_store::Error) -> Error {
    // The builders' messages name keys and URLs, never secret values.
    Error::Config(format!("media storage: {e}"))
}

/// An object store's error: `NotFound` for a missing object, otherwise the
/// store is unavailable.
pub(crate) fn object_error(e: object_store::Error) -> Error {
    Error::Unavailable {
        backend: Service::ObjectStore,
        source: BoxError::from(e),
    }
}
