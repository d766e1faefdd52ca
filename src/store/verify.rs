//! `verify`: proves the log is what healstore wrote.
//!
//! Checks, in order: SQLite's own integrity check; the append-only and read-model triggers
//! are in place and unaltered; the hash chain from the anchor through every event (a changed,
//! inserted or removed event breaks it, and the first bad position is named); the position
//! counter agrees with the newest event (removing the newest events leaves the chain intact
//! but not the counter); and the read models equal a rebuild from the events (computed in a
//! transaction that is rolled back). Strategy snapshots are checked by the healer
//! ([`crate::heal::Healer::verify_snapshots`]), which knows the strategies' folds.
//!
//! Memory stays flat: events are read in keyset pages and the rebuild's tables are compared
//! by streamed digests.

use serde::Serialize;
use sqlx::Connection;

use super::Store;
use super::chain::{self, Hash};
use crate::error::{Error, Result};

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// `PRAGMA integrity_check` (also every index against its table) instead of
    /// `quick_check` (every page, record and constraint). Several times slower on large files.
    pub full_integrity: bool,
    /// Compare the read models with a rebuild from the events.
    pub read_models: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            full_integrity: false,
            read_models: true,
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub ok: bool,
    /// The first bad position, for the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub detail: String,
}

/// The answer of `verify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub events: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_position: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_position: Option<i64>,
    /// The position the chain starts after (0 unless events were archived).
    pub anchor_position: i64,
    /// The newest event's hash (hexadecimal): a commitment to the whole log.
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

/// The read-model triggers, which must exist.
const READ_MODEL_TRIGGERS: &[&str] = &[
    "rm_failure_detected",
    "rm_healing_attempted",
    "rm_healing_completed",
    "rm_failure_resolved",
    "rm_failure_recovered",
    "rm_pattern_learned",
    "rm_prediction_made",
    "rm_circuit_transitioned",
];

