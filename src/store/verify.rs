//! `verify`: proves the log is what healstore wrote.
//!
//! Checks: SQLite's own integrity check; the schema (every table, index, trigger and view)
//! is exactly what this binary's migrations create, compared with a database migrated in
//! memory, so that a missing append-only trigger or an extra one that silently drops inserts
//! is named; the hash chain from the anchor through every event (a changed, inserted or
//! removed event breaks it, and the first bad position is named); every payload is JSON and
//! the indexed copies of its fields (`failure_id`, `agent_id`, `failure_type`, `strategy`,
//! `success`, `duration_ms`), which the chain does not cover and which analytics, read models
//! and the audit read, are what the writer's extraction gives for it; the position counter
//! agrees with the newest event (removing the newest events leaves the chain intact but not
//! the counter); with [`VerifyOptions::expect_head`], the log still holds a head an earlier
//! run reported (the only defence against a log cut back together with its counter, or
//! rewritten with its chain recomputed, since the database cannot vouch for itself); and the
//! read models equal a rebuild from the events. Strategy snapshots are checked by the healer
//! ([`crate::heal::Healer::verify_snapshots`]), which knows the strategies' folds.
//!
//! Nothing here takes the write lock: the rebuild is computed into temporary tables of a
//! connection of its own, inside one read transaction (a consistent snapshot of the events
//! and the read models alike), and compared there, so appends from any process go on while
//! `verify` runs.
//!
//! Memory stays flat: events are read in keyset pages (the next page is read while one is
//! checked), and the rebuild's tables live in SQLite's temporary storage.

use std::str::FromStr;

use serde::Serialize;
use sqlx::Connection;

use super::Store;
use super::chain::{self, Hash};
use super::dialect::Db;
use super::migrate::SchemaObject;
use crate::error::{Error, Result};
use crate::event::IndexFields;

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// `PRAGMA integrity_check` (also every index against its table) instead of
    /// `quick_check` (every page, record and constraint). Several times slower on large files.
    pub full_integrity: bool,
    /// Compare the read models with a rebuild from the events.
    pub read_models: bool,
    /// A head an earlier `verify` reported (kept outside the database): the log must still
    /// hold it.
    pub expect_head: Option<ExpectedHead>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            full_integrity: false,
            read_models: true,
            expect_head: None,
        }
    }
}

/// A head of the log as an earlier `verify` reported it: the newest event's hash, and
/// optionally its position. Written `POSITION:HASH` or `HASH` (64 hexadecimal digits).
///
/// A log holds it when the event at that position has that hash (without a position: when
/// any event has it). Since every hash chains to the one before it, that also vouches for
/// every event up to there; events appended since are fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedHead {
    pub position: Option<i64>,
    pub hash: Hash,
}

impl FromStr for ExpectedHead {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "{s:?} is not a head: {why} (expected POSITION:HASH or HASH, as `verify` reports them: head_position and head_hash)"
            ))
        };
        let (position, hash) = match s.trim().split_once(':') {
            Some((p, h)) => {
                let p: i64 = p
                    .parse()
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| bad("the position is not a whole number of at least 0"))?;
                (Some(p), h)
            }
            None => (None, s.trim()),
        };
        let hash =
            chain::from_hex(hash).ok_or_else(|| bad("the hash is not 64 hexadecimal digits"))?;
        Ok(ExpectedHead { position, hash })
    }
}

impl std::fmt::Display for ExpectedHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{p}:{}", chain::hex(&self.hash)),
            None => f.write_str(&chain::hex(&self.hash)),
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub ok: bool,
    /// The first bad position, for the checks that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub detail: String,
}

/// The answer of `verify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// The events chained from the anchor (up to the first break).
    pub events: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_position: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_position: Option<i64>,
    /// The position the chain starts after (0 unless events were archived).
    pub anchor_position: i64,
    /// The newest chained event's position (the anchor's when the log holds no event).
    pub head_position: i64,
    /// Its hash (hexadecimal): a commitment to the whole log up to there. Kept outside the
    /// database with `head_position`, it is what [`VerifyOptions::expect_head`] checks later.
    pub head_hash: String,
    pub checks: Vec<CheckResult>,
}

