//! The PostgreSQL backend: opening and migrating a database, the writer, and the wake-up of
//! live tails. Everything else (reads, the plan of a group, the hash chain) is shared with
//! SQLite (see `dialect.rs`).
//!
//! Positions: every writer, in every process, takes one transaction-level advisory lock
//! ([`APPEND_LOCK`]) before it reads the log's head and numbers its rows, and holds it until
//! its COMMIT. Positions are therefore assigned and committed in order, with no gap: a reader
//! that has seen position `p` has every position below it visible already, and the hash chain
//! has its one total order across hosts. PostgreSQL releases the lock only after the commit is
//! visible to others. Group commit inside each process keeps the number of commits (and
//! lock hand-overs) well under the number of events. Measurements and the alternative (a
//! high-water mark from transaction ids) are in ARCHITECTURE.md.
//!
//! Live tails: each commit sends `NOTIFY healstore_events` with its last position (delivered
//! at commit); every store listens on its own connection and moves its head watch, so a
//! follower in any process wakes at once. The poll interval stays as a fallback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use refinery_core::{Migration, Runner};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot, watch};

use super::dialect::{Db, not_yet, shown_url};
use super::migrate::{HISTORY_TABLE, InTransaction};
use super::writer::{
    self, AppendRequest, FailedTickets, ImportItem, ImportReport, ImportRequest, LookUp, Plan,
    PlanItem, PlanPart, Request, Row, Stored,
};
use super::{Store, StoreOptions};
use crate::error::{Error, Result};
use crate::event::{Appended, ExpectedVersion};
use crate::time::to_micros;

/// The PostgreSQL migrations, in order (migrations/postgres/).
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[
    (
        "V1__event_log",
        include_str!("../../migrations/postgres/V1__event_log.sql"),
    ),
    (
        "V2__snapshots_at_rest_and_failures",
        include_str!("../../migrations/postgres/V2__snapshots_at_rest_and_failures.sql"),
    ),
    (
        "V3__stream_ids_in_byte_order",
        include_str!("../../migrations/postgres/V3__stream_ids_in_byte_order.sql"),
    ),
    (
        "V4__payload_fields_beside_nul_escapes",
        include_str!("../../migrations/postgres/V4__payload_fields_beside_nul_escapes.sql"),
    ),
];

/// The PostgreSQL schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Session advisory lock held while migrating ('HLST' and 1).
const MIGRATE_LOCK: i64 = 0x484C_5354_0000_0001;

/// Transaction advisory lock every append holds from reading the head to its COMMIT.
pub(crate) const APPEND_LOCK: i64 = 0x484C_5354_0000_0002;

/// The channel commits are announced on.
pub(crate) const CHANNEL: &str = "healstore_events";

