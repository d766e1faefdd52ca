//! The single writer: group commit.
//!
//! Every append in the process is sent to one task, on a thread of its own (see
//! [`Writer::spawn`]), that owns the only writing connection. The task takes whatever requests
//! are waiting (up to `max_batch_events`), writes them all in one transaction, usually a single
//! guarded INSERT in one round trip to SQLite (see [`Writer::try_fast`]), and only then answers
//! each caller. While one group commits (and waits for its fsync), the next group gathers, so
//! the number of commits per second stays near the disk's fsync rate while the number of
//! events per commit grows with the load.
//!
//! Why `BEGIN IMMEDIATE` where a group cannot take that way: the transaction reads (ids
//! already stored, stream versions) and then writes. A deferred transaction would take the
//! write lock only at its first write, and when another process holds it, SQLite fails that
//! upgrade at once with SQLITE_BUSY instead of waiting. IMMEDIATE takes the lock first, waiting
//! up to the busy timeout.
//!
//! Why explicit positions: under the write lock nobody else can insert, so the writer reads
//! the AUTOINCREMENT counter once and numbers the rows itself, which gives each caller its
//! positions without a RETURNING clause (whose row order SQLite does not promise).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions};
use sqlx::{Arguments, AssertSqlSafe, ConnectOptions, Connection, Row as _, SqliteConnection};
use tokio::sync::{mpsc, oneshot, watch};

use super::StoreOptions;
use crate::error::{Error, Result, sqlite_code};
use crate::event::{Appended, ExpectedVersion, IndexFields, NewEvent};
use crate::time::to_micros;

pub(crate) enum Request {
    Append(AppendRequest),
    Import(ImportRequest),
    Checkpoint(super::snapshots::Checkpoint, oneshot::Sender<Result<()>>),
    DropSnapshots(oneshot::Sender<Result<()>>),
    RebuildReadModels(oneshot::Sender<Result<crate::analytics::RebuildReport>>),
    Archive(Box<super::archive::Cut>, oneshot::Sender<Result<i64>>),
}

pub(crate) struct AppendRequest {
    /// All parts commit together or not at all.
    pub parts: Vec<PreparedPart>,
    /// This request's number, for later requests that depend on it.
    pub ticket: u64,
    /// Earlier requests this one was decided after: should one of them not be stored,
    /// neither is this one ([`Error::DependencyFailed`]).
    pub after: Vec<u64>,
    pub reply: oneshot::Sender<Result<Vec<Appended>>>,
    /// When it was queued; set only while a [`super::StoreObserver`] listens.
    pub submitted: Option<std::time::Instant>,
}

/// An event made ready for the writer by the caller's task: its payload serialised and its
/// indexed fields extracted there, in parallel, rather than in the single writer.
pub(crate) struct PreparedEvent {
    pub event: NewEvent,
    pub payload: String,
    pub index: IndexFields,
}

impl PreparedEvent {
    pub fn new(mut event: NewEvent) -> Self {
        let payload = canonical(&event.payload);
        let index = IndexFields::from_payload(&event.payload);
        // The writer needs only the text: the tree is freed here, by the caller's task, rather
        // than by the single writer after the commit.
        drop(std::mem::take(&mut event.payload));
        PreparedEvent {
            payload,
            index,
            event,
        }
    }

    /// About how many bytes the event holds in memory.
    pub fn size(&self) -> usize {
        self.payload.len() + self.event.event_id.len() + self.event.event_type.len() + 256
    }

    /// [`PreparedEvent::new`] for an event from outside the store: its stored payload must
    /// fit a line (see [`crate::input::MAX_PAYLOAD_BYTES`]), so that every stored event can be
    /// exported and imported again.
    pub fn checked(event: NewEvent) -> Result<Self> {
        let prepared = PreparedEvent::new(event);
        let max = crate::input::MAX_PAYLOAD_BYTES;
        if prepared.payload.len() > max {
            return Err(Error::InvalidEvent(format!(
                "the payload of {} is {} bytes long; at most {max} are allowed (an event line \
                 holds at most {} bytes)",
                prepared.event.event_id,
                prepared.payload.len(),
                crate::input::MAX_LINE_BYTES
            )));
        }
        Ok(prepared)
    }
}

/// A [`StreamAppend`] with its events prepared.
pub(crate) struct PreparedPart {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<PreparedEvent>,
}

impl TryFrom<StreamAppend> for PreparedPart {
    type Error = Error;

    fn try_from(p: StreamAppend) -> Result<Self> {
        Ok(PreparedPart {
            stream_id: p.stream_id,
            expected: p.expected,
            events: p
                .events
                .into_iter()
                .map(PreparedEvent::checked)
                .collect::<Result<_>>()?,
        })
    }
}

/// Events for one stream, with the version that stream is expected to be at; part of an
/// atomic append that may span several streams (see [`crate::Store::append_atomic`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

pub(crate) struct ImportRequest {
    pub(super) items: mpsc::Receiver<ImportItem>,
    pub(super) reply: oneshot::Sender<Result<ImportReport>>,
}

// Nearly every item is an event; boxing it to shrink the rare `Abort` would cost an allocation
// per imported event.
#[allow(clippy::large_enum_variant)]
pub(super) enum ImportItem {
    Event {
        line: u64,
        stream_id: String,
        expected: ExpectedVersion,
        event: PreparedEvent,
        /// The event's share of [`IMPORT_BYTES_IN_FLIGHT`], given back once it is written.
        budget: tokio::sync::OwnedSemaphorePermit,
    },
    Abort,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Events written.
    pub imported: u64,
    /// Events whose id was already stored (with the same content): skipped.
    pub duplicates: u64,
}

/// The sending side of an all-or-nothing import (see [`crate::Store::begin_import`]).
pub struct ImportSink {
    items: mpsc::Sender<ImportItem>,
    reply: oneshot::Receiver<Result<ImportReport>>,
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

impl ImportSink {
    pub(crate) async fn start(requests: &mpsc::Sender<Request>) -> Result<ImportSink> {
        let (items_tx, items_rx) = mpsc::channel(IMPORT_CHUNK * 2);
        let (reply_tx, reply_rx) = oneshot::channel();
        requests
            .send(Request::Import(ImportRequest {
                items: items_rx,
                reply: reply_tx,
            }))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(ImportSink {
            items: items_tx,
            reply: reply_rx,
            budget: std::sync::Arc::new(tokio::sync::Semaphore::new(IMPORT_BYTES_IN_FLIGHT)),
        })
    }

