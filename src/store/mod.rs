//! The event store: an append-only log in one SQLite file.
//!
//! One writer per process, on a thread of its own, owns the only writing connection and
//! commits appends in groups (see [`writer`]); readers use a separate pool of query-only
//! connections, so reads never block the writer (SQLite's WAL mode). Several processes may open the same file: SQLite's
//! write lock, taken with `BEGIN IMMEDIATE`, orders their commits.

pub mod archive;
pub mod chain;
pub(crate) mod dialect;
pub mod feed;
pub(crate) mod holder;
mod migrate;
mod pg;
mod probe;
mod read;
mod snapshots;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::event::{Appended, ExpectedVersion, NewEvent};

pub use dialect::Target;
pub use holder::note_path as holder_note_path;
pub use migrate::SCHEMA_VERSION;
pub(crate) use probe::Mark as ChangeMark;

pub use read::{EventFilter, EventStream};
pub use snapshots::{Checkpoint, Snapshot, Uncovered};
pub use verify::{CheckResult, ExpectedHead, VerifyOptions, VerifyReport};
pub use writer::{ImportReport, ImportSink, StreamAppend};

/// How hard a commit tries to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every acknowledged append survives a process crash and a power
    /// loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL` in WAL mode: survives a process crash; a power loss may lose the
    /// newest acknowledged commits but never corrupts the file. Faster.
    Normal,
}

impl std::str::FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(Error::InvalidInput(format!(
                "durability must be `full` or `normal`, not {other:?}"
            ))),
        }
    }
}

/// Told of the writer's work, for metrics (see [`Store::observe`]). Called on the writer's
/// thread after each group: keep it to a few atomic updates.
pub trait StoreObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A group commit stored this many events (retries answered from the log not counted).
    fn group_committed(&self, events: usize);
    /// An append was answered, `ok` or with an error, this long after it was queued.
    fn append_answered(&self, waited: Duration, ok: bool);
}

/// The observer, set at most once, shared by the store and its writer.
pub(crate) type ObserverSlot = Arc<std::sync::OnceLock<Arc<dyn StoreObserver>>>;

/// Settings for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Stamps `recorded_at`. Defaults to the system clock.
    pub clock: Arc<dyn Clock>,
    /// Create (and migrate) the file when it does not exist, or is empty. When false, a
    /// missing file is an error, and so is an empty one or an SQLite file that holds nothing
    /// ([`Error::NotHealstore`]): only a store that may create a database makes a file one.
    pub create: bool,
    /// Read connections in the pool.
    pub readers: u32,
    /// How long a write waits for another process's write lock before it fails with
    /// [`Error::Busy`] ("retry later", naming what holds the lock when it is a healstore
    /// import, archive or rebuild). Long (10 minutes by default): an import of millions of
    /// events holds the lock for minutes, and a caller's append should wait for it rather than
    /// fail; only a lock held for longer than that (something stuck) is reported.
    pub busy_timeout: Duration,
    /// Most events committed in one group. Bounds the writer's memory and commit latency.
    pub max_batch_events: usize,
    /// How often a live tail looks for events appended by other processes (appends through this
    /// store wake it at once).
    pub poll_interval: Duration,
    /// Rows per page of a long scan. Pages keep read transactions short, so that WAL
    /// checkpoints are never held back by a reader.
    pub page_size: u32,
    /// Chain every event's hash to the previous one (the default). Off only to measure what
    /// the chain costs: events appended without it fail `verify`.
    pub hash_chain: bool,
    /// A cap on the database file's size, in pages (SQLite's `max_page_count`; pages are
    /// 4 KiB): appends that would grow the file further fail with [`Error::DiskFull`] and write
    /// nothing, as on a full disk. `None`: no cap beyond the disk's.
    pub max_pages: Option<u32>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            clock: Arc::new(SystemClock),
            create: true,
            readers: 4,
            busy_timeout: Duration::from_secs(600),
            max_batch_events: 4096,
            poll_interval: Duration::from_millis(200),
            page_size: 1000,
            hash_chain: true,
            max_pages: None,
        }
    }
}

