//! Strategy snapshots and checkpoints: a read model that shortens restores. The store owns
//! the SQL; what a snapshot holds is the healer's business (opaque JSON text here).

use super::Store;
use super::dialect::Param;
use super::writer::Request;
use crate::error::Result;

/// One strategy state stream's folded state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub stream_id: String,
    pub strategy: String,
    pub key: String,
    /// The state after the stream's events 1..=stream_version.
    pub stream_version: u64,
    /// The state as JSON text.
    pub state: String,
    /// The state is at rest (it decides as a new one would). Only the snapshots of streams
    /// whose earliest events are archived are kept at rest; a restore does not read them.
    pub at_rest: bool,
}

/// A checkpoint to write: for each strategy, the position every snapshot of it covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    pub positions: Vec<(String, i64)>,
    pub snapshots: Vec<Snapshot>,
    /// States back at rest, which need no snapshot: the stored snapshot is deleted unless it is
    /// of a higher stream version; but when the stream's earliest events are archived, a fold
    /// could not rebuild the state, so the snapshot is kept, marked at rest.
    pub deleted: Vec<Snapshot>,
    /// Strategies whose count of snapshots in use is set from the table rather than moved by
    /// this checkpoint's own writes: the writer folded every one of their streams from the
    /// log (a restore that found snapshots missing) and rewrites every state it holds.
    pub recount: Vec<String>,
}

/// An archived strategy stream that no snapshot covers: its state cannot be rebuilt.
#[derive(Debug, Clone, PartialEq)]
pub struct Uncovered {
    pub stream_id: String,
    /// Its events up to this version are archived.
    pub archived_version: u64,
    /// The version of its snapshot, if it has one (below `archived_version`).
    pub snapshot_version: Option<u64>,
}

impl Uncovered {
    /// Why the stream's state cannot be rebuilt.
    pub fn describe(&self) -> String {
        format!(
            "the state of {} cannot be rebuilt: its events up to version {} are archived and {}",
            self.stream_id,
            self.archived_version,
            match self.snapshot_version {
                None => "its snapshot is missing".to_owned(),
                Some(v) => format!("its snapshot is of version {v} only"),
            }
        )
    }
}

const COLUMNS: &str = "stream_id, strategy, key, stream_version, state, at_rest";

/// The strategy streams among the stored ones (`strategy-...`: `-` is followed by `.`).
const STRATEGY_STREAMS: &str = "'strategy-' AND 'strategy.'";

/// A snapshot's row, as [`COLUMNS`] reads it on either backend.
type SnapshotRow = (String, String, String, i64, String, i32);