    /// Adds one event; `line` is named in the error if the writer refuses it. An event that
    /// is not valid (or too large) is refused here, and nothing of it is sent: abort the
    /// import, or go on without it. [`Error::Closed`] means the import has already failed
    /// (and was rolled back): call [`ImportSink::finish`] for the reason.
    pub async fn send(&mut self, line: u64, stream_id: String, event: NewEvent) -> Result<()> {
        crate::event::check_id("stream_id", &stream_id)?;
        event.validate()?;
        let event = PreparedEvent::checked(event)?;
        // Events wait here while the writer holds as many bytes as it may: memory stays
        // bounded however large the events and however slow the disk.
        let weight = (event.size() + stream_id.len()).min(IMPORT_BYTES_IN_FLIGHT) as u32;
        let budget = std::sync::Arc::clone(&self.budget)
            .acquire_many_owned(weight)
            .await
            .map_err(|_| Error::Closed)?;
        self.items
            .send(ImportItem::Event {
                line,
                stream_id,
                expected: ExpectedVersion::Any,
                event,
                budget,
            })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Commits everything sent, or reports why nothing was written.
    pub async fn finish(self) -> Result<ImportReport> {
        drop(self.items);
        self.reply.await.map_err(|_| Error::Closed)?
    }

    /// Rolls everything back.
    pub async fn abort(self) {
        let _ = self.items.send(ImportItem::Abort).await;
        drop(self.items);
        let _ = self.reply.await;
    }
}

/// Items an import writes per round of look-ups and INSERTs.
pub(super) const IMPORT_CHUNK: usize = 512;

/// Bytes of events an import writes per round at most (a round of large events ends early).
pub(super) const IMPORT_CHUNK_BYTES: usize = 8 << 20;

/// Bytes of events an import holds at most between the reader and the database: what was
/// sent and not yet written. It must exceed [`IMPORT_CHUNK_BYTES`] (a round is written once
/// it holds that much, which frees its share for the next events).
const IMPORT_BYTES_IN_FLIGHT: usize = 32 << 20;

/// Largest multi-row INSERT. 16 columns x 128 rows = 2,048 bound parameters, well under
/// SQLite's limit (32,766); larger statements gained nothing measurable.
const MAX_ROWS_PER_INSERT: usize = 128;

/// Bound parameters per look-up statement.
const MAX_LOOKUP_PARAMS: usize = 900;

pub(crate) struct Writer {
    conn: SqliteConnection,
    /// How `conn` was opened, to open it again (see [`Writer::recover`]).
    connect: SqliteConnectOptions,
    path: PathBuf,
    options: StoreOptions,
    head: watch::Sender<i64>,
    /// Told after every commit (the checkpointer listens).
    commits: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// The WAL's length as last measured (see [`Writer::restart_wal`]).
    wal: std::sync::Arc<super::WalLength>,
    versions: VersionCache,
    /// The fast path has begun a transaction (`BEGIN IMMEDIATE`, for a group too large for one
    /// statement) that sqlx does not track: [`Writer::try_fast`] ends it if the group fails.
    open_transaction: bool,
    /// A connection could not be replaced after a failed transaction: it may still hold a
    /// transaction, so nothing may run on it in autocommit mode (see [`Writer::fast`]) until
    /// [`Writer::recover`] replaces it.
    suspect: bool,
    /// Tickets of recent requests that were not stored (see [`AppendRequest::after`]).
    failed: FailedTickets,
    /// Told of every group's answers (see [`super::StoreObserver`]).
    observer: super::ObserverSlot,
}

/// The tickets of the most recent requests that were not stored. A request depends only on
/// requests queued before it and still unanswered when it was decided, so a bounded memory of
/// the latest failures is enough.
#[derive(Default)]
pub(crate) struct FailedTickets {
    set: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

/// Failed tickets remembered.
const FAILED_TICKETS_KEPT: usize = 65_536;

impl FailedTickets {
    pub(super) fn insert(&mut self, ticket: u64) {
        if self.set.insert(ticket) {
            self.order.push_back(ticket);
            while self.order.len() > FAILED_TICKETS_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, ticket: &u64) -> bool {
        self.set.contains(ticket)
    }
}

/// Stream versions and the chain's tip as this writer left them, valid while the position
/// counter is still where its last commit left it (no other process has appended since). They
/// spare the fast path (see [`Writer::try_fast`]) every look-up while it appends to streams it
/// has seen; a stream the cache does not know is looked up, and the UNIQUE (stream, version)
/// key stands behind it.
#[derive(Default)]
struct VersionCache {
    /// The position counter after this writer's last commit; `None`: nothing is cached.
    head: Option<i64>,
    /// The newest event's hash after that commit.
    tip: super::chain::Hash,
    /// Whether any stream had archived events when the log was last looked up (an archive
    /// moves the position counter, so the cache cannot outlive one).
    archived: bool,
    map: HashMap<String, u64>,
}

/// Streams the cache holds at most; past that it starts afresh.
const VERSION_CACHE_STREAMS: usize = 100_000;

impl VersionCache {
    fn forget(&mut self) {
        self.head = None;
        self.map.clear();
    }