fn normalise(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Store {
    /// Verifies the database (see the module's documentation).
    pub async fn verify(&self, options: &VerifyOptions) -> Result<VerifyReport> {
        let pool = self.read_pool();
        let mut report = VerifyReport {
            ok: true,
            events: 0,
            first_position: None,
            last_position: None,
            anchor_position: 0,
            head_hash: chain::hex(&chain::GENESIS),
            checks: Vec::new(),
        };

        // The three long parts run at once, each on its own connection: SQLite's integrity
        // check, the chain walk (with the trigger, anchor and counter checks), and the
        // comparison of the read models with a rebuild.
        let (anchor_position, anchor_hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT position, hash FROM chain_anchor WHERE id = 1")
                .fetch_one(pool)
                .await?;
        let anchor = chain::from_blob(&anchor_hash).ok_or_else(|| Error::Corrupt {
            path: self.path().to_path_buf(),
            reason: "the chain anchor is not a 32-byte hash".into(),
        })?;
        let integrity = async {
            let pragma = if options.full_integrity {
                "PRAGMA integrity_check"
            } else {
                "PRAGMA quick_check"
            };
            let lines: Vec<String> = sqlx::query_scalar(pragma).fetch_all(pool).await?;
            Ok::<_, Error>(lines)
        };
        let read_models = async {
            if options.read_models && anchor_position == 0 {
                self.compare_read_models().await.map(Some)
            } else {
                Ok(None)
            }
        };
        let mut walked = VerifyReport {
            checks: Vec::new(),
            ..report.clone()
        };
        let main = async {
            let report = &mut walked;
            // 2. Triggers.
            let triggers: Vec<(String, String)> =
                sqlx::query_as("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")
                    .fetch_all(pool)
                    .await?;
            let find = |n: &str| triggers.iter().find(|(name, _)| name == n).map(|t| &t.1);
            let mut missing = Vec::new();
            for (name, expected) in [
                (
                    "events_refuse_update",
                    super::migrate::REFUSE_UPDATE_TRIGGER,
                ),
                (
                    "events_refuse_delete",
                    super::migrate::REFUSE_DELETE_TRIGGER,
                ),
            ] {
                match find(name) {
                    Some(sql) if normalise(sql) == normalise(expected) => {}
                    Some(_) => missing.push(format!("{name} was altered")),
                    None => missing.push(format!("{name} is missing")),
                }
            }
            for name in READ_MODEL_TRIGGERS {
                if find(name).is_none() {
                    missing.push(format!("{name} is missing"));
                }
            }
            report.add(
                "triggers",
                missing.is_empty(),
                None,
                if missing.is_empty() {
                    "the append-only and read-model triggers are in place".into()
                } else {
                    missing.join("; ")
                },
            );

            // 3. The chain, from the anchor.
            report.anchor_position = anchor_position;
            if anchor_position > 0 {
                // The anchor must be the one the log's own `events_archived` event recorded.
                let recorded: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
                    "SELECT payload ->> '$.to_position', payload ->> '$.end_hash' FROM events \
                     WHERE event_type = 'events_archived' ORDER BY position DESC LIMIT 1",
                )
                .fetch_optional(pool)
                .await?;
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
            let chain_result = self.walk_chain(anchor_position, anchor, report).await?;
            match chain_result {
                None => {
                    let detail = format!(
                        "{} events chained from the anchor at position {anchor_position}",
                        report.events
                    );
                    report.add("chain", true, None, detail);
                }
                Some((position, what)) => report.add("chain", false, Some(position), what),
            }

            // 4. The position counter against the newest event.
            let (seq, newest): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), \
                        (SELECT MAX(position) FROM events)",
            )
            .fetch_one(pool)
            .await?;
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
                    format!("the log ends at {last} beyond the counter {seq}: events were inserted behind healstore's back")
                },
            );

            Ok::<_, Error>(())
        };
        let (lines, differing, walk) = tokio::join!(integrity, read_models, main);
        let lines = lines?;
        walk?;
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
        report.events = walked.events;
        report.first_position = walked.first_position;
        report.last_position = walked.last_position;
        report.anchor_position = walked.anchor_position;
        report.head_hash = walked.head_hash.clone();
        for c in walked.checks {
            report.add(&c.check, c.ok, c.position, c.detail);
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
        } else if let Some(differing) = differing? {
            report.add(
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
            );
        }
        Ok(report)
    }

    /// Walks the chain; `Some((position, what))` at the first break.
    async fn walk_chain(
        &self,
        anchor_position: i64,
        anchor: Hash,
        report: &mut VerifyReport,
    ) -> Result<Option<(i64, String)>> {
        let pool = self.read_pool();
        let mut prev = anchor;
        let mut prev_position = anchor_position;
        let mut after = i64::MIN;
        loop {
            let rows: Vec<chain::StoredEvent> = sqlx::query_as(
                "SELECT position, event_id, stream_id, stream_version, event_type, \
                 schema_version, occurred_at, recorded_at, payload, hash FROM events \
                 WHERE position > ? ORDER BY position LIMIT 5000",
            )
            .bind(after)
            .fetch_all(pool)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.position;
            for r in &rows {
                if report.first_position.is_none() {
                    report.first_position = Some(r.position);
                    if r.position <= anchor_position {
                        return Ok(Some((
                            r.position,
                            format!(
                                "position {} lies at or before the chain's anchor {anchor_position}",
                                r.position
                            ),
                        )));
                    }
                }
                if r.position != prev_position + 1 {
                    return Ok(Some((
                        prev_position + 1,
                        format!(
                            "positions jump from {prev_position} to {}: event {} was removed behind healstore's back",
                            r.position,
                            prev_position + 1
                        ),
                    )));
                }
                let Some(stored) = r.stored_hash() else {
                    return Ok(Some((
                        r.position,
                        format!(
                            "event {} (id {:?}) has no hash: it was inserted behind healstore's back",
                            r.position, r.event_id
                        ),
                    )));
                };
                let expected = chain::link(&prev, &r.content());
                if expected != stored {
                    return Ok(Some((
                        r.position,
                        format!(
                            "event {} (id {:?}) does not match its hash: its content was altered, or an event was inserted or removed before it",
                            r.position, r.event_id
                        ),
                    )));
                }
                prev = stored;
                prev_position = r.position;
                report.events += 1;
                report.last_position = Some(r.position);
                report.head_hash = chain::hex(&stored);
            }
        }
        Ok(None)
    }

    /// The read models that differ from a rebuild, computed on a separate connection in a
    /// transaction that is rolled back: the stored tables are copied aside, rebuilt in place,
    /// and compared both ways with `EXCEPT`, all inside SQLite.
    async fn compare_read_models(&self) -> Result<Vec<String>> {
        use sqlx::ConnectOptions as _;
        let path = self.path().to_path_buf();
        let db = |e| Error::from_db(e, &path);
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(self.options().busy_timeout)
            .pragma("cache_size", "-65536")
            .log_statements(tracing::log::LevelFilter::Trace)
            .connect()
            .await
            .map_err(db)?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        for t in crate::analytics::READ_MODEL_TABLE_NAMES {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TEMP TABLE stored_{t} AS SELECT * FROM main.{t}"
            )))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        crate::analytics::rebuild_read_models(&mut tx)
            .await
            .map_err(db)?;
        let mut differing = Vec::new();
        for t in crate::analytics::READ_MODEL_TABLE_NAMES {
            let (diff, stored, rebuilt): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(
                format!(
                    "SELECT (SELECT COUNT(*) FROM (SELECT * FROM stored_{t} EXCEPT SELECT * FROM main.{t})) \
                          + (SELECT COUNT(*) FROM (SELECT * FROM main.{t} EXCEPT SELECT * FROM stored_{t})), \
                            (SELECT COUNT(*) FROM stored_{t}), (SELECT COUNT(*) FROM main.{t})"
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
        for t in crate::analytics::READ_MODEL_TABLE_NAMES {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE temp.stored_{t}")))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.rollback().await.map_err(db)?;
        conn.close().await.map_err(db)?;
        Ok(differing)
    }
}