/// Opens (and creates and migrates, when `options.create`) the store at a PostgreSQL URL.
pub(super) async fn open(url: &str, options: StoreOptions) -> Result<Store> {
    let path = PathBuf::from(shown_url(url));
    let db = |e| Error::from_db(e, &path);
    let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| Error::Open {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let connect = connect
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1));
    let mut conn = connect.connect().await.map_err(|e| Error::Open {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    migrate(&mut conn, &path, options.create).await?;
    prepare_writer(&mut conn, &options).await.map_err(db)?;

    let readers = PgPoolOptions::new()
        .max_connections(options.readers.max(1))
        .min_connections(0)
        .connect_lazy_with(connect.clone());
    let head_now: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(&mut conn)
        .await
        .map_err(db)?;
    let (head_tx, head_rx) = watch::channel(head_now);
    let head_tx = std::sync::Arc::new(head_tx);
    let listener = PgListener::connect_with(&readers).await.map_err(db)?;
    let (req_tx, req_rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = oneshot::channel();
    let observer = super::ObserverSlot::default();
    let w = PgWriter {
        conn,
        connect,
        path: path.clone(),
        options: options.clone(),
        head: head_tx.clone(),
        failed: FailedTickets::default(),
        observer: observer.clone(),
    };
    let listening = tokio::spawn(listen(listener, head_tx));
    let task = tokio::spawn(async move {
        w.run(req_rx, stop_rx).await;
        listening.abort();
    });
    Ok(Store::assemble(
        path,
        options,
        Db::Postgres(readers),
        req_tx,
        head_rx,
        task,
        stop_tx,
        observer,
    ))
}

/// The writer's session settings: how long a lock is waited for (the busy timeout) and how
/// durable a commit is.
async fn prepare_writer(conn: &mut PgConnection, options: &StoreOptions) -> sqlx::Result<()> {
    let timeout = options.busy_timeout.as_millis().clamp(1, i32::MAX as u128);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET lock_timeout = {timeout}; SET synchronous_commit = {}",
        match options.durability {
            super::Durability::Full => "on",
            // A crash of the server may lose the newest acknowledged commits, never corrupt.
            super::Durability::Normal => "off",
        }
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the head watch as other processes (and this one) announce commits.
async fn listen(mut listener: PgListener, head: std::sync::Arc<watch::Sender<i64>>) {
    if let Err(e) = listener.listen(CHANNEL).await {
        tracing::warn!(error = %e, "cannot listen for commits; live tails poll");
        return;
    }
    loop {
        match listener.recv().await {
            Ok(n) => {
                if let Ok(p) = n.payload().parse::<i64>() {
                    head.send_if_modified(|h| {
                        let newer = p > *h;
                        if newer {
                            *h = p;
                        }
                        newer
                    });
                }
            }
            Err(e) => {
                // (recv reconnects by itself on the next call)
                tracing::debug!(error = %e, "commit listener interrupted");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

enum Found {
    Empty,
    Older,
    Current,
    Newer(i64),
}

/// What the database (its current schema) holds: nothing, healstore's schema (marked by its
/// `healstore_database` row and refinery's history), or something else, which is refused.
async fn inspect(conn: &mut PgConnection, path: &Path) -> Result<Found> {
    let db = |e| Error::from_db(e, path);
    let objects: Vec<(String, String)> = sqlx::query_as(
        "SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'view' ELSE 'table' END, \
                c.relname::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
         ORDER BY c.relkind IN ('r', 'p') DESC, c.relname",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    if objects.is_empty() {
        return Ok(Found::Empty);
    }
    let has = |name: &str| objects.iter().any(|(_, n)| n == name);
    let marked = has("healstore_database")
        && has(HISTORY_TABLE)
        && sqlx::query_scalar::<_, String>("SELECT application FROM healstore_database")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?
            .as_deref()
            == Some("healstore");
    if !marked {
        let (kind, name) = &objects[0];
        let more = match objects.len() - 1 {
            0 => String::new(),
            n => format!(" and {n} more object(s)"),
        };
        return Err(Error::NotHealstore {
            path: path.to_path_buf(),
            what: format!(
                "is a PostgreSQL database but not a healstore database (its schema holds \
                 {kind} {name:?}{more}, and no healstore schema); nothing was changed"
            ),
        });
    }
    let version: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(MAX(version) AS BIGINT) FROM {HISTORY_TABLE}"
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(match version.unwrap_or(0) {
        v if v > SCHEMA_VERSION => Found::Newer(v),
        v if v == SCHEMA_VERSION => Found::Current,
        _ => Found::Older,
    })
}

/// Brings the database to [`SCHEMA_VERSION`] under a session advisory lock, so that processes
/// starting at once apply the migrations once; or refuses it untouched.
async fn migrate(conn: &mut PgConnection, path: &Path, create: bool) -> Result<()> {
    let db = |e| Error::from_db(e, path);
    match inspect(conn, path).await? {
        Found::Current => return Ok(()),
        Found::Newer(found) => {
            return Err(Error::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Found::Empty if !create => {
            return Err(Error::not_healstore(
                path,
                "holds nothing (`healstore init` makes it a healstore database)",
            ));
        }
        Found::Older | Found::Empty => {}
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let result = migrate_locked(conn, path).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db);
    result.and(unlocked.map(|_| ()))
}

async fn migrate_locked(conn: &mut PgConnection, path: &Path) -> Result<()> {
    let db = |e| Error::from_db(e, path);
    // Re-check under the lock: another process may have migrated in the meantime.
    match inspect(conn, path).await? {
        Found::Current => return Ok(()),
        Found::Newer(found) => {
            return Err(Error::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Found::Older | Found::Empty => {}
    }
    let migrations = MIGRATIONS
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Migration(e.to_string()))?;
    let runner = Runner::new(&migrations)
        .set_abort_divergent(true)
        .set_abort_missing(true);
    // PostgreSQL's DDL is transactional: the whole upgrade commits or nothing does.
    let mut tx = conn.begin().await.map_err(db)?;
    let mut adapter = InTransaction(&mut tx);
    let report = runner
        .run_async(&mut adapter)
        .await
        .map_err(|e| Error::Migration(e.to_string()))?;
    tx.commit().await.map_err(db)?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m, "applied migration");
    }
    Ok(())
}

/// The writer of one process: group commit, as on SQLite, with positions numbered under
/// [`APPEND_LOCK`].
struct PgWriter {
    conn: PgConnection,
    connect: PgConnectOptions,
    path: PathBuf,
    options: StoreOptions,
    head: std::sync::Arc<watch::Sender<i64>>,
    failed: FailedTickets,
    observer: super::ObserverSlot,
}

impl PgWriter {
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
                        requests.close();
                        stopping = true;
                        continue;
                    }
                },
            };
            self.recover().await;
            match first {
                Request::Import(imp) => self.import(imp).await,
                Request::Checkpoint(c, reply) => {
                    let now = to_micros(self.options.clock.now());
                    let r = super::snapshots::pg_write(&mut self.conn, &c, now).await;
                    let _ = reply.send(r.map_err(|e| self.db_err(e)));
                }
                Request::DropSnapshots(reply) => {
                    let r = super::snapshots::pg_drop_all(&mut self.conn).await;
                    let _ = reply.send(r.map_err(|e| self.db_err(e)));
                }
                Request::RebuildReadModels(reply) => {
                    let _ = reply.send(Err(not_yet("rebuild (the analytics read models)")));
                }
                Request::Archive(_, reply) => {
                    let _ = reply.send(Err(not_yet("archive")));
                }
                Request::Append(a) => {
                    let mut events = a.events();
                    let mut group = vec![a];
                    while events < self.options.max_batch_events {
                        match requests.try_recv() {
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
                }
            }
        }
        let _ = self.conn.close().await;
    }

    /// A connection left in a transaction by a failure (or broken) is replaced.
    async fn recover(&mut self) {
        if !self.conn.is_in_transaction() && self.conn.ping().await.is_ok() {
            return;
        }
        match self.connect.connect().await {
            Ok(mut fresh) => {
                if prepare_writer(&mut fresh, &self.options).await.is_ok() {
                    let stale = std::mem::replace(&mut self.conn, fresh);
                    let _ = stale.close().await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot reopen the writer connection"),
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
    }

    async fn commit_group(&mut self, group: Vec<AppendRequest>) {
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
        let outcome = self.try_group(&items).await.map_err(|e| self.db_err(e));
        let outcome = match outcome {
            // One append the database refuses must not fail the others (as on SQLite).
            Err(e) if items.len() > 1 && writer::refused_by_content(&e) => {
                self.recover().await;
                let mut answers = Vec::with_capacity(items.len());
                let mut last = None;
                for item in items.chunks(1) {
                    let answer = match self.try_group(item).await {
                        Ok((mut a, l)) => {
                            last = l.or(last);
                            a.pop().unwrap_or_else(|| Ok(Vec::new()))
                        }
                        Err(e) => {
                            self.recover().await;
                            Err(self.db_err(e))
                        }
                    };
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
            writer::observe_group(o.as_ref(), &group, answers);
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
                let e = match e {
                    Error::Database(m) => {
                        Error::Database(format!("the write failed and nothing was stored: {m}"))
                    }
                    other => other,
                };
                for req in group {
                    self.failed.insert(req.ticket);
                    let _ = req.reply.send(Err(writer::replicate(&e)));
                }
            }
        }
    }

    fn db_err(&self, e: sqlx::Error) -> Error {
        Error::from_db(e, &self.path)
    }

    /// One group in one transaction, under the append lock.
    async fn try_group(
        &mut self,
        items: &[PlanItem<'_>],
    ) -> sqlx::Result<(Vec<Result<Vec<Appended>>>, Option<i64>)> {
        let recorded_at = to_micros(self.options.clock.now());
        let mut tx = self.conn.begin().await?;
        lock_appends(&mut tx).await?;
        let plan = plan(
            &mut tx,
            items,
            recorded_at,
            self.options.hash_chain,
            &self.failed,
        )
        .await?;
        let last = insert_rows(&mut tx, &plan.rows).await?;
        tx.commit().await?;
        Ok((plan.answers, last))
    }

    /// An all-or-nothing import in one transaction, holding the append lock throughout.
    async fn import(&mut self, mut req: ImportRequest) {
        let result = self.import_inner(&mut req.items).await;
        if let Err(e) = &result {
            tracing::info!(error = %e, "import rolled back");
            self.recover().await;
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
        let mut tx = self.conn.begin().await.map_err(db)?;
        lock_appends(&mut tx).await.map_err(db)?;
        let mut report = ImportReport::default();
        let mut chunk = Vec::new();
        let mut budgets = Vec::new();
        let mut chunk_bytes = 0;
        let mut last = None;
        loop {
            let done = match items.recv().await {
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
                Some(ImportItem::Abort) => {
                    return Err(Error::InvalidInput("import aborted".into()));
                }
                None => true,
            };
            if chunk.len() >= writer::IMPORT_CHUNK
                || chunk_bytes >= writer::IMPORT_CHUNK_BYTES
                || (done && !chunk.is_empty())
            {
                let plan_items: Vec<PlanItem<'_>> = chunk
                    .iter()
                    .map(
                        |(_, s, exp, ev): &(u64, String, ExpectedVersion, _)| PlanItem {
                            parts: vec![PlanPart {
                                stream_id: s,
                                expected: *exp,
                                events: ev,
                            }],
                            ticket: 0,
                            after: &[],
                        },
                    )
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
                last = insert_rows(&mut tx, &plan.rows).await.map_err(db)?.or(last);
                drop(plan_items);
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

/// Takes the append lock for the rest of the transaction (see the module's documentation).
async fn lock_appends(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Decides, under the append lock, what each item writes (see `writer::plan_with`).
async fn plan<'a>(
    conn: &mut PgConnection,
    items: &'a [PlanItem<'a>],
    recorded_at: i64,
    chained: bool,
    failed: &FailedTickets,
) -> sqlx::Result<Plan<'a>> {
    let mut ids: Vec<&str> = items
        .iter()
        .flat_map(|i| i.parts.iter())
        .flat_map(|p| p.events.iter().map(|e| e.event.event_id.as_str()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let streams = writer::streams_of(items);
    let found = look_up(conn, &ids, &streams).await?;
    Ok(writer::plan_with(
        items,
        found,
        recorded_at,
        chained,
        failed,
    ))
}

/// Stored ids, stream versions, the head position and the chain's tip, read under the lock.
async fn look_up(conn: &mut PgConnection, ids: &[&str], streams: &[&str]) -> sqlx::Result<LookUp> {
    let (head, tip, archived): (i64, Option<Vec<u8>>, bool) = sqlx::query_as(
        "SELECT GREATEST(COALESCE((SELECT MAX(position) FROM events), 0), \
                         (SELECT position FROM chain_anchor WHERE id = 1)), \
                COALESCE((SELECT hash FROM events ORDER BY position DESC LIMIT 1), \
                         (SELECT hash FROM chain_anchor WHERE id = 1)), \
                EXISTS (SELECT 1 FROM archived_streams)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let tip = tip
        .as_deref()
        .and_then(super::chain::from_blob)
        .unwrap_or(super::chain::GENESIS);
    let mut stored = HashMap::new();
    if !ids.is_empty() {
        let rows: Vec<(String, String, i64, i64, String, i64, String)> = sqlx::query_as(
            "SELECT event_id, stream_id, stream_version, position, event_type, occurred_at, \
                    payload FROM events WHERE event_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        for (id, stream_id, version, position, event_type, occurred_at, payload) in rows {
            stored.insert(
                id,
                Stored {
                    position,
                    stream_id,
                    stream_version: version as u64,
                    event_type,
                    occurred_at,
                    payload,
                },
            );
        }
    }
    let mut versions = HashMap::new();
    if !streams.is_empty() {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT s, COALESCE((SELECT MAX(stream_version) FROM events WHERE stream_id = s), \
                                (SELECT version FROM archived_streams WHERE stream_id = s)) \
             FROM UNNEST($1::text[]) AS s",
        )
        .bind(streams)
        .fetch_all(&mut *conn)
        .await?;
        for (s, v) in rows {
            if let Some(v) = v {
                versions.insert(s, v as u64);
            }
        }
    }
    Ok((stored, versions, head, tip, archived))
}

/// Writes the planned rows in one statement (arrays unnested) and announces the commit to
/// come; the newest position written.
async fn insert_rows(conn: &mut PgConnection, rows: &[Row<'_>]) -> sqlx::Result<Option<i64>> {
    let Some(last) = rows.last().map(|r| r.position) else {
        return Ok(None);
    };
    let mut c = Columns::default();
    for r in rows {
        c.position.push(r.position);
        c.event_id.push(r.event.event_id.as_str());
        c.stream_id.push(r.stream_id);
        c.stream_version.push(r.stream_version as i64);
        c.event_type.push(r.event.event_type.as_str());
        c.schema_version.push(i64::from(r.event.schema_version));
        c.occurred_at.push(to_micros(r.event.occurred_at));
        c.recorded_at.push(r.recorded_at);
        c.payload.push(r.payload);
        c.failure_id.push(r.index.failure_id.as_deref());
        c.agent_id.push(r.index.agent_id.as_deref());
        c.failure_type.push(r.index.failure_type.as_deref());
        c.strategy.push(r.index.strategy.as_deref());
        c.success.push(r.index.success);
        c.duration_ms.push(r.index.duration_ms);
        c.hash.push(r.hash.map(|h| h.to_vec()));
    }
    sqlx::query(
        "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, \
             schema_version, occurred_at, recorded_at, payload, failure_id, agent_id, \
             failure_type, strategy, success, duration_ms, hash) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[], \
             $12::text[], $13::text[], $14::boolean[], $15::bigint[], $16::bytea[])",
    )
    .bind(c.position)
    .bind(c.event_id)
    .bind(c.stream_id)
    .bind(c.stream_version)
    .bind(c.event_type)
    .bind(c.schema_version)
    .bind(c.occurred_at)
    .bind(c.recorded_at)
    .bind(c.payload)
    .bind(c.failure_id)
    .bind(c.agent_id)
    .bind(c.failure_type)
    .bind(c.strategy)
    .bind(c.success)
    .bind(c.duration_ms)
    .bind(c.hash)
    .execute(&mut *conn)
    .await?;
    // Delivered at COMMIT, to every store listening (see `listen`).
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(last.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(Some(last))
}

/// The rows of an INSERT, column by column.
#[derive(Default)]
struct Columns<'a> {
    position: Vec<i64>,
    event_id: Vec<&'a str>,
    stream_id: Vec<&'a str>,
    stream_version: Vec<i64>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i64>,
    occurred_at: Vec<i64>,
    recorded_at: Vec<i64>,
    payload: Vec<&'a str>,
    failure_id: Vec<Option<&'a str>>,
    agent_id: Vec<Option<&'a str>>,
    failure_type: Vec<Option<&'a str>>,
    strategy: Vec<Option<&'a str>>,
    success: Vec<Option<bool>>,
    duration_ms: Vec<Option<i64>>,
    hash: Vec<Option<Vec<u8>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_postgres_migration_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| n.trim_end_matches(".sql").to_owned())
            .collect();
        files.sort_by_key(|n| n[1..n.find("__").unwrap()].parse::<u32>().unwrap());
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, embedded);
    }
}