    fn remember(&mut self, counter: i64, tip: super::chain::Hash, versions: HashMap<String, u64>) {
        if self.head.is_none() || self.map.len() + versions.len() > VERSION_CACHE_STREAMS {
            self.map.clear();
        }
        self.map.extend(versions);
        self.head = Some(counter);
        self.tip = tip;
    }
}

/// True when an event id appears twice in a group (a retry queued behind its first try, or a
/// caller's mistake): such a group is planned with every look-up.
fn repeats_an_id(items: &[PlanItem<'_>]) -> bool {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .flat_map(|i| i.parts.iter())
        .flat_map(|p| p.events.iter())
        .any(|e| !seen.insert(e.event.event_id.as_str()))
}

impl Writer {
    pub fn new(
        conn: SqliteConnection,
        connect: SqliteConnectOptions,
        path: PathBuf,
        options: StoreOptions,
        head: watch::Sender<i64>,
    ) -> Writer {
        Writer {
            conn,
            connect,
            path,
            options,
            head,
            commits: None,
            wal: Default::default(),
            versions: VersionCache::default(),
            open_transaction: false,
            suspect: false,
            failed: FailedTickets::default(),
            observer: Default::default(),
        }
    }

    pub fn with_observer(mut self, observer: super::ObserverSlot) -> Writer {
        self.observer = observer;
        self
    }

    pub fn with_commit_signal(
        mut self,
        commits: std::sync::Arc<tokio::sync::Notify>,
        wal: std::sync::Arc<super::WalLength>,
    ) -> Writer {
        self.commits = Some(commits);
        self.wal = wal;
        self
    }

    /// Lets the WAL start over from its beginning once it has grown long.
    ///
    /// The checkpointer copies the WAL into the database file in the background, but SQLite
    /// rewinds the WAL only when a write transaction begins with every frame already copied,
    /// and under a steady stream of commits that never happens: the WAL grew by about 9 KB per
    /// event without bound (1.8 GB for 200,000 events), and every page written to its growing
    /// end cost the file system a new zeroed block. So when the checkpointer reports a long WAL,
    /// the writer itself, between two groups, copies the few frames the checkpointer has not
    /// yet copied (a passive checkpoint: it never waits for readers); the next commit then
    /// writes from the WAL's start, over blocks that already exist. A reader still holding an
    /// older snapshot only postpones this to a later report.
    async fn restart_wal(&mut self) {
        use std::sync::atomic::Ordering;
        if self.wal.frames.load(Ordering::Relaxed) < super::WAL_RESTART_FRAMES {
            return;
        }
        // Until the checkpointer measures again.
        self.wal.frames.store(0, Ordering::Relaxed);
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut self.conn)
            .await
        {
            Ok((busy, log, copied)) => {
                tracing::debug!(
                    busy,
                    log,
                    copied,
                    "writer checkpoint before the WAL restarts"
                )
            }
            Err(e) => tracing::debug!(error = %e, "writer checkpoint skipped"),
        }
    }

    fn committed(&self, last: Option<i64>) {
        if let Some(last) = last {
            self.head.send_if_modified(|h| {
                let newer = last > *h;
                if newer {
                    *h = last;
                }
                newer
            });
        }
        if let Some(c) = &self.commits {
            c.notify_one();
        }
    }

    /// Starts the writer on a thread of its own, with a runtime of its own; the receiver
    /// returned is told when it has stopped.
    ///
    /// Why not a task on the caller's runtime: every statement's answer comes back from
    /// SQLite's worker thread, from outside the runtime, and such a wake-up joins the runtime's
    /// global queue, which is served after the local ones. Under load those hold the appenders
    /// that the last commit just answered, so the writer waited behind them at every statement
    /// of every group, and SQLite sat idle for about a quarter of the time.
    pub fn spawn(
        self,
        requests: mpsc::Receiver<Request>,
        stop: oneshot::Receiver<()>,
    ) -> std::io::Result<oneshot::Receiver<()>> {
        let (done_tx, done_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("healstore-writer".into())
            .spawn(move || {
                runtime.block_on(self.run(requests, stop));
                let _ = done_tx.send(());
            })?;
        Ok(done_rx)
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Request>, mut stop: oneshot::Receiver<()>) {
        let mut pending: Option<Request> = None;
        let mut stopping = false;
        loop {
            let first = match pending.take() {
                Some(r) => r,
                None if stopping => match requests.recv().await {
                    Some(r) => r,
                    None => break,
                },
                None => tokio::select! {
                    r = requests.recv() => match r { Some(r) => r, None => break },
                    _ = &mut stop => {
                        // Serve what was already queued, then stop.
                        requests.close();
                        stopping = true;
                        continue;
                    }
                },
            };
            self.recover().await;
            if !matches!(first, Request::Append(_)) {
                // An import or an archive moves the position counter: what the fast path
                // remembers would only fail its guard once.
                self.versions.forget();
            }
            match first {
                Request::Import(imp) => self.import(imp).await,
                Request::Checkpoint(c, reply) => {
                    let now = to_micros(self.options.clock.now());
                    let r = super::snapshots::write(&mut self.conn, &c, now).await;
                    let _ = reply.send(r.map_err(|e| Error::from_db(e, &self.path)));
                }
                Request::DropSnapshots(reply) => {
                    let r = super::snapshots::drop_all(&mut self.conn).await;
                    let _ = reply.send(r.map_err(|e| Error::from_db(e, &self.path)));
                }
                Request::RebuildReadModels(reply) => {
                    let now = self.options.clock.now();
                    let r = rebuild_read_models(&mut self.conn, &self.path, now).await;
                    let _ = reply.send(r);
                }
                Request::Archive(cut, reply) => {
                    let r = self.archive(*cut).await;
                    if let Ok(p) = &r {
                        self.committed(Some(*p));
                    }
                    let _ = reply.send(r);
                }
                Request::Append(a) => {
                    let mut events = a.events();
                    let mut group = vec![a];
                    while events < self.options.max_batch_events {
                        match requests.try_recv() {
                            // A group stays within one fast-path statement where it can: past
                            // it, the group would be written in a transaction of several
                            // statements, each with a statement journal (see
                            // `FAST_ROWS_PER_INSERT`). The request left over opens the next.
                            Ok(Request::Append(a))
                                if events <= FAST_ROWS_PER_INSERT
                                    && events + a.events() > FAST_ROWS_PER_INSERT =>
                            {
                                pending = Some(Request::Append(a));
                                break;
                            }
                            Ok(Request::Append(a)) => {
                                events += a.events();
                                group.push(a);
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group).await;
                    self.restart_wal().await;
                }
            }
        }
        let _ = self.conn.close().await;
    }

    /// A COMMIT that fails (a full disk, an I/O error) can end with SQLite having rolled the
    /// transaction back while sqlx still counts it as open: sqlx's own ROLLBACK is then refused
    /// and every later BEGIN would be too, for good. Such a connection is replaced.
    async fn recover(&mut self) {
        if self.suspect {
            self.reconnect().await;
            return;
        }
        if !self.conn.is_in_transaction() {
            return;
        }
        // A rollback of the failed transaction may still be queued: let it run first.
        let _ = self.conn.ping().await;
        if !self.conn.is_in_transaction() {
            return;
        }
        self.reconnect().await;
    }

    async fn reconnect(&mut self) {
        match self.connect.connect().await {
            Ok(fresh) => {
                let stale = std::mem::replace(&mut self.conn, fresh);
                let _ = stale.close().await;
                self.suspect = false;
                tracing::debug!("writer connection replaced after a failed transaction");
            }
            Err(e) => {
                // Kept, but only for work that begins its own transaction: should it still
                // hold one, that BEGIN fails and the callers are told, rather than a group being
                // written into a transaction that is never committed.
                self.suspect = true;
                self.versions.forget();
                tracing::debug!(error = %e, "cannot reopen the writer connection");
            }
        }
    }

    /// Writes one group in one transaction and answers every caller.
    async fn commit_group(&mut self, group: Vec<AppendRequest>) {
        tracing::trace!(requests = group.len(), "group commit");
        let items: Vec<PlanItem<'_>> = group
            .iter()
            .map(|r| PlanItem {
                parts: r
                    .parts
                    .iter()
                    .map(|p| PlanPart {
                        stream_id: &p.stream_id,
                        expected: p.expected,
                        events: &p.events,
                    })
                    .collect(),
                ticket: r.ticket,
                after: &r.after,
            })
            .collect();
        let outcome = self.with_retry(&items).await;
        let outcome = match outcome {
            // One append the database refuses (a read model's trigger, a constraint, a value
            // SQLite cannot compute with) must not fail the others: the group is written again
            // one append at a time, and only the refused one fails. Only failed groups take
            // this path, so the steady state keeps its single statement.
            Err(e) if items.len() > 1 && refused_by_content(&e) => {
                tracing::debug!(error = %e, "group refused; writing its appends one at a time");
                let mut answers = Vec::with_capacity(items.len());
                let mut last = None;
                for item in items.chunks(1) {
                    let answer = match self.with_retry(item).await {
                        Ok((mut a, l)) => {
                            last = l.or(last);
                            a.pop().unwrap_or_else(|| Ok(Vec::new()))
                        }
                        Err(e) => Err(e),
                    };
                    // The next appends may depend on this one.
                    if answer.is_err() {
                        self.failed.insert(item[0].ticket);
                    }
                    answers.push(answer);
                }
                Ok((answers, last))
            }
            other => other,
        };
        drop(items);
        if let Some(o) = self.observer.get() {
            let answers = outcome.as_ref().ok().map(|(a, _)| a.as_slice());
            observe_group(o.as_ref(), &group, answers);
        }
        match outcome {
            Ok((answers, last)) => {
                self.committed(last);
                for (req, answer) in group.into_iter().zip(answers) {
                    if answer.is_err() {
                        self.failed.insert(req.ticket);
                    }
                    let _ = req.reply.send(answer);
                }
            }
            Err(e) => {
                // (every caller is answered with the error: reporting it is theirs to do)
                tracing::debug!(error = %e, "group commit failed; nothing of it was stored");
                let e = match e {
                    Error::Io(m) => {
                        Error::Io(format!("the write failed and nothing was stored: {m}"))
                    }
                    Error::Database(m) => {
                        Error::Database(format!("the write failed and nothing was stored: {m}"))
                    }
                    other => other,
                };
                for req in group {
                    self.failed.insert(req.ticket);
                    let _ = req.reply.send(Err(replicate(&e)));
                }
            }
        }
    }

    /// Runs the group's transaction, starting over when SQLite reports the lock busy (at once,
    /// as it does for a stale snapshot, or after its busy handler waited), until the busy
    /// timeout has passed since the group's first try; then the callers are told to retry
    /// later, with what holds the lock.
    async fn with_retry(
        &mut self,
        items: &[PlanItem<'_>],
    ) -> Result<(Vec<Result<Vec<Appended>>>, Option<i64>)> {
        let deadline = tokio::time::Instant::now() + self.options.busy_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match self.try_group(items).await {
                Err(e) if Error::is_busy(&e) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::from_db(e, &self.path));
                    }
                    tracing::debug!("database busy; retrying the group");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::from_db(e, &self.path)),
                Ok(v) => return Ok(v),
            }
        }
    }

    async fn try_group(
        &mut self,
        items: &[PlanItem<'_>],
    ) -> sqlx::Result<(Vec<Result<Vec<Appended>>>, Option<i64>)> {
        if !repeats_an_id(items)
            && let Some(done) = self.try_fast(items).await?
        {
            return Ok(done);
        }
        self.versions.forget();
        let recorded_at = to_micros(self.options.clock.now());
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let plan = plan(
            &mut tx,
            items,
            recorded_at,
            self.options.hash_chain,
            &self.failed,
        )
        .await?;
        insert_rows(&mut tx, &plan.rows).await?;
        tx.commit().await?;
        Ok((plan.answers, plan.rows.last().map(|r| r.position)))
    }

    /// The group on the assumption that no event id in it is already stored (so nothing is
    /// looked up by id), in as little as one round trip to SQLite.
    ///
    /// Stream versions, the position counter and the chain's tip come from [`VersionCache`]
    /// when it knows every stream of the group; otherwise from one look-up, outside any
    /// transaction. Either way they are only a guess until the INSERT checks, under the write
    /// lock, that the counter is still the one they were read at: every fast-path INSERT is
    /// guarded so (see [`fast_insert_sql`]) and writes nothing when another process appended
    /// in between. A group of at most [`FAST_ROWS_PER_INSERT`] rows is then one statement in
    /// SQLite's autocommit mode: its own transaction, which needs no statement journal (inside
    /// `BEGIN`, the read models' triggers made SQLite copy every page the INSERT touched into
    /// a temporary file first, about a third of the writer's time). Larger groups are written
    /// inside `BEGIN IMMEDIATE` ... `COMMIT`.
    ///
    /// Should the guard or a constraint refuse the rows (an id stored before: a retry), nothing
    /// is written and `None` tells the caller to plan the group with every look-up.
    async fn try_fast(
        &mut self,
        items: &[PlanItem<'_>],
    ) -> sqlx::Result<Option<(Vec<Result<Vec<Appended>>>, Option<i64>)>> {
        let outcome = self.fast(items).await;
        if !matches!(outcome, Ok(Some(_))) {
            self.versions.forget();
            if std::mem::take(&mut self.open_transaction) {
                self.roll_back().await;
            }
        }
        outcome
    }

    async fn fast(
        &mut self,
        items: &[PlanItem<'_>],
    ) -> sqlx::Result<Option<(Vec<Result<Vec<Appended>>>, Option<i64>)>> {
        if self.suspect {
            return Ok(None);
        }
        let recorded_at = to_micros(self.options.clock.now());
        let streams = streams_of(items);
        let (mut cached, mut uncached): (Vec<&str>, Vec<&str>) = streams
            .iter()
            .partition(|s| self.versions.map.contains_key(**s));
        // A stream the group creates (its first append expects no stream) is presumed new
        // rather than looked up: should it exist after all, its version 1 is stored and the
        // UNIQUE (stream, version) key refuses the INSERT, which sends the group to the way
        // with every look-up. Not while any stream has archived events: an archived stream
        // keeps no row at version 1. Every heal creates its failure's stream, so without this
        // nearly every group was a look-up and then the INSERT: two round trips.
        let mut presumed = Vec::new();
        if self.versions.head.is_some() && !self.versions.archived {
            let created = created_streams(items);
            (presumed, uncached) = uncached.into_iter().partition(|s| created.contains(s));
        }
        let found = match self.versions.head {
            Some(head) if uncached.is_empty() => {
                let versions = cached
                    .iter()
                    .map(|s| ((*s).to_owned(), self.versions.map[*s]))
                    .collect();
                (
                    HashMap::new(),
                    versions,
                    head,
                    self.versions.tip,
                    self.versions.archived,
                )
            }
            _ => {
                let (stored, mut versions, counter, tip, archived) =
                    look_up(&mut self.conn, &[], &uncached).await?;
                self.versions.archived = archived;
                if self.versions.head == Some(counter) {
                    for s in cached {
                        versions.insert(s.to_owned(), self.versions.map[s]);
                    }
                } else {
                    // Another process appended since this one last did: what is cached may
                    // be stale, and what was presumed new may exist (or be archived). (Should
                    // it append again before these are read, the guard refuses the INSERT.)
                    self.versions.forget();
                    cached.append(&mut presumed);
                    if !cached.is_empty() {
                        let (_, more, ..) = look_up(&mut self.conn, &[], &cached).await?;
                        versions.extend(more);
                    }
                }
                (stored, versions, counter, tip, archived)
            }
        };
        let (_, _, counter_before, tip_before, _) = found;
        let plan = plan_with(
            items,
            found,
            recorded_at,
            self.options.hash_chain,
            &self.failed,
        );
        // A refused append may be the retry of one already stored, which is answered with its
        // positions whatever version it states: only the look-up by id can tell.
        if plan.answers.iter().any(|a| a.is_err()) {
            return Ok(None);
        }
        let one_statement = plan.rows.len() <= FAST_ROWS_PER_INSERT;
        if !one_statement {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut self.conn)
                .await?;
            self.open_transaction = true;
        }
        let mut counter = counter_before;
        let mut rest = &plan.rows[..];
        while !rest.is_empty() {
            let (rows, later) = rest.split_at(rest.len().min(FAST_ROWS_PER_INSERT));
            rest = later;
            let size = fast_insert_size(rows.len());
            let mut args = bind_rows(rows)?;
            for _ in rows.len()..size {
                bind_padding(&mut args)?;
            }
            args.add(counter).map_err(sqlx::Error::Encode)?;
            match sqlx::query_with(fast_insert_sql(size), args)
                .execute(&mut self.conn)
                .await
            {
                Err(e) if sqlite_code::of(&e) == Some(sqlite_code::CONSTRAINT) => {
                    tracing::debug!(error = %e, "a constraint refused the group; planning it again");
                    return Ok(None);
                }
                Err(e) => return Err(e),
                Ok(done) if done.rows_affected() != rows.len() as u64 => {
                    tracing::debug!("another writer appended since the look-up; planning again");
                    return Ok(None);
                }
                Ok(_) => counter += rows.len() as i64,
            }
        }
        if !one_statement {
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
            self.open_transaction = false;
        }
        let tip = plan.rows.last().and_then(|r| r.hash).unwrap_or(tip_before);
        self.versions.remember(plan.counter, tip, plan.versions);
        Ok(Some((plan.answers, plan.rows.last().map(|r| r.position))))
    }

    /// Ends a transaction begun by [`Writer::fast`], if one is still open. A connection that
    /// cannot even roll back is replaced.
    async fn roll_back(&mut self) {
        match sqlx::query("ROLLBACK").execute(&mut self.conn).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("no transaction is active") => {}
            Err(e) => {
                tracing::debug!(error = %e, "rollback failed; replacing the writer connection");
                self.reconnect().await;
            }
        }
    }

    /// An all-or-nothing import in one transaction; items arrive while it runs.
    async fn import(&mut self, mut req: ImportRequest) {
        let result = self.import_inner(&mut req.items).await;
        if let Err(e) = &result {
            tracing::info!(error = %e, "import rolled back");
        }
        let _ = req.reply.send(result);
    }

    async fn import_inner(
        &mut self,
        items: &mut mpsc::Receiver<ImportItem>,
    ) -> Result<ImportReport> {
        let path = self.path.clone();
        let db = |e| Error::from_db(e, &path);
        let recorded_at = to_micros(self.options.clock.now());
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let _note = super::holder::Note::announce(&path, "an import", self.options.clock.now());
        let mut report = ImportReport::default();
        let mut chunk: Vec<(u64, String, ExpectedVersion, [PreparedEvent; 1])> = Vec::new();
        // The chunk's events' shares of the import's memory, given back once it is written.
        let mut budgets = Vec::new();
        let mut chunk_bytes = 0;
        let mut last = None;
        loop {
            let next = items.recv().await;
            let done = match next {
                Some(ImportItem::Event {
                    line,
                    stream_id,
                    expected,
                    event,
                    budget,
                }) => {
                    chunk_bytes += event.size();
                    chunk.push((line, stream_id, expected, [event]));
                    budgets.push(budget);
                    false
                }
                // The sink was aborted: dropping `tx` rolls back.
                Some(ImportItem::Abort) => {
                    return Err(Error::InvalidInput("import aborted".into()));
                }
                None => true,
            };
            if chunk.len() >= IMPORT_CHUNK
                || chunk_bytes >= IMPORT_CHUNK_BYTES
                || (done && !chunk.is_empty())
            {
                let plan_items: Vec<PlanItem<'_>> = chunk
                    .iter()
                    .map(|(_, s, exp, ev)| PlanItem {
                        parts: vec![PlanPart {
                            stream_id: s,
                            expected: *exp,
                            events: ev,
                        }],
                        ticket: 0,
                        after: &[],
                    })
                    .collect();
                let plan = plan(
                    &mut tx,
                    &plan_items,
                    recorded_at,
                    self.options.hash_chain,
                    &FailedTickets::default(),
                )
                .await
                .map_err(db)?;
                for ((line, ..), answer) in chunk.iter().zip(&plan.answers) {
                    match answer {
                        Ok(a) if a[0].duplicate => report.duplicates += 1,
                        Ok(_) => report.imported += 1,
                        Err(e) => return Err(Error::InvalidEvent(format!("line {line}: {e}"))),
                    }
                }
                insert_rows(&mut tx, &plan.rows).await.map_err(db)?;
                last = plan.rows.last().map(|r| r.position).or(last);
                chunk.clear();
                budgets.clear();
                chunk_bytes = 0;
            }
            if done {
                break;
            }
        }
        tx.commit().await.map_err(db)?;
        self.committed(last);
        Ok(report)
    }
}

/// The highest position ever assigned (0 for a new log).
pub(crate) async fn head_position(conn: &mut SqliteConnection) -> sqlx::Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(v.unwrap_or(0))
}

/// True when a failed group may have failed for one append's content rather than for the
/// database as a whole (a full disk, an I/O error, a busy lock, a read-only file, corruption,
/// each of its own kind): SQLite's generic error (a trigger's arithmetic, malformed JSON), a
/// constraint, a type mismatch, a value too big or out of range.
pub(super) fn refused_by_content(e: &Error) -> bool {
    matches!(e, Error::Database(_))
}

/// One error for each caller of a failed group: the same error, of the same kind.
/// Tells the observer what a group wrote and how long each of its appends waited.
pub(super) fn observe_group(
    o: &dyn super::StoreObserver,
    group: &[AppendRequest],
    answers: Option<&[Result<Vec<Appended>>]>,
) {
    let now = std::time::Instant::now();
    let mut events = 0;
    for (i, req) in group.iter().enumerate() {
        let answer = answers.and_then(|a| a.get(i)).and_then(|a| a.as_ref().ok());
        let ok = answer.is_some();
        // (a retry answered with what is stored wrote nothing)
        events += answer.map_or(0, |a| a.iter().filter(|e| !e.duplicate).count());
        if let Some(t) = req.submitted {
            o.append_answered(now.saturating_duration_since(t), ok);
        }
    }
    if events > 0 {
        o.group_committed(events);
    }
}

pub(super) fn replicate(e: &Error) -> Error {
    e.clone()
}

impl AppendRequest {
    pub(super) fn events(&self) -> usize {
        self.parts.iter().map(|p| p.events.len()).sum()
    }
}

/// One caller's request: its parts commit together or not at all.
pub(super) struct PlanItem<'a> {
    pub parts: Vec<PlanPart<'a>>,
    pub ticket: u64,
    pub after: &'a [u64],
}

pub(super) struct PlanPart<'a> {
    pub stream_id: &'a str,
    pub expected: ExpectedVersion,
    pub events: &'a [PreparedEvent],
}

pub(super) struct Row<'a> {
    pub position: i64,
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub event: &'a NewEvent,
    pub payload: &'a str,
    pub recorded_at: i64,
    pub index: &'a IndexFields,
    pub hash: Option<super::chain::Hash>,
}

pub(super) struct Plan<'a> {
    pub rows: Vec<Row<'a>>,
    pub answers: Vec<Result<Vec<Appended>>>,
    /// Every stream's version once the rows are written.
    versions: HashMap<String, u64>,
    /// The position counter once the rows are written.
    counter: i64,
}

