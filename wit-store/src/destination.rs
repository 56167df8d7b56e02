//! Where complete files are published: a local directory (by hard link, then rename-free and
//! atomic) or any `object_store` (uploaded, in parts when large, retried with backoff); and
//! the whole-blob `read`, `put` and `delete` that compaction, the janitor and index blobs use.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::runtime::Handle;

use crate::error::io;
use crate::runtime::IoRuntime;
use crate::writer::{Staged, sync_dir};
use crate::{Error, NodeName, Result, SinkConfig};

/// Where a store's files live: a local directory ([`local`](Self::local)), any
/// `object_store` ([`object_store`](Self::object_store)), or either from a URL
/// ([`from_url`](Self::from_url), a builder).
///
/// ```
/// use wit_store::Destination;
///
/// let dir = tempfile::tempdir()?;
/// let local = Destination::local(dir.path())?;
/// assert!(local.to_string().starts_with("file://"));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Destination {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Local {
        root: PathBuf,
    },
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        url: String,
        runtime: IoRuntime,
    },
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Destination({self})")
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Local { root } => write!(f, "file://{}", root.display()),
            Target::Object { url, .. } => f.write_str(url),
        }
    }
}

/// An object-store error of `op` on the object `path`.
fn object(op: &'static str, path: &ObjectPath) -> impl FnOnce(object_store::Error) -> Error + use<> {
    let path = path.to_string();
    move |source| Error::ObjectStore {
        op,
        path,
        source: Box::new(source),
    }
}