impl VerifyReport {
    /// The problem to name first: the failed check at the lowest position, else the first
    /// failed check.
    pub fn first_problem(&self) -> Option<&CheckResult> {
        self.checks
            .iter()
            .filter(|c| !c.ok && c.position.is_some())
            .min_by_key(|c| c.position)
            .or_else(|| self.checks.iter().find(|c| !c.ok))
    }

    /// The head as [`VerifyOptions::expect_head`] takes it: `POSITION:HASH`.
    pub fn head(&self) -> String {
        format!("{}:{}", self.head_position, self.head_hash)
    }

    pub(crate) fn add(&mut self, check: &str, ok: bool, position: Option<i64>, detail: String) {
        self.ok &= ok;
        self.checks.push(CheckResult {
            check: check.into(),
            ok,
            position,
            detail,
        });
    }
}

/// Rows per page of the walk over the events.
const PAGE: i64 = 5000;

/// SQL text compared without regard to its layout.
fn normalise(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The differences between a database's schema objects and the reference ones: triggers
/// apart from the rest (tables, indexes, views).
fn schema_differences(
    stored: &[SchemaObject],
    reference: &[SchemaObject],
) -> (Vec<String>, Vec<String>) {
    let key = |o: &SchemaObject| (o.kind.clone(), o.name.clone());
    let same = |a: &SchemaObject, b: &SchemaObject| {
        a.table == b.table && a.sql.as_deref().map(normalise) == b.sql.as_deref().map(normalise)
    };
    let mut triggers = Vec::new();
    let mut others = Vec::new();
    let mut note = |o: &SchemaObject, what: String| {
        if o.kind == "trigger" {
            triggers.push(what)
        } else {
            others.push(what)
        }
    };
    for r in reference {
        match stored.iter().find(|s| key(s) == key(r)) {
            None => note(r, format!("{} {} is missing", r.kind, r.name)),
            Some(s) if !same(s, r) => note(
                r,
                format!(
                    "{} {} differs from the one healstore creates",
                    r.kind, r.name
                ),
            ),
            Some(_) => {}
        }
    }
    for s in stored {
        if !reference.iter().any(|r| key(r) == key(s)) {
            note(
                s,
                format!("{} {} (on {}) is not healstore's", s.kind, s.name, s.table),
            );
        }
    }
    (triggers, others)
}

/// An event as the walk reads it: every stored column, text as its bytes (a field altered
/// into something that is not UTF-8 is still compared, never a failed read).
struct WalkRow {
    position: i64,
    event_id: Vec<u8>,
    stream_id: Vec<u8>,
    stream_version: i64,
    event_type: Vec<u8>,
    schema_version: i64,
    occurred_at: i64,
    recorded_at: i64,
    payload: Vec<u8>,
    hash: Option<Vec<u8>>,
    failure_id: Option<Vec<u8>>,
    agent_id: Option<Vec<u8>>,
    failure_type: Option<Vec<u8>>,
    strategy: Option<Vec<u8>>,
    success: Option<i64>,
    duration_ms: Option<i64>,
}

/// The walk's query, in [`WalkRow`]'s column order.
const WALK_SQL: &str = "SELECT position, CAST(event_id AS BLOB), CAST(stream_id AS BLOB), \
     stream_version, CAST(event_type AS BLOB), schema_version, occurred_at, recorded_at, \
     CAST(payload AS BLOB), CAST(hash AS BLOB), CAST(failure_id AS BLOB), \
     CAST(agent_id AS BLOB), CAST(failure_type AS BLOB), CAST(strategy AS BLOB), success, \
     duration_ms FROM events WHERE position > ? ORDER BY position LIMIT ?";

/// [`WALK_SQL`] on PostgreSQL: the same columns, text as its UTF-8 bytes.
const PG_WALK_SQL: &str = "SELECT position, convert_to(event_id, 'UTF8'), \
     convert_to(stream_id, 'UTF8'), stream_version, convert_to(event_type, 'UTF8'), \
     schema_version, occurred_at, recorded_at, convert_to(payload, 'UTF8'), hash, \
     convert_to(failure_id, 'UTF8'), convert_to(agent_id, 'UTF8'), \
     convert_to(failure_type, 'UTF8'), convert_to(strategy, 'UTF8'), \
     CAST(CAST(success AS INTEGER) AS BIGINT), duration_ms \
     FROM events WHERE position > $1 ORDER BY position LIMIT $2";

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for WalkRow
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(WalkRow {
            position: row.try_get(0)?,
            event_id: row.try_get(1)?,
            stream_id: row.try_get(2)?,
            stream_version: row.try_get(3)?,
            event_type: row.try_get(4)?,
            schema_version: row.try_get(5)?,
            occurred_at: row.try_get(6)?,
            recorded_at: row.try_get(7)?,
            payload: row.try_get(8)?,
            hash: row.try_get(9)?,
            failure_id: row.try_get(10)?,
            agent_id: row.try_get(11)?,
            failure_type: row.try_get(12)?,
            strategy: row.try_get(13)?,
            success: row.try_get(14)?,
            duration_ms: row.try_get(15)?,
        })
    }
}