/// What the database already holds of an event id.
pub(super) struct Stored {
    pub position: i64,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_type: String,
    pub occurred_at: i64,
    pub payload: String,
}

/// Decides, inside the transaction, what each item writes: duplicates are answered with their
/// original positions, version conflicts with an error, the rest are numbered.
async fn plan<'a>(
    conn: &mut SqliteConnection,
    items: &'a [PlanItem<'a>],
    recorded_at: i64,
    chained: bool,
    failed: &FailedTickets,
) -> sqlx::Result<Plan<'a>> {
    let parts = || items.iter().flat_map(|i| i.parts.iter());
    let mut ids: Vec<&str> = parts()
        .flat_map(|p| p.events.iter().map(|e| e.event.event_id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let streams = streams_of(items);
    let found = look_up(conn, &ids, &streams).await?;
    Ok(plan_with(items, found, recorded_at, chained, failed))
}

/// The streams whose first append in the group expects them not to exist yet.
fn created_streams<'a>(items: &'a [PlanItem<'a>]) -> std::collections::HashSet<&'a str> {
    let mut first = HashMap::new();
    for p in items.iter().flat_map(|i| i.parts.iter()) {
        first.entry(p.stream_id).or_insert(p.expected);
    }
    first
        .into_iter()
        .filter(|(_, e)| matches!(e, ExpectedVersion::NoStream | ExpectedVersion::Exact(0)))
        .map(|(s, _)| s)
        .collect()
}

/// The distinct streams a group appends to.
pub(super) fn streams_of<'a>(items: &'a [PlanItem<'a>]) -> Vec<&'a str> {
    let mut streams: Vec<&str> = items
        .iter()
        .flat_map(|i| i.parts.iter().map(|p| p.stream_id))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    streams
}

/// [`plan`] given what the database holds: stored ids, stream versions, the position counter
/// and the chain's tip.
pub(super) fn plan_with<'a>(
    items: &'a [PlanItem<'a>],
    (stored, mut versions, mut next_position, tip, _): LookUp,
    recorded_at: i64,
    chained: bool,
    failed: &FailedTickets,
) -> Plan<'a> {
    next_position += 1;
    // Requests of this plan that were refused: later ones may depend on them.
    let mut failed_here = std::collections::HashSet::new();

    // Ids written earlier in this same transaction (a retry queued behind its first try).
    let mut written: HashMap<&str, (i64, &str, u64, usize)> = HashMap::new();
    let mut rows: Vec<Row<'a>> = Vec::new();
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        if let Some(&ticket) = item
            .after
            .iter()
            .find(|t| failed.contains(t) || failed_here.contains(*t))
        {
            failed_here.insert(item.ticket);
            answers.push(Err(Error::DependencyFailed { ticket }));
            continue;
        }
        // An id given twice within one append is a caller bug, not a retry.
        let mut seen = std::collections::HashSet::new();
        let twice = item
            .parts
            .iter()
            .flat_map(|p| p.events.iter().map(|e| &e.event))
            .find(|e| !seen.insert(e.event_id.as_str()));
        if let Some(e) = twice {
            answers.push(Err(Error::InvalidEvent(format!(
                "event id {:?} appears twice in one append",
                e.event_id
            ))));
            failed_here.insert(item.ticket);
            continue;
        }
        // Planned tentatively: a failing part undoes the parts before it.
        let rows_before = rows.len();
        let position_before = next_position;
        let versions_before: Vec<(&str, Option<u64>)> = item
            .parts
            .iter()
            .map(|p| (p.stream_id, versions.get(p.stream_id).copied()))
            .collect();
        let mut answer = Ok(Vec::new());
        for part in &item.parts {
            match plan_part(
                part,
                &stored,
                &mut written,
                &mut versions,
                &mut next_position,
                &mut rows,
                recorded_at,
            ) {
                Ok(mut a) => {
                    if let Ok(all) = &mut answer {
                        all.append(&mut a);
                    }
                }
                Err(e) => {
                    answer = Err(e);
                    break;
                }
            }
        }
        if answer.is_err() {
            rows.truncate(rows_before);
            next_position = position_before;
            for (stream, v) in versions_before.into_iter().rev() {
                match v {
                    Some(v) => versions.insert(stream.to_owned(), v),
                    None => versions.remove(stream),
                };
            }
            written.retain(|_, w| w.3 < rows_before);
            failed_here.insert(item.ticket);
        }
        answers.push(answer);
    }
    // The chain, in position order (rows are numbered in order), from the log's tip.
    let mut prev = tip;
    for r in rows.iter_mut().filter(|_| chained) {
        let hash = super::chain::link(
            &prev,
            &super::chain::Content {
                position: r.position,
                event_id: &r.event.event_id,
                stream_id: r.stream_id,
                stream_version: r.stream_version as i64,
                event_type: &r.event.event_type,
                schema_version: i64::from(r.event.schema_version),
                occurred_at: to_micros(r.event.occurred_at),
                recorded_at: r.recorded_at,
                payload: r.payload,
            },
        );
        r.hash = Some(hash);
        prev = hash;
    }
    Plan {
        rows,
        answers,
        versions,
        counter: next_position - 1,
    }
}