impl Destination {
    /// A directory on a local file system (created if missing). Files are published by hard
    /// link from the staging directory (`.staging/` under `root` by default), which is atomic
    /// and copies nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be created.
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(io("create the destination directory", root))?;
        let root = root
            .canonicalize()
            .map_err(io("resolve the destination directory", root))?;
        Ok(Destination {
            target: Target::Local { root },
        })
    }

    /// Any object store, under `prefix` (may be empty). Files are uploaded from a local
    /// staging directory. Failed requests are retried as the store was built to retry
    /// (object_store's `RetryConfig`): this crate adds no retries of its own. The I/O runs on
    /// a runtime of the destination's own, started on first use, unless
    /// [`with_runtime`](Self::with_runtime) gives it the host's.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an invalid prefix.
    pub fn object_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self> {
        let prefix = ObjectPath::parse(prefix).map_err(|e| Error::InvalidConfig {
            reason: format!("object store prefix `{prefix}`: {e}"),
        })?;
        let url = format!("{store}/{prefix}");
        Ok(Destination {
            target: Target::Object {
                store,
                prefix,
                url,
                runtime: IoRuntime::owned(),
            },
        })
    }

    /// Runs this destination's object-storage I/O on the host's runtime instead of one of its
    /// own. The blocking methods ([`ParquetSink`](crate::ParquetSink)'s, [`read`](Self::read),
    /// [`put`](Self::put), ...) then spawn their work there and wait for it: call them from
    /// outside that runtime's worker threads (a blocking thread, as
    /// [`AsyncParquetSink`](crate::AsyncParquetSink) does), and give a multi-thread runtime.
    /// A local destination does no async I/O and ignores it.
    ///
    /// ```
    /// use wit_store::Destination;
    ///
    /// let runtime = tokio::runtime::Runtime::new()?;
    /// let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
    /// let destination = Destination::object_store(memory, "data")?.with_runtime(runtime.handle().clone());
    /// destination.put("acme/logs/a.index", bytes::Bytes::from_static(b"postings"))?;
    /// assert_eq!(destination.read("acme/logs/a.index")?, &b"postings"[..]);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_runtime(mut self, handle: Handle) -> Self {
        if let Target::Object { runtime, .. } = &mut self.target {
            *runtime = IoRuntime::Host(handle);
        }
        self
    }

    /// A destination from a URL, built by the returned [`DestinationBuilder`]: a `file://`
    /// URL for a local directory; `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (and the other forms `object_store` parses) for object
    /// storage, configured from the environment as usual (`AWS_*`, `GOOGLE_*`, `AZURE_*`)
    /// plus the builder's options. A string without a scheme is refused rather than taken for
    /// a path: [`local`](Self::local) takes paths.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wit_store::{Destination, Error};
    ///
    /// let s3 = Destination::from_url("s3://bucket/wit")
    ///     .with_option("aws_endpoint", "http://127.0.0.1:9000")
    ///     .with_option("aws_region", "us-east-1")
    ///     .with_retries(3, Duration::from_secs(30))
    ///     .build()?;
    /// assert_eq!(s3.to_string(), "s3://bucket/wit");
    ///
    /// let err = Destination::from_url("/var/lib/wit").build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    /// # Ok::<_, Error>(())
    /// ```
    pub fn from_url(url: &str) -> DestinationBuilder {
        DestinationBuilder {
            url: url.to_owned(),
            options: Vec::new(),
            retry: object_store::RetryConfig::default(),
            runtime: None,
        }
    }

    /// The staging directory used when the configuration names none.
    pub(crate) fn default_staging(&self, node: &NodeName) -> PathBuf {
        match &self.target {
            Target::Local { root } => root.join(".staging"),
            Target::Object { .. } => std::env::temp_dir().join("wit-store-staging").join(node.as_str()),
        }
    }

    pub(crate) fn is_local(&self) -> bool {
        matches!(self.target, Target::Local { .. })
    }

    fn object_path(prefix: &ObjectPath, path: &str) -> ObjectPath {
        prefix.parts().chain(ObjectPath::from(path).parts()).collect()
    }

    /// Publishes a staged file under its final path, blocking until it is there.
    pub(crate) fn publish(&self, staged: &Staged, config: &SinkConfig) -> Result<()> {
        match &self.target {
            Target::Local { root } => publish_local(root, staged),
            Target::Object {
                store, prefix, runtime, ..
            } => {
                let (store, local) = (store.clone(), staged.local.clone());
                let dest = Self::object_path(prefix, &staged.file.path);
                let part = config.upload_part_bytes;
                let destination = self.to_string();
                runtime.run(async move {
                    upload(store.as_ref(), &local, &dest, part)
                        .await
                        .map_err(|source| Error::Upload {
                            path: dest.to_string(),
                            destination,
                            local,
                            source: Box::new(source),
                        })
                })
            }
        }
    }

    /// Checks a path given to [`read`](Self::read), [`put`](Self::put) or
    /// [`delete`](Self::delete) by the rules of a file path in the catalog, so no call reaches
    /// outside the root.
    fn check_path(path: &str) -> Result<()> {
        match crate::catalog::path_problem(path) {
            None => Ok(()),
            Some(problem) => Err(Error::InvalidFile {
                path: path.to_owned(),
                reason: format!("the path {problem}"),
            }),
        }
    }

    /// The whole blob (a published file, an index) under `path`, relative to the root.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFile`] for a path that is not relative (see
    /// [`StoredFile::validate`](crate::StoredFile::validate)); [`Error::Io`] (local) or
    /// [`Error::ObjectStore`] when it cannot be read, a missing blob included.
    ///
    /// # Examples
    ///
    /// ```
    /// use wit_store::Destination;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Destination::local(dir.path())?;
    /// store.put("acme/logs/a.index", bytes::Bytes::from_static(b"postings"))?;
    /// assert_eq!(store.read("acme/logs/a.index")?, &b"postings"[..]);
    /// assert!(store.read("acme/logs/missing.index").is_err());
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(&self, path: &str) -> Result<Bytes> {
        Self::check_path(path)?;
        match &self.target {
            Target::Local { root } => {
                let full = root.join(path);
                std::fs::read(&full).map(Bytes::from).map_err(io("read", &full))
            }
            Target::Object {
                store, prefix, runtime, ..
            } => {
                let (store, dest) = (store.clone(), Self::object_path(prefix, path));
                runtime.run(async move {
                    let failed = object("read", &dest);
                    let got = store.get(&dest).await;
                    got.map_err(object("read", &dest))?.bytes().await.map_err(failed)
                })
            }
        }
    }

    /// Publishes `bytes` as the whole blob under `path` (relative to the root), atomically and
    /// durably, replacing any blob there: a reader sees the old blob or the new one, never
    /// part of one, and once this returns the blob survives a crash. For index blobs and other
    /// small objects written whole; Parquet files go through the sink.
    ///
    /// Locally the bytes are written to `{path}.tmp`, fsynced, renamed to `path`, and every
    /// directory from its parent up to the root is fsynced (a crash before the rename may
    /// leave the `.tmp` file, which the next `put` of the same path overwrites). Two `put`s
    /// of one path at once are not supported. On object storage it is one `put` request
    /// (atomic by the store's contract), retried by the object store client's own retry
    /// settings (those [`DestinationBuilder::with_retries`] sets).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFile`] for a path that is not relative; [`Error::Io`] (local) or
    /// [`Error::ObjectStore`] when the blob cannot be written. The blob under `path` is then
    /// the old one, or none.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use wit_store::Destination;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Destination::local(dir.path())?;
    /// store.put("acme/logs/2026/a.index", Bytes::from_static(b"first"))?;
    /// store.put("acme/logs/2026/a.index", Bytes::from_static(b"second"))?; // replaces it
    /// assert_eq!(std::fs::read(dir.path().join("acme/logs/2026/a.index"))?, b"second");
    /// assert!(!dir.path().join("acme/logs/2026/a.index.tmp").exists());
    /// store.delete("acme/logs/2026/a.index")?;
    /// store.delete("acme/logs/2026/a.index")?; // already gone is fine
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        Self::check_path(path)?;
        match &self.target {
            Target::Local { root } => put_local(root, path, &bytes),
            Target::Object {
                store, prefix, runtime, ..
            } => {
                let (store, dest) = (store.clone(), Self::object_path(prefix, path));
                runtime.run(async move {
                    let put = store.put(&dest, PutPayload::from(bytes)).await;
                    put.map(drop).map_err(object("put", &dest))
                })
            }
        }
    }

    /// The destination as an `object_store` rooted where its files' paths start, for readers
    /// that take one (DataFusion's Parquet scan): a stored file's `path` names the same bytes
    /// here. Locally a `LocalFileSystem` over the root; on object storage the store under the
    /// prefix. Reads only: writing through it bypasses the publish rules.
    ///
    /// ```
    /// use object_store::{ObjectStoreExt, path::Path};
    /// use wit_store::Destination;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let destination = Destination::local(dir.path())?;
    /// destination.put("acme/logs/a.index", bytes::Bytes::from_static(b"postings"))?;
    /// let store = destination.reader()?;
    /// let got = futures::executor::block_on(async {
    ///     store.get(&Path::from("acme/logs/a.index")).await?.bytes().await
    /// })?;
    /// assert_eq!(got, &b"postings"[..]);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the local root cannot be opened.
    pub fn reader(&self) -> Result<Arc<dyn ObjectStore>> {
        match &self.target {
            Target::Local { root } => {
                let store = object_store::local::LocalFileSystem::new_with_prefix(root).map_err(|e| Error::Io {
                    op: "open a reader over",
                    path: root.clone(),
                    source: std::io::Error::other(e),
                })?;
                Ok(Arc::new(store))
            }
            Target::Object { store, prefix, .. } if prefix.as_ref().is_empty() => Ok(store.clone()),
            Target::Object { store, prefix, .. } => Ok(Arc::new(object_store::prefix::PrefixStore::new(
                store.clone(),
                prefix.clone(),
            ))),
        }
    }

    /// Deletes the blob under `path` (relative to the root); one already gone is fine, so a
    /// janitor may repeat this after a crash. Locally the parent directory is fsynced after.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFile`] for a path that is not relative; [`Error::Io`] (local) or
    /// [`Error::ObjectStore`] when it cannot be deleted.
    ///
    /// # Examples
    ///
    /// See [`put`](Self::put).
    pub fn delete(&self, path: &str) -> Result<()> {
        Self::check_path(path)?;
        match &self.target {
            Target::Local { root } => {
                let full = root.join(path);
                match std::fs::remove_file(&full) {
                    Ok(()) => sync_dir(full.parent().unwrap_or(root)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::Io {
                        op: "delete",
                        path: full,
                        source: e,
                    }),
                }
            }
            Target::Object {
                store, prefix, runtime, ..
            } => {
                let (store, dest) = (store.clone(), Self::object_path(prefix, path));
                runtime.run(async move {
                    match store.delete(&dest).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        other => other.map_err(object("delete", &dest)),
                    }
                })
            }
        }
    }
}