impl WalkRow {
    fn link(&self, prev: &Hash) -> Hash {
        chain::link_raw(
            prev,
            [
                self.position,
                self.stream_version,
                self.schema_version,
                self.occurred_at,
                self.recorded_at,
            ],
            [
                &self.event_id,
                &self.stream_id,
                &self.event_type,
                &self.payload,
            ],
        )
    }

    fn event_id(&self) -> String {
        String::from_utf8_lossy(&self.event_id).into_owned()
    }

    /// What is wrong with the payload or its indexed copies, if anything: the payload must be
    /// JSON, and each indexed column must hold what the writer extracts from it
    /// ([`IndexFields::from_payload`]).
    fn payload_problem(&self) -> Option<String> {
        let p = self.position;
        let text = match std::str::from_utf8(&self.payload) {
            Ok(t) => t,
            Err(e) => {
                return Some(format!(
                    "undecodable payload at position {p}: it is not UTF-8 text ({e})"
                ));
            }
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return Some(format!(
                    "undecodable payload at position {p}: it is not JSON ({e})"
                ));
            }
        };
        let derived = IndexFields::from_payload(&value);
        let texts = [
            ("failure_id", &self.failure_id, &derived.failure_id),
            ("agent_id", &self.agent_id, &derived.agent_id),
            ("failure_type", &self.failure_type, &derived.failure_type),
            ("strategy", &self.strategy, &derived.strategy),
        ];
        for (column, stored, derived) in texts {
            if stored.as_deref() != derived.as_deref().map(str::as_bytes) {
                return Some(mismatch(
                    p,
                    column,
                    &stored.as_deref().map_or("NULL".into(), quoted),
                    derived.as_deref().map(|d| quoted(d.as_bytes())),
                ));
            }
        }
        let success = derived.success.map(i64::from);
        if self.success != success {
            return Some(mismatch(
                p,
                "success",
                &self.success.map_or("NULL".into(), |s| s.to_string()),
                derived.success.map(|s| s.to_string()),
            ));
        }
        if self.duration_ms != derived.duration_ms {
            return Some(mismatch(
                p,
                "duration_ms",
                &self.duration_ms.map_or("NULL".into(), |d| d.to_string()),
                derived.duration_ms.map(|d| d.to_string()),
            ));
        }
        None
    }
}

/// A stored column value for a message: quoted, at most 64 characters.
fn quoted(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut short: String = text.chars().take(64).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    format!("{short:?}")
}

fn mismatch(position: i64, column: &str, stored: &str, derived: Option<String>) -> String {
    let says = match derived {
        Some(d) => format!("its payload says {d}"),
        None => format!("its payload has no {column}"),
    };
    format!(
        "the indexed column {column} at position {position} holds {stored}, but {says}: the copy that analytics, read models and the audit read was altered"
    )
}

/// What the walk over the events found.
#[derive(Debug, Default)]
struct Walk {
    events: i64,
    first_position: Option<i64>,
    last_position: Option<i64>,
    /// The newest chained event.
    head: Option<(i64, Hash)>,
    /// The first break of the chain: its position and what is wrong.
    chain_break: Option<(i64, String)>,
    /// The first payload that is undecodable or whose indexed columns differ from it.
    payload_problem: Option<(i64, String)>,
    /// With an expected head: the position of the chained event that has its hash (at its
    /// position, if it names one), or the hash found at that position.
    expected_found: Option<i64>,
    expected_position_hash: Option<Hash>,
}