fn plan_part<'a>(
    item: &'a PlanPart<'a>,
    stored: &HashMap<String, Stored>,
    written: &mut HashMap<&'a str, (i64, &'a str, u64, usize)>,
    versions: &mut HashMap<String, u64>,
    next_position: &mut i64,
    rows: &mut Vec<Row<'a>>,
    recorded_at: i64,
) -> Result<Vec<Appended>> {
    let mut duplicates = Vec::new();
    for prepared in item.events {
        let e = &prepared.event;
        let payload = || prepared.payload.as_str();
        if let Some(s) = stored.get(&e.event_id) {
            if s.stream_id != item.stream_id
                || s.event_type != e.event_type
                || s.occurred_at != to_micros(e.occurred_at)
                || s.payload != payload()
            {
                return Err(Error::EventIdReused {
                    event_id: e.event_id.clone(),
                    position: s.position,
                });
            }
            duplicates.push(Appended {
                event_id: e.event_id.clone(),
                position: s.position,
                stream_version: s.stream_version,
                duplicate: true,
            });
        } else if let Some(&(position, stream, version, row)) = written.get(e.event_id.as_str()) {
            let r = &rows[row];
            if stream != item.stream_id
                || r.event.event_type != e.event_type
                || r.payload != payload()
            {
                return Err(Error::EventIdReused {
                    event_id: e.event_id.clone(),
                    position,
                });
            }
            duplicates.push(Appended {
                event_id: e.event_id.clone(),
                position,
                stream_version: version,
                duplicate: true,
            });
        }
    }
    if duplicates.len() == item.events.len() {
        return Ok(duplicates);
    }
    if !duplicates.is_empty() {
        return Err(Error::InvalidEvent(format!(
            "append mixes {} event(s) already stored (first: {:?}) with new ones; \
             retry the exact original append or use new ids",
            duplicates.len(),
            duplicates[0].event_id
        )));
    }
    let current = versions.get(item.stream_id).copied().unwrap_or(0);
    if !item.expected.admits(current) {
        return Err(Error::WrongExpectedVersion {
            stream: item.stream_id.to_owned(),
            expected: item.expected.to_string(),
            actual: current,
        });
    }
    let mut out = Vec::with_capacity(item.events.len());
    let mut version = current;
    for prepared in item.events {
        let e = &prepared.event;
        version += 1;
        let position = *next_position;
        *next_position += 1;
        written.insert(&e.event_id, (position, item.stream_id, version, rows.len()));
        rows.push(Row {
            position,
            stream_id: item.stream_id,
            stream_version: version,
            event: e,
            payload: &prepared.payload,
            recorded_at: e.recorded_at.map(to_micros).unwrap_or(recorded_at),
            index: &prepared.index,
            hash: None,
        });
        out.push(Appended {
            event_id: e.event_id.clone(),
            position,
            stream_version: version,
            duplicate: false,
        });
    }
    versions.insert(item.stream_id.to_owned(), version);
    Ok(out)
}