/// Writes `bytes` to `root/path` through `{path}.tmp`: write, fsync, rename into place, then
/// fsync every directory from its parent up to `root`.
fn put_local(root: &Path, path: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let target = root.join(path);
    let parent = target.parent().unwrap_or(root);
    std::fs::create_dir_all(parent).map_err(io("create the directory", parent))?;
    let mut tmp_name = target.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &target).map_err(io("rename a temporary file to", &target))?;
    sync_up_to(root, parent)
}

/// Links the staged file under `root/path` (or, when staging is on another file system,
/// copies it there under a temporary name, syncs and renames it), then syncs every directory
/// from its parent up to `root`, so the new entries survive a crash. A link that already
/// exists to the same file is fine (a publish repeated after a crash).
fn publish_local(root: &Path, staged: &Staged) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let target = root.join(&staged.file.path);
    let parent = target.parent().unwrap_or(root);
    std::fs::create_dir_all(parent).map_err(io("create the directory", parent))?;
    if let Err(e) = std::fs::hard_link(&staged.local, &target) {
        if e.kind() == std::io::ErrorKind::CrossesDevices {
            // Staging on another file system: copy, sync, then rename into place.
            let tmp = target.with_extension("parquet.tmp");
            std::fs::copy(&staged.local, &tmp).map_err(io("copy the staged file to", &tmp))?;
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(io("sync", &tmp))?;
            std::fs::rename(&tmp, &target).map_err(io("rename a temporary copy to", &target))?;
            return sync_up_to(root, parent);
        }
        let same = e.kind() == std::io::ErrorKind::AlreadyExists
            && std::fs::metadata(&target)
                .ok()
                .zip(std::fs::metadata(&staged.local).ok())
                .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
        if !same {
            return Err(Error::Io {
                op: "link the staged file to",
                path: target,
                source: e,
            });
        }
    }
    sync_up_to(root, parent)
}