impl Store {
    /// Verifies the database (see the module's documentation).
    pub async fn verify(&self, options: &VerifyOptions) -> Result<VerifyReport> {
        if let Db::Postgres(pool) = &self.inner.readers {
            return self.verify_postgres(pool, options).await;
        }
        let pool = self.read_pool();
        let path = self.path().to_path_buf();
        let db = |e| Error::from_db(e, &path);
        let mut report = VerifyReport {
            ok: true,
            events: 0,
            first_position: None,
            last_position: None,
            anchor_position: 0,
            head_position: 0,
            head_hash: chain::hex(&chain::GENESIS),
            checks: Vec::new(),
        };

        // The chain's anchor. A missing or damaged one is reported, and the chain walked as if
        // it started at position 1.
        let anchor_row: Option<(i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT position, CAST(hash AS BLOB) FROM chain_anchor WHERE id = 1")
                .fetch_optional(pool)
                .await
                .map_err(db)?;
        let (anchor_position, anchor) = match &anchor_row {
            Some((p, Some(h))) if chain::from_blob(h).is_some() => {
                (*p, chain::from_blob(h).unwrap_or(chain::GENESIS))
            }
            _ => (0, chain::GENESIS),
        };
        report.anchor_position = anchor_position;
        report.head_position = anchor_position;
        report.head_hash = chain::hex(&anchor);

        // Checked first (it takes milliseconds): whether the read models' tables are still
        // healstore's decides how their comparison may go wrong.
        let integrity = async {
            let pragma = if options.full_integrity {
                "PRAGMA integrity_check"
            } else {
                "PRAGMA quick_check"
            };
            let lines: Vec<String> = sqlx::query_scalar(pragma).fetch_all(pool).await?;
            Ok::<_, Error>(lines)
        };
        let reference = super::migrate::reference_schema().await?;
        let stored = {
            let mut conn = pool.acquire().await.map_err(db)?;
            super::migrate::schema_objects(&mut conn)
                .await
                .map_err(db)?
        };
        let (trigger_problems, schema_problems) = schema_differences(&stored, &reference);

        // The three long parts run at once, each on its own connection: SQLite's integrity
        // check, the walk over the events, and the comparison of the read models with a
        // rebuild.
        let read_models = async {
            if options.read_models && anchor_position == 0 {
                self.compare_read_models(&reference).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let walk = self.walk(anchor_position, anchor, options.expect_head);
        let (lines, differing, walk) = tokio::join!(integrity, read_models, walk);

        match lines {
            Ok(lines) => {
                let ok = lines.len() == 1 && lines[0] == "ok";
                report.add(
                    "integrity",
                    ok,
                    None,
                    if ok {
                        "SQLite reports no damage".into()
                    } else {
                        lines.into_iter().take(3).collect::<Vec<_>>().join("; ")
                    },
                );
            }
            Err(e) => report.add(
                "integrity",
                false,
                None,
                format!("SQLite's check could not run: {e}"),
            ),
        }
        report.add(
            "triggers",
            trigger_problems.is_empty(),
            None,
            if trigger_problems.is_empty() {
                "the append-only and read-model triggers are healstore's, and no other exists"
                    .into()
            } else {
                trigger_problems.join("; ")
            },
        );
        report.add(
            "schema",
            schema_problems.is_empty(),
            None,
            if schema_problems.is_empty() {
                "every table, index and view is as healstore's migrations create it, and no other exists"
                    .into()
            } else {
                schema_problems.join("; ")
            },
        );
        match &anchor_row {
            Some((_, Some(h))) if chain::from_blob(h).is_some() => {}
            _ => report.add(
                "anchor",
                false,
                None,
                "the chain's anchor is missing or is not a 32-byte hash: it was altered behind healstore's back".into(),
            ),
        }

        let walk = match walk {
            Ok(walk) => walk,
            // A schema already altered can make the events unreadable as healstore wrote
            // them (a column of another type): that is the finding, not an error.
            Err(e) if !report.ok => {
                report.add(
                    "chain",
                    false,
                    None,
                    format!("the events could not be read as healstore writes them: {e}"),
                );
                Walk::default()
            }
            Err(e) => return Err(e),
        };
        self.report_walk(&mut report, anchor_position, anchor, &walk)
            .await?;
        if let Some(expected) = options.expect_head {
            let (ok, position, detail) = head_check(&expected, anchor_position, &anchor, &walk);
            report.add("head", ok, position, detail);
        }

        if options.read_models && anchor_position > 0 {
            report.add(
                "read_models",
                true,
                None,
                format!(
                    "not compared: events up to position {anchor_position} are archived, and the read models keep their periods"
                ),
            );
        } else {
            match differing {
                Ok(None) => {}
                Ok(Some(differing)) => report.add(
                    "read_models",
                    differing.is_empty(),
                    None,
                    if differing.is_empty() {
                        "the read models equal a rebuild from the events".into()
                    } else {
                        format!(
                            "differ from a rebuild from the events: {}",
                            differing.join(", ")
                        )
                    },
                ),
                // A log already found altered (an undecodable payload, another schema) may be
                // impossible to rebuild from: that follows from what is reported.
                Err(e) if !report.ok => report.add(
                    "read_models",
                    false,
                    None,
                    format!("not compared: a rebuild from the altered log failed: {e}"),
                ),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Adds the walk's findings (anchor, chain, payloads, counter) to the report.
    async fn report_walk(
        &self,
        report: &mut VerifyReport,
        anchor_position: i64,
        anchor: Hash,
        walk: &Walk,
    ) -> Result<()> {
        let db = |e| Error::from_db(e, self.path());
        report.events = walk.events;
        report.first_position = walk.first_position;
        report.last_position = walk.last_position;
        if let Some((position, hash)) = walk.head {
            report.head_position = position;
            report.head_hash = chain::hex(&hash);
        }

        if anchor_position > 0 {
            // The anchor must be the one the log's own `events_archived` event recorded.
            let recorded: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT CAST(payload AS BLOB) FROM events \
                 WHERE event_type = 'events_archived' ORDER BY position DESC LIMIT 1",
            )
            .fetch_optional(self.read_pool())
            .await
            .map_err(db)?;
            let recorded = recorded
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
                .map(|v| {
                    (
                        v["to_position"].as_i64(),
                        v["end_hash"].as_str().map(str::to_owned),
                    )
                });
            let ok = recorded.is_some_and(|(p, h)| {
                p == Some(anchor_position) && h.as_deref() == Some(chain::hex(&anchor).as_str())
            });
            report.add(
                "anchor",
                ok,
                (!ok).then_some(anchor_position),
                if ok {
                    format!(
                        "events up to position {anchor_position} are archived, as the log records"
                    )
                } else {
                    format!(
                        "the chain starts after position {anchor_position}, which no events_archived event records: the anchor was moved behind healstore's back"
                    )
                },
            );
        }

        match &walk.chain_break {
            None => report.add(
                "chain",
                true,
                None,
                format!(
                    "{} events chained from the anchor at position {anchor_position}",
                    walk.events
                ),
            ),
            Some((position, what)) => report.add("chain", false, Some(*position), what.clone()),
        }
        match &walk.payload_problem {
            None => report.add(
                "payloads",
                true,
                None,
                "every payload is JSON, and its indexed columns (failure_id, agent_id, failure_type, strategy, success, duration_ms) hold what the writer extracts from it".into(),
            ),
            Some((position, what)) => {
                report.add("payloads", false, Some(*position), what.clone())
            }
        }

        if self.is_postgres() {
            // (no counter: positions are numbered under the append lock, with no gap)
            return Ok(());
        }
        // The position counter against the newest event.
        let pool = self.read_pool();
        let (seq, newest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), \
                    (SELECT MAX(position) FROM events)",
        )
        .fetch_one(pool)
        .await
        .map_err(db)?;
        let last = newest.unwrap_or(anchor_position);
        let ok = seq == last;
        report.add(
            "counter",
            ok,
            (!ok).then_some(last + 1),
            if ok {
                format!("positions up to {seq} were assigned, and the newest event is {last}")
            } else if seq > last {
                format!(
                    "positions up to {seq} were assigned but the log ends at {last}: the newest events were removed"
                )
            } else {
                format!(
                    "the log ends at {last} beyond the counter {seq}: events were inserted behind healstore's back"
                )
            },
        );
        Ok(())
    }

    /// [`Store::verify`] on PostgreSQL: the anchor, the append-only triggers, the chain, the
    /// payloads and the expected head. (No integrity check of SQLite's kind, and no read models
    /// to compare yet.)
    async fn verify_postgres(
        &self,
        pool: &sqlx::PgPool,
        options: &VerifyOptions,
    ) -> Result<VerifyReport> {
        let db = |e| Error::from_db(e, self.path());
        let mut report = VerifyReport {
            ok: true,
            events: 0,
            first_position: None,
            last_position: None,
            anchor_position: 0,
            head_position: 0,
            head_hash: chain::hex(&chain::GENESIS),
            checks: Vec::new(),
        };
        let anchor_row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT position, hash FROM chain_anchor WHERE id = 1")
                .fetch_optional(pool)
                .await
                .map_err(db)?;
        let (anchor_position, anchor) = match &anchor_row {
            Some((p, h)) if chain::from_blob(h).is_some() => {
                (*p, chain::from_blob(h).unwrap_or(chain::GENESIS))
            }
            _ => {
                report.add(
                    "anchor",
                    false,
                    None,
                    "the chain's anchor is missing or is not a 32-byte hash: it was altered behind healstore's back".into(),
                );
                (0, chain::GENESIS)
            }
        };
        report.anchor_position = anchor_position;
        report.head_position = anchor_position;
        report.head_hash = chain::hex(&anchor);
        let triggers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass \
             AND tgname IN ('events_refuse_rewrite', 'events_refuse_truncate') \
             AND tgenabled <> 'D'",
        )
        .fetch_one(pool)
        .await
        .map_err(db)?;
        report.add(
            "triggers",
            triggers == 2,
            None,
            if triggers == 2 {
                "the append-only triggers are in place and enabled".into()
            } else {
                "an append-only trigger of the events table was dropped or disabled".into()
            },
        );
        let walk = self
            .walk(anchor_position, anchor, options.expect_head)
            .await?;
        self.report_walk(&mut report, anchor_position, anchor, &walk)
            .await?;
        if let Some(expected) = options.expect_head {
            let (ok, position, detail) = head_check(&expected, anchor_position, &anchor, &walk);
            report.add("head", ok, position, detail);
        }
        if options.read_models {
            report.add(
                "read_models",
                true,
                None,
                "not compared: not yet available on PostgreSQL (no analytics read models)".into(),
            );
        }
        Ok(report)
    }

    /// Walks the events from the anchor in pages: the chain up to its first break, every
    /// payload and its indexed columns to the end (a later forgery is named even after a
    /// break), and the expected head. The next page is read while one is checked.
    async fn walk(
        &self,
        anchor_position: i64,
        anchor: Hash,
        expected: Option<ExpectedHead>,
    ) -> Result<Walk> {
        let readers = &self.inner.readers;
        let fetch = |after: i64| async move {
            match readers {
                Db::Sqlite(pool) => {
                    sqlx::query_as::<_, WalkRow>(WALK_SQL)
                        .bind(after)
                        .bind(PAGE)
                        .fetch_all(pool)
                        .await
                }
                Db::Postgres(pool) => {
                    sqlx::query_as::<_, WalkRow>(PG_WALK_SQL)
                        .bind(after)
                        .bind(PAGE)
                        .fetch_all(pool)
                        .await
                }
            }
            .map_err(|e| Error::from_db(e, self.path()))
        };
        let mut walk = Walk::default();
        let mut prev = anchor;
        let mut prev_position = anchor_position;
        let mut page = fetch(i64::MIN).await?;
        while let Some(last) = page.last() {
            let after = last.position;
            let more = page.len() as i64 == PAGE;
            let (next, ()) = tokio::join!(
                async {
                    if more {
                        fetch(after).await
                    } else {
                        Ok(Vec::new())
                    }
                },
                async {
                    for r in &page {
                        check_row(
                            r,
                            &mut walk,
                            &mut prev,
                            &mut prev_position,
                            anchor_position,
                            expected.as_ref(),
                        );
                    }
                }
            );
            if walk.chain_break.is_some() && walk.payload_problem.is_some() {
                break;
            }
            page = next?;
        }
        Ok(walk)
    }

    /// The read models that differ from a rebuild. On a connection of its own, in one read
    /// transaction: the rebuild (`rebuild.sql`, unchanged) is computed into temporary tables
    /// of the same names, created as healstore's migrations create the read models (SQLite
    /// resolves unqualified names to `temp` first), and compared with the stored tables both
    /// ways with `EXCEPT`, all inside SQLite. No write lock is taken, so writers never wait
    /// for it; the stored tables and the events are read from the same snapshot.
    async fn compare_read_models(&self, reference: &[SchemaObject]) -> Result<Vec<String>> {
        use sqlx::ConnectOptions as _;
        let path = self.path().to_path_buf();
        let db = |e| Error::from_db(e, &path);
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(self.options().busy_timeout)
            .pragma("cache_size", "-65536")
            .pragma("temp.cache_size", "-65536")
            .log_statements(tracing::log::LevelFilter::Trace)
            .connect()
            .await
            .map_err(db)?;
        let mut tx = conn.begin().await.map_err(db)?;
        for (table, _, _) in crate::analytics::READ_MODEL_TABLES {
            let create = reference
                .iter()
                .find(|o| o.kind == "table" && o.name == *table)
                .and_then(|o| o.sql.as_deref())
                .and_then(|sql| sql.strip_prefix("CREATE TABLE "))
                .ok_or_else(|| {
                    Error::Database(format!("the migrations create no read model table {table}"))
                })?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TEMP TABLE {create}")))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        crate::analytics::rebuild_read_models(&mut tx)
            .await
            .map_err(db)?;
        let mut differing = Vec::new();
        for (t, columns, _) in crate::analytics::READ_MODEL_TABLES {
            let (diff, stored, rebuilt): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(
                format!(
                    "SELECT (SELECT COUNT(*) FROM (SELECT {columns} FROM main.{t} EXCEPT SELECT {columns} FROM temp.{t})) \
                          + (SELECT COUNT(*) FROM (SELECT {columns} FROM temp.{t} EXCEPT SELECT {columns} FROM main.{t})), \
                            (SELECT COUNT(*) FROM main.{t}), (SELECT COUNT(*) FROM temp.{t})"
                ),
            ))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if diff > 0 {
                differing.push(format!(
                    "{t} ({stored} rows stored, {rebuilt} rebuilt, {diff} differ)"
                ));
            }
        }
        tx.rollback().await.map_err(db)?;
        conn.close().await.map_err(db)?;
        Ok(differing)
    }
}

/// Checks one event of the walk: its link (while the chain holds), its payload, the expected
/// head.
fn check_row(
    r: &WalkRow,
    walk: &mut Walk,
    prev: &mut Hash,
    prev_position: &mut i64,
    anchor_position: i64,
    expected: Option<&ExpectedHead>,
) {
    if walk.payload_problem.is_none()
        && let Some(problem) = r.payload_problem()
    {
        walk.payload_problem = Some((r.position, problem));
    }
    if walk.chain_break.is_some() {
        return;
    }
    if walk.first_position.is_none() {
        walk.first_position = Some(r.position);
        if r.position <= anchor_position {
            walk.chain_break = Some((
                r.position,
                format!(
                    "position {} lies at or before the chain's anchor {anchor_position}",
                    r.position
                ),
            ));
            return;
        }
    }
    if r.position != *prev_position + 1 {
        walk.chain_break = Some((
            *prev_position + 1,
            format!(
                "positions jump from {prev_position} to {}: event {} was removed behind healstore's back",
                r.position,
                *prev_position + 1
            ),
        ));
        return;
    }
    let Some(stored) = r.hash.as_deref().and_then(chain::from_blob) else {
        walk.chain_break = Some((
            r.position,
            format!(
                "event {} (id {:?}) has no hash: it was inserted behind healstore's back",
                r.position,
                r.event_id()
            ),
        ));
        return;
    };
    if r.link(prev) != stored {
        walk.chain_break = Some((
            r.position,
            format!(
                "event {} (id {:?}) does not match its hash: its content was altered, or an event was inserted or removed before it",
                r.position,
                r.event_id()
            ),
        ));
        return;
    }
    *prev = stored;
    *prev_position = r.position;
    walk.events += 1;
    walk.last_position = Some(r.position);
    walk.head = Some((r.position, stored));
    if let Some(e) = expected {
        match e.position {
            Some(p) if p == r.position => walk.expected_position_hash = Some(stored),
            None if walk.expected_found.is_none() && stored == e.hash => {
                walk.expected_found = Some(r.position)
            }
            _ => {}
        }
    }
}

/// Whether the log holds the expected head: `(ok, position, detail)`.
fn head_check(
    e: &ExpectedHead,
    anchor_position: i64,
    anchor: &Hash,
    walk: &Walk,
) -> (bool, Option<i64>, String) {
    let want = chain::hex(&e.hash);
    let last = walk.last_position.unwrap_or(anchor_position);
    let after = |p: i64| match last - p {
        0 => "it is the head".to_owned(),
        n => format!("{n} event(s) were appended after it"),
    };
    let broken = |p: &str| match &walk.chain_break {
        Some((b, _)) => format!(
            "the log does not hold the expected head {p}: the chain breaks at position {b} before reaching it"
        ),
        None => String::new(),
    };
    match e.position {
        Some(p) if p < anchor_position => (
            false,
            Some(p),
            format!(
                "the expected head at position {p} was archived (the log starts after position {anchor_position}): check the archive that holds it with `verify --archive`, and expect a head at or after position {anchor_position}"
            ),
        ),
        Some(p) if p == anchor_position => {
            if *anchor == e.hash {
                (
                    true,
                    None,
                    format!(
                        "the log holds the expected head, its anchor at position {p}; {}",
                        after(p)
                    ),
                )
            } else {
                (
                    false,
                    Some(p),
                    format!(
                        "the chain's anchor at position {p} has hash {}, not the expected {want}: the log was rewritten up to there",
                        chain::hex(anchor)
                    ),
                )
            }
        }
        Some(p) => match walk.expected_position_hash {
            Some(h) if h == e.hash => (
                true,
                None,
                format!(
                    "the log holds the expected head, the event at position {p} with hash {want}; {}",
                    after(p)
                ),
            ),
            Some(h) => (
                false,
                Some(p),
                format!(
                    "the event at position {p} has hash {}, not the expected {want}: the log was rewritten up to there",
                    chain::hex(&h)
                ),
            ),
            None if walk.chain_break.is_some() => (false, None, broken(&e.to_string())),
            None => (
                false,
                Some(last + 1),
                format!(
                    "the log ends at position {last}, before the expected head at position {p}: events were removed behind healstore's back"
                ),
            ),
        },
        None if *anchor == e.hash => (
            true,
            None,
            format!(
                "the log holds the expected head, its anchor at position {anchor_position}; {}",
                after(anchor_position)
            ),
        ),
        None => match walk.expected_found {
            Some(q) => (
                true,
                None,
                format!(
                    "the log holds the expected head, the event at position {q}; {}",
                    after(q)
                ),
            ),
            None if walk.chain_break.is_some() => (false, None, broken(&want)),
            None => (
                false,
                None,
                format!(
                    "no event of the log has the expected head's hash {want}: the log was cut back or rewritten behind healstore's back"
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_heads_parse_with_and_without_a_position() {
        let hash = "ab".repeat(32);
        let e: ExpectedHead = format!("12:{hash}").parse().unwrap();
        assert_eq!(e.position, Some(12));
        assert_eq!(e.to_string(), format!("12:{hash}"));
        let e: ExpectedHead = hash.to_uppercase().parse().unwrap();
        assert_eq!(e.position, None);
        assert_eq!(e.to_string(), hash);
        for bad in [
            "",
            "12",
            "x:y",
            "-1:00",
            &format!("-1:{hash}"),
            &format!("{hash}:1"),
        ] {
            assert!(bad.parse::<ExpectedHead>().is_err(), "{bad}");
        }
    }
}