/// The stored text of a payload: compact, keys sorted (serde_json's map is ordered), so that
/// equal payloads are equal strings.
fn canonical(v: &serde_json::Value) -> String {
    v.to_string()
}

/// Stored ids, stream versions, the position counter, the chain's tip, and whether any
/// stream has archived events.
pub(super) type LookUp = (
    HashMap<String, Stored>,
    HashMap<String, u64>,
    i64,
    super::chain::Hash,
    bool,
);

/// One round trip where possible: stored ids, stream versions and the position counter in a
/// single UNION ALL statement (each sqlx statement costs a channel hop to its worker thread),
/// so that they are read from one snapshot of the database.
async fn look_up(
    conn: &mut SqliteConnection,
    ids: &[&str],
    streams: &[&str],
) -> sqlx::Result<LookUp> {
    let mut stored = HashMap::new();
    let mut versions = HashMap::new();
    let mut counter = 0i64;
    let mut tip = super::chain::GENESIS;
    let mut archived = false;
    let mut id_chunks = ids.chunks(MAX_LOOKUP_PARAMS / 2);
    let mut stream_chunks = streams.chunks(MAX_LOOKUP_PARAMS / 2);
    let mut first = true;
    loop {
        let ids = id_chunks.next().unwrap_or(&[]);
        let streams = stream_chunks.next().unwrap_or(&[]);
        if !first && ids.is_empty() && streams.is_empty() {
            break;
        }
        let mut parts = Vec::new();
        let mut args = SqliteArguments::default();
        if first {
            parts.push(
                "SELECT 2 AS k, NULL, NULL, seq, NULL, NULL, NULL, NULL \
                 FROM sqlite_sequence WHERE name = 'events'"
                    .to_owned(),
            );
            // The chain's tip: the newest event's hash, or the anchor for an empty log.
            // Also whether any stream has archived events (see `Writer::fast`).
            parts.push(
                "SELECT 3, NULL, NULL, NULL, \
                 EXISTS (SELECT 1 FROM archived_streams), NULL, NULL, \
                 COALESCE((SELECT hex(hash) FROM events ORDER BY position DESC LIMIT 1), \
                          (SELECT hex(hash) FROM chain_anchor WHERE id = 1))"
                    .to_owned(),
            );
        }
        // Lists are padded (by repeating their last item) to a power-of-two length, so that
        // only a few distinct statements exist and sqlx's prepared-statement cache hits.
        if !ids.is_empty() {
            let n = ids.len().next_power_of_two();
            parts.push(format!(
                "SELECT 0, event_id, stream_id, stream_version, position, event_type, \
                 occurred_at, payload FROM events WHERE event_id IN ({})",
                placeholders(n)
            ));
            for i in 0..n {
                args.add(ids[i.min(ids.len() - 1)])
                    .map_err(sqlx::Error::Encode)?;
            }
        }
        if !streams.is_empty() {
            // One MAX per stream, as a correlated subquery: SQLite answers each from the end
            // of the (stream_id, stream_version) index. `MAX ... GROUP BY` over an IN list read
            // every version of every stream, so an append cost grew with its stream's length.
            let n = streams.len().next_power_of_two();
            parts.push(format!(
                "SELECT 1, column1, NULL, COALESCE((SELECT MAX(stream_version) FROM events \
                 WHERE stream_id = column1), (SELECT version FROM archived_streams \
                 WHERE stream_id = column1)), NULL, NULL, NULL, NULL FROM (VALUES {})",
                vec!["(?)"; n].join(",")
            ));
            for i in 0..n {
                args.add(streams[i.min(streams.len() - 1)])
                    .map_err(sqlx::Error::Encode)?;
            }
        }
        first = false;
        if parts.is_empty() {
            break;
        }
        let sql = parts.join(" UNION ALL ");
        let rows = sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let kind: i64 = row.try_get(0)?;
            match kind {
                2 => counter = row.try_get(3)?,
                3 => {
                    archived = row.try_get::<i64, _>(4)? != 0;
                    // A newest event without a hash was written behind healstore's back (or
                    // with the chain turned off): `verify` reports it; appends go on, chained
                    // from the anchor's hash.
                    tip = row
                        .try_get::<Option<String>, _>(7)?
                        .as_deref()
                        .and_then(super::chain::from_hex)
                        .unwrap_or(super::chain::GENESIS);
                }
                1 => {
                    if let Some(v) = row.try_get::<Option<i64>, _>(3)? {
                        versions.insert(row.try_get(1)?, v as u64);
                    }
                }
                _ => {
                    stored.insert(
                        row.try_get(1)?,
                        Stored {
                            stream_id: row.try_get(2)?,
                            stream_version: row.try_get::<i64, _>(3)? as u64,
                            position: row.try_get(4)?,
                            event_type: row.try_get(5)?,
                            occurred_at: row.try_get(6)?,
                            payload: row.try_get(7)?,
                        },
                    );
                }
            }
        }
    }
    Ok((stored, versions, counter, tip, archived))
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s
}

