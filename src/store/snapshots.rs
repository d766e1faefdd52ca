//! Strategy snapshots and checkpoints: a read model that shortens restores. The store owns
//! the SQL; what a snapshot holds is the healer's business (opaque JSON text here).

use sqlx::Row as _;

use super::Store;
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
}

/// A checkpoint to write: for each strategy, the position every snapshot of it covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    pub positions: Vec<(String, i64)>,
    pub snapshots: Vec<Snapshot>,
    /// Streams whose state is back at rest and needs no snapshot: `(stream, version)`; the
    /// stored snapshot is deleted unless it is of a higher version.
    pub deleted: Vec<(String, u64)>,
}

impl Store {
    /// Every snapshot of a strategy.
    pub async fn load_snapshots(&self, strategy: &str) -> Result<Vec<Snapshot>> {
        let rows = sqlx::query(
            "SELECT stream_id, strategy, key, stream_version, state FROM strategy_snapshots \
             WHERE strategy = ?",
        )
        .bind(strategy)
        .fetch_all(self.read_pool())
        .await
        .map_err(|e| self.db_err(e))?;
        rows.iter().map(decode).collect()
    }

    /// One stream's snapshot, if stored.
    pub async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT stream_id, strategy, key, stream_version, state FROM strategy_snapshots \
             WHERE stream_id = ?",
        )
        .bind(stream_id)
        .fetch_optional(self.read_pool())
        .await
        .map_err(|e| self.db_err(e))?;
        row.as_ref().map(decode).transpose()
    }

    /// The position a strategy's snapshots cover (0 when it has none).
    pub async fn checkpoint_position(&self, strategy: &str) -> Result<i64> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT position FROM strategy_checkpoints WHERE strategy = ?")
                .bind(strategy)
                .fetch_optional(self.read_pool())
                .await
                .map_err(|e| self.db_err(e))?;
        Ok(v.unwrap_or(0))
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

fn decode(row: &sqlx::sqlite::SqliteRow) -> Result<Snapshot> {
    let version: i64 = row.try_get(3)?;
    Ok(Snapshot {
        stream_id: row.try_get(0)?,
        strategy: row.try_get(1)?,
        key: row.try_get(2)?,
        stream_version: u64::try_from(version).unwrap_or(0),
        state: row.try_get(4)?,
    })
}

pub(crate) async fn write(
    conn: &mut sqlx::SqliteConnection,
    checkpoint: &Checkpoint,
    now_us: i64,
) -> sqlx::Result<()> {
    use sqlx::Connection as _;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for s in &checkpoint.snapshots {
        sqlx::query(
            "INSERT INTO strategy_snapshots (stream_id, strategy, key, stream_version, state, \
             written_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version, \
             state = excluded.state, written_at = excluded.written_at \
             WHERE excluded.stream_version >= strategy_snapshots.stream_version",
        )
        .bind(&s.stream_id)
        .bind(&s.strategy)
        .bind(&s.key)
        .bind(s.stream_version as i64)
        .bind(&s.state)
        .bind(now_us)
        .execute(&mut *tx)
        .await?;
    }
    for (stream, version) in &checkpoint.deleted {
        sqlx::query("DELETE FROM strategy_snapshots WHERE stream_id = ? AND stream_version <= ?")
            .bind(stream)
            .bind(*version as i64)
            .execute(&mut *tx)
            .await?;
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