impl Store {
    /// Every snapshot of a strategy not at rest (what a restore reads).
    pub async fn load_snapshots(&self, strategy: &str) -> Result<Vec<Snapshot>> {
        let rows: Vec<SnapshotRow> = self
            .db()
            .fetch_all(
                &format!(
                    "SELECT {COLUMNS} FROM strategy_snapshots WHERE strategy = ? AND at_rest = 0"
                ),
                &[strategy.into()],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(rows.into_iter().map(decode).collect())
    }

    /// Every snapshot of a strategy, those at rest included.
    pub async fn load_all_snapshots(&self, strategy: &str) -> Result<Vec<Snapshot>> {
        let rows: Vec<SnapshotRow> = self
            .db()
            .fetch_all(
                &format!("SELECT {COLUMNS} FROM strategy_snapshots WHERE strategy = ?"),
                &[strategy.into()],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(rows.into_iter().map(decode).collect())
    }

    /// What a restore reads of a strategy: its snapshots not at rest, each with whether the
    /// log holds an event of its stream after it at or below `position` (the snapshot is
    /// older than the checkpoint says: the stream must be read from the snapshot on).
    pub(crate) async fn load_snapshots_for_restore(
        &self,
        strategy: &str,
        position: i64,
    ) -> Result<Vec<(Snapshot, bool)>> {
        let rows: Vec<(String, String, String, i64, String, i32, bool)> = self
            .db()
            .fetch_all(
                &format!(
                    "SELECT {COLUMNS}, EXISTS (SELECT 1 FROM events e \
                         WHERE e.stream_id = s.stream_id \
                         AND e.stream_version = s.stream_version + 1 AND e.position <= ?2) \
                     FROM strategy_snapshots s WHERE strategy = ?1 AND at_rest = 0"
                ),
                &[strategy.into(), position.into()],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(rows
            .into_iter()
            .map(|(a, b, c, d, e, f, older)| (decode((a, b, c, d, e, f)), older))
            .collect())
    }

    /// One stream's snapshot, if stored.
    pub async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>> {
        Ok(self.load_stream_base(stream_id).await?.0)
    }

    /// What loading one stream's state starts from: its snapshot, if stored, and the version
    /// up to which its events are archived (0: none), in one look-up.
    pub(crate) async fn load_stream_base(
        &self,
        stream_id: &str,
    ) -> Result<(Option<Snapshot>, u64)> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<i32>,
            Option<i64>,
        );
        let (id, strategy, key, version, state, at_rest, archived): Row = self
            .db()
            .fetch_one(
                "SELECT s.stream_id, s.strategy, s.key, s.stream_version, s.state, s.at_rest, \
                        (SELECT version FROM archived_streams WHERE stream_id = ?1) \
                 FROM (SELECT 1) AS one LEFT JOIN strategy_snapshots s ON s.stream_id = ?1",
                &[stream_id.into()],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let archived = u64::try_from(archived.unwrap_or(0)).unwrap_or(0);
        let snapshot = match (id, strategy, key, version, state, at_rest) {
            (Some(id), Some(strategy), Some(key), Some(version), Some(state), Some(at_rest)) => {
                Some(decode((id, strategy, key, version, state, at_rest)))
            }
            _ => None,
        };
        Ok((snapshot, archived))
    }

    /// The position a strategy's snapshots cover (0 when it has none).
    pub async fn checkpoint_position(&self, strategy: &str) -> Result<i64> {
        Ok(self.checkpoint_of(strategy).await?.0)
    }

    /// A strategy's checkpoint: the position its snapshots cover (0 when it has none), and
    /// how many snapshots not at rest it left (`None`: not known).
    pub(crate) async fn checkpoint_of(&self, strategy: &str) -> Result<(i64, Option<u64>)> {
        let v: Option<(i64, Option<i64>)> = self
            .db()
            .fetch_optional(
                "SELECT position, snapshots FROM strategy_checkpoints WHERE strategy = ?",
                &[strategy.into()],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(match v {
            Some((p, n)) => (p, n.and_then(|n| u64::try_from(n).ok())),
            None => (0, None),
        })
    }

    /// The first archived strategy stream (in stream order) whose snapshot is missing or older
    /// than its archived events: a state that cannot be rebuilt.
    pub async fn uncovered_archived_stream(&self) -> Result<Option<Uncovered>> {
        let row: Option<(String, i64, Option<i64>)> = self
            .db()
            .fetch_optional(
                &format!(
                    "SELECT a.stream_id, a.version, s.stream_version FROM archived_streams a \
                     LEFT JOIN strategy_snapshots s ON s.stream_id = a.stream_id \
                     WHERE a.stream_id BETWEEN {STRATEGY_STREAMS} \
                       AND (s.stream_id IS NULL OR s.stream_version < a.version) \
                     ORDER BY a.stream_id LIMIT 1"
                ),
                &[],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(row.map(|(stream_id, a, s)| Uncovered {
            stream_id,
            archived_version: u64::try_from(a).unwrap_or(0),
            snapshot_version: s.and_then(|s| u64::try_from(s).ok()),
        }))
    }

    /// Strategy streams with events at or below `position` whose snapshot (if any) does not
    /// cover them: `(strategy, stream, its last version at or below position)`, in stream
    /// order after `after`, at most `limit`. An archive up to `position` needs none.
    pub(crate) async fn uncovered_streams(
        &self,
        position: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String, u64)>> {
        let rows: Vec<(Option<String>, String, i64)> = self
            .db()
            .fetch_all(
                &uncovered_sql(" AND e.stream_id > ?3"),
                &[position.into(), limit.into(), after.into()],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(rows
            .into_iter()
            .map(|(s, stream, v)| (s.unwrap_or_default(), stream, v.max(0) as u64))
            .collect())
    }

    /// Each stream's version (its newest event's, or its archived events' when none is left;
    /// 0 for a stream without events), in one statement.
    pub(crate) async fn stream_versions(
        &self,
        streams: &[String],
    ) -> Result<std::collections::HashMap<String, u64>> {
        let db = self.db();
        let rows: Vec<(String, i64)> = db
            .fetch_all(
                &format!(
                    "SELECT j.value, COALESCE((SELECT MAX(stream_version) FROM events \
                                               WHERE stream_id = j.value), \
                                              (SELECT version FROM archived_streams \
                                               WHERE stream_id = j.value), 0) \
                     FROM {}",
                    db.dialect().text_list(1, "j")
                ),
                &[Param::Texts(streams.to_vec())],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(rows
            .into_iter()
            .map(|(s, v)| (s, u64::try_from(v).unwrap_or(0)))
            .collect())
    }

    /// Writes snapshots and checkpoint positions in one transaction. A snapshot never replaces
    /// one of a higher stream version (another process may know more). A position that did not
    /// move is left as it is, so that a healer that changed nothing leaves the file unchanged.
    pub async fn write_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.ask(|reply| Request::Checkpoint(checkpoint, reply))
            .await
    }

    /// Deletes every snapshot and checkpoint (they are rebuilt from the events).
    pub async fn drop_snapshots(&self) -> Result<()> {
        self.ask(Request::DropSnapshots).await
    }
}

/// The strategy streams with events at or below position `?1` whose snapshot does not cover
/// them: `(strategy, stream_id, last version)` rows in stream order, at most `?2`, with
/// `filter` as further conditions on `e`. The archive refuses a cut through such a stream.
pub(crate) fn uncovered_sql(filter: &str) -> String {
    format!(
        "SELECT MAX(e.strategy), e.stream_id, MAX(e.stream_version) AS v FROM events e \
         WHERE e.stream_id BETWEEN {STRATEGY_STREAMS} AND e.position <= ?1{filter} \
         GROUP BY e.stream_id \
         HAVING MAX(e.stream_version) > COALESCE((SELECT s.stream_version FROM strategy_snapshots s \
                              WHERE s.stream_id = e.stream_id), 0) \
         ORDER BY e.stream_id LIMIT ?2"
    )
}

fn decode((stream_id, strategy, key, version, state, at_rest): SnapshotRow) -> Snapshot {
    Snapshot {
        stream_id,
        strategy,
        key,
        stream_version: u64::try_from(version).unwrap_or(0),
        state,
        at_rest: at_rest != 0,
    }
}

const UPSERT: &str = "INSERT INTO strategy_snapshots (stream_id, strategy, key, stream_version, \
     state, written_at, at_rest) VALUES (?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version, \
     state = excluded.state, written_at = excluded.written_at, at_rest = excluded.at_rest \
     WHERE excluded.stream_version >= strategy_snapshots.stream_version";

/// Per strategy, how many of the listed streams (a JSON array) have a snapshot in use.
async fn in_use(
    conn: &mut sqlx::SqliteConnection,
    streams: &str,
) -> sqlx::Result<std::collections::HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.strategy, count(*) FROM json_each(?) j \
         JOIN strategy_snapshots s ON s.stream_id = j.value \
         WHERE s.at_rest = 0 GROUP BY s.strategy",
    )
    .bind(streams)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

pub(crate) async fn write(
    conn: &mut sqlx::SqliteConnection,
    checkpoint: &Checkpoint,
    now_us: i64,
) -> sqlx::Result<()> {
    use sqlx::Connection as _;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let touched: Vec<&str> = checkpoint
        .snapshots
        .iter()
        .chain(&checkpoint.deleted)
        .map(|s| s.stream_id.as_str())
        .collect();
    let touched = serde_json::to_string(&touched).unwrap_or_else(|_| "[]".into());
    let before = in_use(&mut tx, &touched).await?;
    for s in &checkpoint.snapshots {
        sqlx::query(UPSERT)
            .bind(&s.stream_id)
            .bind(&s.strategy)
            .bind(&s.key)
            .bind(s.stream_version as i64)
            .bind(&s.state)
            .bind(now_us)
            .bind(i64::from(s.at_rest))
            .execute(&mut *tx)
            .await?;
    }
    for s in &checkpoint.deleted {
        // Archived events: the snapshot is all that can rebuild the state. Kept, at rest.
        let archived: Option<i64> =
            sqlx::query_scalar("SELECT version FROM archived_streams WHERE stream_id = ?")
                .bind(&s.stream_id)
                .fetch_optional(&mut *tx)
                .await?;
        if archived.is_some() {
            sqlx::query(UPSERT)
                .bind(&s.stream_id)
                .bind(&s.strategy)
                .bind(&s.key)
                .bind(s.stream_version as i64)
                .bind(&s.state)
                .bind(now_us)
                .bind(1i64)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "DELETE FROM strategy_snapshots WHERE stream_id = ? AND stream_version <= ?",
            )
            .bind(&s.stream_id)
            .bind(s.stream_version as i64)
            .execute(&mut *tx)
            .await?;
        }
    }
    for (strategy, position) in &checkpoint.positions {
        sqlx::query(
            "INSERT INTO strategy_checkpoints (strategy, position, written_at) VALUES (?, ?, ?) \
             ON CONFLICT (strategy) DO UPDATE SET position = excluded.position, \
             written_at = excluded.written_at \
             WHERE excluded.position <> strategy_checkpoints.position",
        )
        .bind(strategy)
        .bind(position)
        .bind(now_us)
        .execute(&mut *tx)
        .await?;
    }
    // The count of snapshots in use moves by what this checkpoint's own writes changed, never
    // by a count of the table, which would take a snapshot deleted behind healstore's back for
    // granted. A strategy's first checkpoint, and the strategies of `recount`, are counted.
    let after = in_use(&mut tx, &touched).await?;
    let mut strategies: Vec<&String> = before.keys().chain(after.keys()).collect();
    strategies.sort();
    strategies.dedup();
    for strategy in strategies {
        let delta = after.get(strategy).unwrap_or(&0) - before.get(strategy).unwrap_or(&0);
        if delta != 0 {
            sqlx::query(
                "UPDATE strategy_checkpoints SET snapshots = max(0, snapshots + ?) \
                 WHERE strategy = ? AND snapshots IS NOT NULL",
            )
            .bind(delta)
            .bind(strategy)
            .execute(&mut *tx)
            .await?;
        }
    }
    let recount = serde_json::to_string(&checkpoint.recount).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "UPDATE strategy_checkpoints SET snapshots = (SELECT count(*) FROM strategy_snapshots s \
                 WHERE s.strategy = strategy_checkpoints.strategy AND s.at_rest = 0) \
         WHERE snapshots IS NULL OR strategy IN (SELECT value FROM json_each(?))",
    )
    .bind(recount)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub(crate) async fn drop_all(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<()> {
    use sqlx::Connection as _;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("DELETE FROM strategy_snapshots")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM strategy_checkpoints")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Serialises checkpoints across processes on PostgreSQL ('HLST' and 3), as SQLite's write
/// lock does: each moves the count of snapshots in use by what its own writes changed, read
/// before and after them, which two checkpoints interleaved would count twice.
const PG_CHECKPOINT_LOCK: i64 = 0x484C_5354_0000_0003;

/// Per strategy, how many of the listed streams have a snapshot in use (PostgreSQL).
async fn pg_in_use(
    conn: &mut sqlx::PgConnection,
    streams: &[String],
) -> sqlx::Result<std::collections::HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.strategy, count(*) FROM UNNEST($1::text[]) AS j(value) \
         JOIN strategy_snapshots s ON s.stream_id = j.value \
         WHERE s.at_rest = 0 GROUP BY s.strategy",
    )
    .bind(streams)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// [`write`] on PostgreSQL: the same statements, in one transaction under
/// [`PG_CHECKPOINT_LOCK`] (appends are not held up).
pub(crate) async fn pg_write(
    conn: &mut sqlx::PgConnection,
    checkpoint: &Checkpoint,
    now_us: i64,
) -> sqlx::Result<()> {
    use sqlx::Connection as _;
    let pg = |sql: &str| super::dialect::Dialect::Postgres.sql(sql).into_owned();
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_CHECKPOINT_LOCK)
        .execute(&mut *tx)
        .await?;
    let touched: Vec<String> = checkpoint
        .snapshots
        .iter()
        .chain(&checkpoint.deleted)
        .map(|s| s.stream_id.clone())
        .collect();
    let before = pg_in_use(&mut tx, &touched).await?;
    let upsert = pg(UPSERT);
    for s in &checkpoint.snapshots {
        sqlx::query(sqlx::AssertSqlSafe(upsert.clone()))
            .bind(&s.stream_id)
            .bind(&s.strategy)
            .bind(&s.key)
            .bind(s.stream_version as i64)
            .bind(&s.state)
            .bind(now_us)
            .bind(i32::from(s.at_rest))
            .execute(&mut *tx)
            .await?;
    }
    for s in &checkpoint.deleted {
        // Archived events: the snapshot is all that can rebuild the state. Kept, at rest.
        let archived: Option<i64> =
            sqlx::query_scalar("SELECT version FROM archived_streams WHERE stream_id = $1")
                .bind(&s.stream_id)
                .fetch_optional(&mut *tx)
                .await?;
        if archived.is_some() {
            sqlx::query(sqlx::AssertSqlSafe(upsert.clone()))
                .bind(&s.stream_id)
                .bind(&s.strategy)
                .bind(&s.key)
                .bind(s.stream_version as i64)
                .bind(&s.state)
                .bind(now_us)
                .bind(1i32)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "DELETE FROM strategy_snapshots WHERE stream_id = $1 AND stream_version <= $2",
            )
            .bind(&s.stream_id)
            .bind(s.stream_version as i64)
            .execute(&mut *tx)
            .await?;
        }
    }
    for (strategy, position) in &checkpoint.positions {
        sqlx::query(
            "INSERT INTO strategy_checkpoints (strategy, position, written_at) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (strategy) DO UPDATE SET position = excluded.position, \
             written_at = excluded.written_at \
             WHERE excluded.position <> strategy_checkpoints.position",
        )
        .bind(strategy)
        .bind(position)
        .bind(now_us)
        .execute(&mut *tx)
        .await?;
    }
    // (as in `write`: the count moves by this checkpoint's own writes)
    let after = pg_in_use(&mut tx, &touched).await?;
    let mut strategies: Vec<&String> = before.keys().chain(after.keys()).collect();
    strategies.sort();
    strategies.dedup();
    for strategy in strategies {
        let delta = after.get(strategy).unwrap_or(&0) - before.get(strategy).unwrap_or(&0);
        if delta != 0 {
            sqlx::query(
                "UPDATE strategy_checkpoints SET snapshots = GREATEST(0, snapshots + $1) \
                 WHERE strategy = $2 AND snapshots IS NOT NULL",
            )
            .bind(delta)
            .bind(strategy)
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query(
        "UPDATE strategy_checkpoints SET snapshots = (SELECT count(*) FROM strategy_snapshots s \
                 WHERE s.strategy = strategy_checkpoints.strategy AND s.at_rest = 0) \
         WHERE snapshots IS NULL OR strategy = ANY($1)",
    )
    .bind(&checkpoint.recount)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// [`drop_all`] on PostgreSQL.
pub(crate) async fn pg_drop_all(conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_CHECKPOINT_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM strategy_snapshots")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM strategy_checkpoints")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