const INSERT_COLUMNS: usize = 16;

/// Most rows per INSERT on the fast path: 16 columns x 512 rows = 8,192 bound parameters. A
/// group larger than one statement is written inside `BEGIN IMMEDIATE` ... `COMMIT`, where
/// every INSERT keeps a statement journal (a copy of each page it touches); the writer
/// therefore ends a group before the request that would take it past this size. At 256
/// concurrent heals groups held about 250 events on average, and with 256 rows per statement
/// three in ten events went the long way: the journal was about a tenth of SQLite's time. 1,024
/// rows measured no better than 512.
const FAST_ROWS_PER_INSERT: usize = 512;

/// Rows of the statement that writes `rows` rows on the fast path: `rows` rounded up to a
/// multiple of 16 up to 256 rows, of 64 above, the rest padding (see [`fast_insert_sql`]). The
/// writer's statement cache holds 20 sizes of INSERT rather than one per group size (with
/// those, the quick append benchmark's peak memory was 40-43 MiB rather than 33-34 MiB), and
/// a group of up to [`FAST_ROWS_PER_INSERT`] rows is one statement.
fn fast_insert_size(rows: usize) -> usize {
    if rows <= 256 {
        rows.div_ceil(16) * 16
    } else {
        rows.div_ceil(64) * 64
    }
}

/// The sizes [`fast_insert_size`] gives, smallest first.
fn fast_insert_sizes() -> impl Iterator<Item = usize> {
    (16..=256)
        .step_by(16)
        .chain((320..=FAST_ROWS_PER_INSERT).step_by(64))
}

/// The fast path's guarded INSERT of `n` rows (one of [`fast_insert_sizes`]), built once: it
/// writes its rows only while the position counter is the one bound last (the counter the
/// group was planned at), and skips padding rows (all NULL). A plain INSERT, not `OR
/// ROLLBACK`: an outer conflict clause overrides those of the statements in triggers, and the
/// read models' `OR IGNORE` and `OR REPLACE` (a failure detected twice, a pattern learned
/// again) would have failed the group. A constraint that refuses a row aborts the statement,
/// which in autocommit mode is its whole transaction; inside `BEGIN` the caller rolls back.
fn fast_insert_sql(n: usize) -> &'static str {
    static CACHE: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        fast_insert_sizes()
            .map(|n| {
                (
                    n,
                    format!(
                        "INSERT INTO events ({INSERT_COLUMN_NAMES}) \
                         SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL \
                         AND COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0) = ?",
                        value_rows(n)
                    ),
                )
            })
            .collect()
    });
    let i = cache.partition_point(|(size, _)| *size < n);
    &cache[i].1
}

/// A padding row of a fast-path INSERT: all NULL, skipped by its `WHERE`.
fn bind_padding(args: &mut SqliteArguments) -> sqlx::Result<()> {
    for _ in 0..INSERT_COLUMNS {
        args.add(Option::<i64>::None).map_err(sqlx::Error::Encode)?;
    }
    Ok(())
}

/// `n` rows of placeholders for [`INSERT_COLUMN_NAMES`]: `(?,...),(?,...)`.
fn value_rows(n: usize) -> String {
    vec![format!("({})", placeholders(INSERT_COLUMNS)); n].join(",")
}

/// The event log's columns an INSERT writes, in [`bind_rows`]'s order.
const INSERT_COLUMN_NAMES: &str = "position, event_id, stream_id, stream_version, event_type, \
     schema_version, occurred_at, recorded_at, payload, failure_id, agent_id, failure_type, \
     strategy, success, duration_ms, hash";