/// Syncs `dir` and each directory above it up to `root`.
fn sync_up_to(root: &Path, dir: &Path) -> Result<()> {
    let mut dir = Some(dir);
    while let Some(d) = dir {
        sync_dir(d)?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Uploads a local file: in one request when it fits one part, else as a multipart upload
/// (aborted on failure, so no parts are left behind).
async fn upload(store: &dyn ObjectStore, local: &Path, dest: &ObjectPath, part: usize) -> object_store::Result<()> {
    let local_err = |source: std::io::Error| object_store::Error::Generic {
        store: "local staging",
        source: Box::new(Error::Io {
            op: "read the staged file",
            path: local.to_owned(),
            source,
        }),
    };
    let mut file = File::open(local).map_err(local_err)?;
    let len = file.metadata().map_err(local_err)?.len();
    if len <= part as u64 {
        let mut data = Vec::with_capacity(len as usize);
        file.read_to_end(&mut data).map_err(local_err)?;
        store.put(dest, PutPayload::from(data)).await?;
        return Ok(());
    }
    let mut writer = WriteMultipart::new_with_chunk_size(store.put_multipart(dest).await?, part);
    let mut buf = vec![0; part];
    let result = async {
        loop {
            let n = read_full(&mut file, &mut buf).map_err(local_err)?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => writer.finish().await.map(drop),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Builds a [`Destination`] from a URL: see [`Destination::from_url`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DestinationBuilder {
    url: String,
    options: Vec<(String, String)>,
    retry: object_store::RetryConfig,
    runtime: Option<Handle>,
}

impl DestinationBuilder {
    /// An object_store configuration key and its value, e.g. `("aws_endpoint",
    /// "http://127.0.0.1:9000")`; checked by [`build`](Self::build).
    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Several options at once; see [`with_option`](Self::with_option).
    pub fn with_options<K: Into<String>, V: Into<String>>(mut self, options: impl IntoIterator<Item = (K, V)>) -> Self {
        self.options
            .extend(options.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// How often the object store client retries a failed request (with exponential
    /// backoff), and for how long at most: the one retry layer under every upload, read, put
    /// and delete. object_store's defaults (10 retries, at most 3 minutes) otherwise. A file
    /// whose upload still fails stays staged, and the sink's next publish uploads it again.
    pub fn with_retries(mut self, max_retries: usize, timeout: Duration) -> Self {
        self.retry.max_retries = max_retries;
        self.retry.retry_timeout = timeout;
        self
    }

    /// Runs the destination's I/O on the host's runtime: see [`Destination::with_runtime`].
    pub fn with_runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// The destination.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a string without a scheme, an unparsable URL, an unknown
    /// scheme or option; [`Error::Io`] for a local directory that cannot be created.
    pub fn build(self) -> Result<Destination> {
        let DestinationBuilder {
            url,
            options,
            retry,
            runtime,
        } = self;
        let invalid = |reason: String| Error::InvalidConfig { reason };
        let parsed = url::Url::parse(&url).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => invalid(format!(
                "destination `{url}` has no scheme: give `file://` and an absolute path for a local directory, or an object store URL"
            )),
            e => invalid(format!("destination URL `{url}`: {e}")),
        })?;
        if parsed.scheme() == "file" {
            let path = parsed
                .to_file_path()
                .map_err(|()| invalid(format!("`{url}` is not a local path")))?;
            return Destination::local(&path);
        }
        let (scheme, path) =
            object_store::ObjectStoreScheme::parse(&parsed).map_err(|e| invalid(format!("`{url}`: {e}")))?;
        let bad_option = |k: &str, e: object_store::Error| invalid(format!("option `{k}` for `{url}`: {e}"));
        // The three builders share no trait: one body, expanded for each.
        macro_rules! build {
            ($builder:ty) => {{
                let mut b = <$builder>::from_env().with_url(url.as_str()).with_retry(retry);
                for (k, v) in options {
                    let key = k.parse().map_err(|e| bad_option(&k, e))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| invalid(format!("`{url}`: {e}")))?) as Arc<dyn ObjectStore>
            }};
        }
        let store = match scheme {
            object_store::ObjectStoreScheme::AmazonS3 => build!(object_store::aws::AmazonS3Builder),
            object_store::ObjectStoreScheme::GoogleCloudStorage => build!(object_store::gcp::GoogleCloudStorageBuilder),
            object_store::ObjectStoreScheme::MicrosoftAzure => build!(object_store::azure::MicrosoftAzureBuilder),
            other => return Err(invalid(format!("`{url}`: {other:?} is not a supported destination"))),
        };
        let mut dest = Destination::object_store(store, path.as_ref())?;
        if let Target::Object { url: shown, .. } = &mut dest.target {
            shown.clone_from(&url);
        }
        Ok(match runtime {
            Some(handle) => dest.with_runtime(handle),
            None => dest,
        })
    }
}