/// A handle on an open event store. Cheap to clone; all clones share one writer.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    options: StoreOptions,
    requests: mpsc::Sender<writer::Request>,
    /// The next append's ticket (see [`Store::submit_atomic_after`]); 0 is never given.
    tickets: std::sync::atomic::AtomicU64,
    /// The read connections, of either backend.
    readers: dialect::Db,
    /// The highest position this process has committed; wakes live tails.
    head: watch::Receiver<i64>,
    /// Whether anyone committed since an earlier look (see [`probe`]).
    probe: probe::ChangeProbe,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    observer: ObserverSlot,
}

impl Store {
    /// Opens (and creates and migrates, when `options.create`) the store at `path`: an
    /// SQLite file (a path or an `sqlite:` URL), or a PostgreSQL database (a `postgres://`
    /// URL; see [`Target`]).
    pub async fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = match Target::parse(path.as_ref()) {
            Target::Postgres(url) => return pg::open(&url, options).await,
            Target::Sqlite(path) => path,
        };
        check_path(&path, options.create)?;
        // No journal mode here: switching to WAL writes the file's header, and a foreign
        // database must be refused untouched. `enable_wal` switches once the file is known.
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(options.busy_timeout)
            // Checkpoints run on their own connection (see `checkpointer`), off the commit
            // path: an automatic checkpoint inside a commit made that commit tens of
            // milliseconds slower every thousand pages.
            .pragma("wal_autocheckpoint", "0")
            // A WAL that a burst (or a reader holding an old snapshot) let grow is cut back to
            // this size when it next starts over, rather than keeping its largest size.
            .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            // Statement-level logging would be one line per append: keep sqlx quiet. A slow
            // statement is most often an append waiting for another process's write lock,
            // which is normal under contention: a debug line, not a warning on stderr.
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1));

        let writer_options = base
            .clone()
            // The writer's page cache: index inserts scatter over many pages (one per stream
            // and agent in a group), and SQLite's default 2 MiB cache made the engine's own
            // ceiling fall from about 110k to 35k rows/s as the file grew past it.
            .pragma("cache_size", format!("-{}", WRITER_CACHE_KIB))
            // Room for every INSERT size the fast path writes (see `writer`) and the look-ups.
            .statement_cache_capacity(128)
            .create_if_missing(options.create);
        let writer_options = match options.max_pages {
            Some(pages) => writer_options.pragma("max_page_count", pages.to_string()),
            None => writer_options,
        };
        let mut conn = writer_options
            .connect()
            .await
            .map_err(|e| Error::from_db(e, &path))?;
        // A damaged file can pass `open`; make SQLite read its header now, so that the error
        // names the file rather than surfacing on the first append.
        sqlx::query("SELECT count(*) FROM sqlite_schema")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Error::from_db(e, &path))?;
        migrate::refuse_foreign(&mut conn, &path, options.create).await?;
        enable_wal(&mut conn, &path, options.busy_timeout).await?;
        restrict_permissions(&path);
        migrate::migrate(&mut conn, &path).await?;

        let readers = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .min_connections(0)
            // Waiting for a reader is queueing, not contention (WAL readers never block each
            // other or the writer): a long analytics question (several queries at once) must not
            // fail as "busy" because the readers are all at work for longer than sqlx's default
            // 30 s. Callers that need a bound (the server) set their own request timeout.
            .acquire_timeout(std::time::Duration::from_secs(600))
            .connect_lazy_with(base.clone().pragma("query_only", "ON"));

        let head_now = writer::head_position(&mut conn)
            .await
            .map_err(|e| Error::from_db(e, &path))?;
        let (head_tx, head_rx) = watch::channel(head_now);
        let (req_tx, req_rx) = mpsc::channel(1024);
        let (stop_tx, stop_rx) = oneshot::channel();
        let commits = Arc::new(tokio::sync::Notify::new());
        let checkpoints = base
            .clone()
            .connect()
            .await
            .map_err(|e| Error::from_db(e, &path))?;
        let wal = Arc::new(WalLength::default());
        let observer = ObserverSlot::default();
        let task =
            writer::Writer::new(conn, writer_options, path.clone(), options.clone(), head_tx)
                .with_commit_signal(commits.clone(), wal.clone())
                .with_observer(observer.clone())
                .spawn(req_rx, stop_rx)
                .map_err(|e| Error::Open {
                    path: path.clone(),
                    reason: format!("cannot start the writer thread: {e}"),
                })?;
        let checkpointer = tokio::spawn(checkpointer(checkpoints, commits, wal, task));

        Ok(Store::assemble(
            path,
            options,
            dialect::Db::Sqlite(readers),
            req_tx,
            head_rx,
            checkpointer,
            stop_tx,
            observer,
        ))
    }

    /// A store around a running writer, of either backend.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        path: PathBuf,
        options: StoreOptions,
        readers: dialect::Db,
        requests: mpsc::Sender<writer::Request>,
        head: watch::Receiver<i64>,
        writer: tokio::task::JoinHandle<()>,
        shutdown: oneshot::Sender<()>,
        observer: ObserverSlot,
    ) -> Store {
        // (PostgreSQL has no file to look at: a catch-up there always asks the database)
        let probe = match readers.dialect() {
            dialect::Dialect::Sqlite => probe::ChangeProbe::new(&path),
            dialect::Dialect::Postgres => probe::ChangeProbe::none(),
        };
        Store {
            inner: Arc::new(Inner {
                path,
                options,
                requests,
                tickets: std::sync::atomic::AtomicU64::new(1),
                readers,
                head,
                probe,
                writer: Mutex::new(Some(writer)),
                shutdown: Mutex::new(Some(shutdown)),
                observer,
            }),
        }
    }

    /// The read connections, of either backend, for queries shared between them.
    pub(crate) fn db(&self) -> &dialect::Db {
        &self.inner.readers
    }

    /// Whether the store is on PostgreSQL (see [`Target`]).
    pub fn is_postgres(&self) -> bool {
        self.inner.readers.dialect() == dialect::Dialect::Postgres
    }

    /// Fails with "not yet available on PostgreSQL: `what`" on a PostgreSQL store: for what
    /// needs the analytics read models or SQLite's file, which the PostgreSQL backend does not
    /// have yet.
    pub fn require_sqlite(&self, what: &str) -> Result<()> {
        if self.is_postgres() {
            Err(dialect::not_yet(what))
        } else {
            Ok(())
        }
    }

    /// Drops every read model and rebuilds it from the events in one transaction (see
    /// [`crate::analytics::Analytics::rebuild`]).
    pub(crate) async fn rebuild_read_models(&self) -> Result<crate::analytics::RebuildReport> {
        self.ask(writer::Request::RebuildReadModels).await
    }

    /// Sends the writer a request built around a reply channel, and awaits the reply.
    pub(crate) async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T>>) -> writer::Request,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(request(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Sets the observer told of every group commit and append answer (metrics). Only the
    /// first call takes effect: false when an observer was already set.
    pub fn observe(&self, observer: Arc<dyn StoreObserver>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// The highest position this process has committed, changed after each of its commits
    /// (live tails wait on it; other processes' commits do not move it).
    pub(crate) fn head_watch(&self) -> watch::Receiver<i64> {
        self.inner.head.clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// Appends events to one stream, atomically, after checking the version the stream is
    /// expected to be at. Returns once the events are committed (durably, as the store's
    /// [`Durability`] says).
    ///
    /// Idempotent: when every event id is already stored (a retry of an append that was
    /// committed), nothing is written and the original positions are returned with
    /// `duplicate: true`, whatever the expected version.
    pub async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Appended>> {
        self.submit(stream_id, expected, events).await?.await
    }

    /// Queues an append and returns at once with a handle that resolves when it is committed.
    /// Appends queued one after another from one task are committed in that order, so a caller
    /// can keep many appends in flight (a pipeline) without reordering a stream.
    pub async fn submit(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<PendingAppend> {
        self.submit_atomic(vec![StreamAppend {
            stream_id: stream_id.to_owned(),
            expected,
            events,
        }])
        .await
    }

    /// Appends to several streams at once: every part is committed, or none is (a version
    /// conflict on one part fails them all). Answers are in part order.
    pub async fn append_atomic(&self, parts: Vec<StreamAppend>) -> Result<Vec<Appended>> {
        self.submit_atomic(parts).await?.await
    }

    /// [`Store::append_atomic`], queued like [`Store::submit`].
    pub async fn submit_atomic(&self, parts: Vec<StreamAppend>) -> Result<PendingAppend> {
        self.submit_atomic_after(parts, Vec::new()).await
    }

    /// [`Store::submit_atomic`] for an append decided on the outcome of earlier appends that
    /// are still on their way (`after`: their [`PendingAppend::ticket`]s): should one of them
    /// not be stored, neither is this one, which fails with [`Error::DependencyFailed`]. Appends
    /// are stored in the order they were submitted, so a caller may decide on what it has
    /// submitted without waiting for it to be committed.
    pub async fn submit_atomic_after(
        &self,
        parts: Vec<StreamAppend>,
        after: Vec<u64>,
    ) -> Result<PendingAppend> {
        for p in &parts {
            crate::event::check_id("stream_id", &p.stream_id)?;
            for e in &p.events {
                e.validate()?;
            }
        }
        let (reply, answer) = oneshot::channel();
        let ticket = self
            .inner
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let parts: Vec<StreamAppend> = parts.into_iter().filter(|p| !p.events.is_empty()).collect();
        if parts.is_empty() && after.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(PendingAppend(answer, ticket));
        }
        let parts = parts
            .into_iter()
            .map(writer::PreparedPart::try_from)
            .collect::<Result<_>>()?;
        let req = writer::Request::Append(writer::AppendRequest {
            parts,
            ticket,
            after,
            reply,
            submitted: self.inner.observer.get().map(|_| std::time::Instant::now()),
        });
        self.inner
            .requests
            .send(req)
            .await
            .map_err(|_| Error::Closed)?;
        Ok(PendingAppend(answer, ticket))
    }

    /// Appends one event with no version check.
    pub async fn append_one(&self, stream_id: &str, event: NewEvent) -> Result<Appended> {
        let mut out = self
            .append(stream_id, ExpectedVersion::Any, vec![event])
            .await?;
        out.pop().ok_or(Error::Closed)
    }

    /// Starts an all-or-nothing import: events sent to the returned sink are written in one
    /// transaction, committed by [`ImportSink::finish`]. Other appends from this process wait
    /// until it ends; other processes wait on SQLite's lock (up to the busy timeout).
    pub async fn begin_import(&self) -> Result<ImportSink> {
        writer::ImportSink::start(&self.inner.requests).await
    }

    /// The highest committed position in the database (0 when empty).
    pub async fn head_position(&self) -> Result<i64> {
        let v = (self.inner.readers)
            .int("SELECT MAX(position) FROM events", &[])
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(v.unwrap_or(0))
    }

    /// Whether the store can serve: its writer task is alive, and the database's schema is
    /// the one this healstore writes (another process may have migrated it since it was
    /// opened). Reads the schema history with one query.
    pub async fn readiness(&self) -> Result<Readiness> {
        let schema_version = (self.inner.readers)
            .int(
                "SELECT CAST(MAX(version) AS BIGINT) FROM refinery_schema_history",
                &[],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let schema_version = schema_version.unwrap_or(0);
        let current = match self.inner.readers.dialect() {
            dialect::Dialect::Sqlite => SCHEMA_VERSION,
            dialect::Dialect::Postgres => pg::SCHEMA_VERSION,
        };
        Ok(Readiness {
            writer_alive: !self.inner.requests.is_closed(),
            schema_version,
            schema_current: schema_version == current,
        })
    }

    /// A mark of every commit so far, by any connection of any process, read without a query:
    /// while it is equal to an earlier one, nothing was committed in between. `None`: not
    /// known (ask the database).
    pub(crate) fn change_mark(&self) -> Option<ChangeMark> {
        self.inner.probe.mark()
    }

    /// The newest event's position (0 when none) and the archive anchor's (events at or below
    /// it were archived), read together.
    pub(crate) async fn head_and_anchor(&self) -> Result<(i64, i64)> {
        (self.inner.readers)
            .two_ints(
                "SELECT COALESCE((SELECT MAX(position) FROM events), 0), \
                        COALESCE((SELECT position FROM chain_anchor WHERE id = 1), 0)",
                &[],
            )
            .await
            .map_err(|e| self.db_err(e))
    }

    /// Whether an event id is stored.
    pub async fn event_exists(&self, event_id: &str) -> Result<bool> {
        let v = (self.inner.readers)
            .int(
                "SELECT position FROM events WHERE event_id = ?",
                &[dialect::Param::Text(event_id.to_owned())],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(v.is_some())
    }

    /// The number of events in a stream (its current version).
    pub async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        let v = (self.inner.readers)
            .int(
                "SELECT COALESCE((SELECT MAX(stream_version) FROM events WHERE stream_id = ?1), \
                     (SELECT version FROM archived_streams WHERE stream_id = ?1))",
                &[dialect::Param::Text(stream_id.to_owned())],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Events matching `filter`, read lazily page by page (see [`EventFilter`] for the order).
    pub fn read(&self, filter: EventFilter) -> EventStream {
        read::stream(self.clone(), filter, false)
    }

    /// One stream's events after `after_version`, in version order (paged like [`Store::read`]).
    pub fn read_stream_after(&self, stream_id: &str, after_version: u64) -> EventStream {
        read::stream_after(self.clone(), stream_id, after_version)
    }

    /// Like [`Store::read`] in position order, then waits for new events and delivers them
    /// as they are committed, by this process or any other. Ends only when dropped.
    pub fn follow(&self, filter: EventFilter) -> EventStream {
        read::stream(self.clone(), filter, true)
    }

    /// The read pool of an SQLite store, for analytics and other read models.
    ///
    /// # Panics
    /// On a PostgreSQL store, whose analytics read models are not built yet: callers check
    /// [`Store::require_sqlite`] first (the command line refuses such commands with "not yet
    /// available on PostgreSQL").
    pub fn read_pool(&self) -> &SqlitePool {
        match &self.inner.readers {
            dialect::Db::Sqlite(pool) => pool,
            dialect::Db::Postgres(_) => panic!(
                "not yet available on PostgreSQL: the SQLite read pool (check \
                 Store::require_sqlite first)"
            ),
        }
    }

    /// Finishes pending appends, stops the writer and closes every connection.
    pub async fn close(self) -> Result<()> {
        let stop = self
            .inner
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.inner.readers.close().await;
        Ok(())
    }

    fn db_err(&self, e: sqlx::Error) -> Error {
        Error::from_db(e, &self.inner.path)
    }
}

/// What [`Store::readiness`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// The task that owns the writing connection still takes appends.
    pub writer_alive: bool,
    /// The newest migration applied to the file.
    pub schema_version: i64,
    /// The file's schema is the one this healstore writes ([`SCHEMA_VERSION`]).
    pub schema_current: bool,
}

impl Readiness {
    /// Everything holds.
    pub fn ready(&self) -> bool {
        self.writer_alive && self.schema_current
    }
}

/// An append on its way to the disk (see [`Store::submit`]).
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Result<Vec<Appended>>>, u64);

impl PendingAppend {
    /// This append's number, for appends decided after it (see
    /// [`Store::submit_atomic_after`]).
    pub fn ticket(&self) -> u64 {
        self.1
    }

    /// True once the append has been answered (awaiting it will not wait).
    pub fn is_ready(&self) -> bool {
        !self.0.is_empty()
    }
}

impl std::future::Future for PendingAppend {
    type Output = Result<Vec<Appended>>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// Puts the file in WAL mode (readers never block the writer). SQLite does not wait on its busy
/// handler for this switch, so another process creating the same file at the same moment
/// makes it fail at once: retry until the busy timeout has passed.
async fn enable_wal(
    conn: &mut sqlx::SqliteConnection,
    path: &Path,
    busy_timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let r: std::result::Result<String, sqlx::Error> =
            sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&mut *conn)
                .await;
        match r {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(Error::Open {
                    path: path.to_path_buf(),
                    reason: format!("cannot use WAL journaling (the file stays in {mode} mode)"),
                });
            }
            Err(e) if Error::is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(Error::from_db(e, path)),
        }
    }
}

/// Runs WAL checkpoints on a connection of its own while the writer runs: passive ones (they
/// never wait for or block the writer or readers), at most every 100 ms and only after
/// commits, so that the WAL stays small without a commit ever paying for a checkpoint. (50 ms,
/// 500 ms and 5 s gave heal latencies within this machine's fsync noise of each other.) Ends
/// with the writer, after a last checkpoint.
/// The writer connection's page cache, in KiB.
pub const WRITER_CACHE_KIB: u32 = 64 * 1024;

const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// The WAL's length in frames (pages) as the checkpointer last measured it.
#[derive(Debug, Default)]
pub(crate) struct WalLength {
    pub frames: std::sync::atomic::AtomicI64,
}

/// A WAL longer than this (16 MiB of 4 KiB pages) is made to start over (see
/// `Writer::restart_wal`).
pub(crate) const WAL_RESTART_FRAMES: i64 = 4096;

async fn checkpointer(
    mut conn: sqlx::SqliteConnection,
    commits: Arc<tokio::sync::Notify>,
    wal: Arc<WalLength>,
    mut writer: oneshot::Receiver<()>,
) {
    use sqlx::Connection as _;
    loop {
        tokio::select! {
            _ = &mut writer => break,
            _ = commits.notified() => {
                tokio::time::sleep(CHECKPOINT_INTERVAL).await;
                match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut conn)
                    .await
                {
                    Ok((_, log, _)) => wal.frames.store(log, std::sync::atomic::Ordering::Relaxed),
                    Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
                }
            }
        }
    }
    let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
}

/// Checks that the path can be a database before SQLite sees it, for clearer errors.
fn check_path(path: &Path, create: bool) -> Result<()> {
    let open_err = |reason: &str| Error::Open {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(open_err("it is a directory")),
        Ok(m) if !m.is_file() => Err(open_err("it is not a regular file")),
        // SQLite takes an empty file for a new database; only a store that may create one
        // makes it one. (Checked before SQLite opens it: SQLite would delete a write-ahead
        // log lying beside an empty file.)
        Ok(m) if m.len() == 0 && !create => Err(Error::not_healstore(path, "the file is empty")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if create {
                Ok(())
            } else {
                Err(Error::NotFound(format!(
                    "database {} does not exist (no such file; create it with `healstore init`)",
                    path.display()
                )))
            }
        }
        Err(e) => Err(open_err(&e.to_string())),
    }
}

/// The log is an audit record: only its owner may read it. Best effort (the file may belong
/// to someone else, who opened it for us to read).
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        for p in [
            path.to_path_buf(),
            PathBuf::from(format!("{}-wal", path.display())),
            PathBuf::from(format!("{}-shm", path.display())),
        ] {
            if let Ok(m) = mode(&p)
                && m & 0o077 != 0
            {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}