/// The INSERT for `n` rows. Rows are written in statements of power-of-two sizes, so that only
/// eight distinct statements exist and sqlx's prepared-statement cache always hits.
fn insert_sql(n: usize) -> &'static str {
    static CACHE: OnceLock<Vec<String>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mut v = Vec::new();
        let mut size = 1;
        while size <= MAX_ROWS_PER_INSERT {
            v.push(format!(
                "INSERT INTO events ({INSERT_COLUMN_NAMES}) VALUES {}",
                value_rows(size)
            ));
            size *= 2;
        }
        v
    });
    &cache[n.trailing_zeros() as usize]
}

async fn insert_rows(conn: &mut SqliteConnection, rows: &[Row<'_>]) -> sqlx::Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= MAX_ROWS_PER_INSERT {
            MAX_ROWS_PER_INSERT
        } else {
            // The largest power of two that fits.
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (now, later) = rest.split_at(n);
        sqlx::query_with(insert_sql(n), bind_rows(now)?)
            .execute(&mut *conn)
            .await?;
        rest = later;
    }
    Ok(())
}

/// The arguments of an INSERT of `rows`, in [`insert_sql`]'s column order.
fn bind_rows(rows: &[Row<'_>]) -> sqlx::Result<SqliteArguments> {
    let mut args = SqliteArguments::default();
    {
        for r in rows {
            args.add(r.position).map_err(sqlx::Error::Encode)?;
            args.add(r.event.event_id.as_str())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.stream_id).map_err(sqlx::Error::Encode)?;
            args.add(r.stream_version as i64)
                .map_err(sqlx::Error::Encode)?;
            args.add(r.event.event_type.as_str())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.event.schema_version as i64)
                .map_err(sqlx::Error::Encode)?;
            args.add(to_micros(r.event.occurred_at))
                .map_err(sqlx::Error::Encode)?;
            args.add(r.recorded_at).map_err(sqlx::Error::Encode)?;
            args.add(r.payload).map_err(sqlx::Error::Encode)?;
            args.add(r.index.failure_id.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.index.agent_id.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.index.failure_type.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.index.strategy.as_deref())
                .map_err(sqlx::Error::Encode)?;
            args.add(r.index.success).map_err(sqlx::Error::Encode)?;
            args.add(r.index.duration_ms).map_err(sqlx::Error::Encode)?;
            args.add(r.hash.as_ref().map(|h| &h[..]))
                .map_err(sqlx::Error::Encode)?;
        }
    }
    Ok(args)
}

/// Rebuilds every read model (analytics tables and strategy snapshots) in one transaction.
/// A log whose oldest events were archived is refused: the rebuild would lose what the read
/// models keep of the archived periods, and the strategy states folded from archived events.
async fn rebuild_read_models(
    conn: &mut SqliteConnection,
    path: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::analytics::RebuildReport> {
    let db = |e| Error::from_db(e, path);
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let _note = super::holder::Note::announce(path, "a rebuild", now);
    let (anchor, file): (i64, Option<String>) =
        sqlx::query_as("SELECT position, archived_to FROM chain_anchor WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    if anchor > 0 {
        return Err(Error::InvalidInput(format!(
            "events up to position {anchor} are archived{}: a rebuild from the log would lose \
             the read models' archived periods and strategy states; import the archive and the \
             log into a new database to rebuild there",
            file.map(|f| format!(" (in {f})")).unwrap_or_default()
        )));
    }
    crate::analytics::rebuild_read_models(&mut tx)
        .await
        .map_err(db)?;
    sqlx::query("DELETE FROM strategy_snapshots")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query("DELETE FROM strategy_checkpoints")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let mut report = crate::analytics::read_model_counts(&mut tx)
        .await
        .map_err(db)?;
    report.snapshots_dropped = true;
    tx.commit().await.map_err(db)?;
    Ok(report)
}

impl Writer {
    /// The database side of an archive (see `archive.rs`): in one transaction.
    async fn archive(&mut self, cut: super::archive::Cut) -> Result<i64> {
        let path = self.path.clone();
        let db = |e| Error::from_db(e, &path);
        let recorded_at = to_micros(self.options.clock.now());
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let _note = super::holder::Note::announce(&path, "an archive", self.options.clock.now());
        let anchor: i64 = sqlx::query_scalar("SELECT position FROM chain_anchor WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let end: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM events WHERE position = ?")
            .bind(cut.to_position)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .flatten();
        if anchor != cut.anchor_position || end.as_deref() != Some(&cut.end_hash[..]) {
            return Err(Error::Conflict(
                "the log changed while archiving (another archive ran); nothing was archived"
                    .into(),
            ));
        }
        // Every strategy state stream the cut goes through keeps a snapshot covering it (checked
        // before the file was written; again here, under the write lock, in case another
        // process's checkpoint deleted one meanwhile).
        let uncovered: Option<(Option<String>, String, i64)> =
            sqlx::query_as(AssertSqlSafe(super::snapshots::uncovered_sql("")))
                .bind(cut.to_position)
                .bind(1i64)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if let Some((_, stream, version)) = uncovered {
            return Err(Error::Conflict(format!(
                "the snapshot of {stream} (version {version}) was deleted while archiving; \
                 nothing was archived (archive again, to a new file name)"
            )));
        }
        for sql in [
            "INSERT OR REPLACE INTO archived_streams (stream_id, version) \
             SELECT stream_id, MAX(stream_version) FROM events WHERE position <= ?1 \
             GROUP BY stream_id",
            // What the analytics read of these events one by one, before they leave.
            crate::analytics::ARCHIVE_FACTS,
            "DROP TRIGGER events_refuse_delete",
            "DELETE FROM events WHERE position <= ?1",
        ] {
            let q = sqlx::query(sql);
            let q = if sql.contains("?1") {
                q.bind(cut.to_position)
            } else {
                q
            };
            q.execute(&mut *tx).await.map_err(db)?;
        }
        sqlx::query(super::migrate::REFUSE_DELETE_TRIGGER)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "UPDATE chain_anchor SET position = ?, hash = ?, archived_to = ?, archived_at = ? \
             WHERE id = 1",
        )
        .bind(cut.to_position)
        .bind(&cut.end_hash[..])
        .bind(&cut.file)
        .bind(recorded_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let events = [cut.event];
        let items = [PlanItem {
            parts: vec![PlanPart {
                stream_id: "archive",
                expected: ExpectedVersion::Any,
                events: &events,
            }],
            ticket: 0,
            after: &[],
        }];
        let plan = plan(
            &mut tx,
            &items,
            recorded_at,
            self.options.hash_chain,
            &FailedTickets::default(),
        )
        .await
        .map_err(db)?;
        if let Some(Err(e)) = plan.answers.into_iter().next() {
            return Err(e);
        }
        insert_rows(&mut tx, &plan.rows).await.map_err(db)?;
        let position = plan.rows.last().map(|r| r.position).unwrap_or(0);
        tx.commit().await.map_err(db)?;
        Ok(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fast_insert_size_has_a_statement_with_room_for_its_rows_and_the_guard() {
        for rows in 1..=FAST_ROWS_PER_INSERT {
            let size = fast_insert_size(rows);
            let step = if rows <= 256 { 16 } else { 64 };
            assert!(
                size >= rows && size - rows < step && size.is_multiple_of(step),
                "{rows} rows"
            );
            assert!(fast_insert_sizes().any(|s| s == size), "{rows} rows");
            let params = fast_insert_sql(size).matches('?').count();
            assert_eq!(params, size * INSERT_COLUMNS + 1, "{rows} rows");
        }
    }
}
