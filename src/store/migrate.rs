//! Schema migrations: refinery's migration runner over the store's own sqlx connection.
//!
//! refinery has no sqlx driver, so this module adapts refinery-core's async traits to a sqlx
//! SQLite connection. All migrations run inside one `BEGIN IMMEDIATE` transaction: it is the
//! cross-process guard refinery lacks (two processes opening a new file at once serialise on
//! the write lock, and the second sees the first one's work when it re-checks), and it makes
//! the whole upgrade atomic (SQLite's DDL is transactional).

use std::path::Path;

use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use refinery_core::{Migration, Runner};
use sqlx::{Arguments as _, AssertSqlSafe, Connection, Row, SqliteConnection};

use crate::error::{Error, Result};

/// The migrations, in order. A test checks this list against the files in `migrations/`.
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[
    (
        "V1__event_log",
        include_str!("../../migrations/V1__event_log.sql"),
    ),
    (
        "V2__strategy_snapshots",
        include_str!("../../migrations/V2__strategy_snapshots.sql"),
    ),
    (
        "V3__read_models",
        include_str!("../../migrations/V3__read_models.sql"),
    ),
    (
        "V4__hash_chain",
        include_str!("../../migrations/V4__hash_chain.sql"),
    ),
    (
        "V5__circuit_transitions",
        include_str!("../../migrations/V5__circuit_transitions.sql"),
    ),
    (
        "V6__read_models_known_versions",
        include_str!("../../migrations/V6__read_models_known_versions.sql"),
    ),
    (
        "V7__saturating_recovery_sums",
        include_str!("../../migrations/V7__saturating_recovery_sums.sql"),
    ),
    (
        "V8__archived_facts",
        include_str!("../../migrations/V8__archived_facts.sql"),
    ),
    (
        "V9__snapshots_at_rest",
        include_str!("../../migrations/V9__snapshots_at_rest.sql"),
    ),
    (
        "V10__remediation_recovery_and_circuit_deadlines",
        include_str!("../../migrations/V10__remediation_recovery_and_circuit_deadlines.sql"),
    ),
    (
        "V11__drop_events_by_failure_type",
        include_str!("../../migrations/V11__drop_events_by_failure_type.sql"),
    ),
    (
        "V12__minute_and_histogram_rollups",
        include_str!("../../migrations/V12__minute_and_histogram_rollups.sql"),
    ),
    (
        "V13__second_rollups_and_stored_buckets",
        include_str!("../../migrations/V13__second_rollups_and_stored_buckets.sql"),
    ),
    (
        "V14__prevention_read_model",
        include_str!("../../migrations/V14__prevention_read_model.sql"),
    ),
];

/// The first schema version with the hash chain: events stored before it get their hashes
/// computed in the migration's transaction.
const HASH_CHAIN_VERSION: i64 = 4;

/// The first schema version with the analytics read models: a database upgraded across it
/// gets them built from its existing events in the same transaction.
const READ_MODELS_VERSION: i64 = 3;

/// The first schema version whose read models interpret only schema version 1 of each event
/// type: a database upgraded across it that holds events of other versions gets its read
/// models rebuilt (unless events were archived: the read models keep the archived periods).
const KNOWN_VERSIONS_ONLY: i64 = 6;

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// refinery's own table name (kept so that refinery's tooling recognises the history).
pub(super) const HISTORY_TABLE: &str = "refinery_schema_history";

/// `PRAGMA application_id` of a healstore file ('HLST').
pub(crate) const APPLICATION_ID: i64 = 0x484C_5354;

/// Refuses, without writing anything, a file that is some other application's database or
/// whose schema is newer than this binary; and, unless `create`, an SQLite file that holds
/// nothing yet (a command that only reads never makes a file a healstore database).
pub(crate) async fn refuse_foreign(
    conn: &mut SqliteConnection,
    path: &Path,
    create: bool,
) -> Result<()> {
    match inspect(conn, path).await? {
        Found::Newer(found) => Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        }),
        Found::Empty if !create => Err(Error::not_healstore(
            path,
            "it is an SQLite database that holds nothing (`healstore init` makes it one)",
        )),
        _ => Ok(()),
    }
}

/// Brings the database at `conn` to [`SCHEMA_VERSION`], or refuses it.
pub(crate) async fn migrate(conn: &mut SqliteConnection, path: &Path) -> Result<()> {
    for m in apply(conn, path).await? {
        tracing::info!(migration = %m, "applied migration");
    }
    Ok(())
}

/// One object of a database's schema, as `sqlite_schema` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaObject {
    /// `table`, `index`, `trigger` or `view`.
    pub kind: String,
    pub name: String,
    /// The table an index or trigger belongs to (the object itself for tables and views).
    pub table: String,
    /// The statement that created it, as SQLite keeps it.
    pub sql: Option<String>,
}

/// The schema objects of the database at `conn`, SQLite's own `sqlite_*` objects aside, in
/// type and name order.
pub(crate) async fn schema_objects(conn: &mut SqliteConnection) -> sqlx::Result<Vec<SchemaObject>> {
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema \
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, name, table, sql)| SchemaObject {
            kind,
            name,
            table,
            sql,
        })
        .collect())
}

/// The schema this binary's migrations give a new database: a database migrated in memory
/// with the same embedded migrations, as `verify` compares a file's schema with it.
pub(crate) async fn reference_schema() -> Result<Vec<SchemaObject>> {
    use sqlx::ConnectOptions as _;
    let path = Path::new(":memory:");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .in_memory(true)
        .log_statements(tracing::log::LevelFilter::Trace)
        .connect()
        .await
        .map_err(|e| Error::from_db(e, path))?;
    apply(&mut conn, path).await?;
    let objects = schema_objects(&mut conn)
        .await
        .map_err(|e| Error::from_db(e, path))?;
    conn.close().await.map_err(|e| Error::from_db(e, path))?;
    Ok(objects)
}

/// [`migrate`]'s work: the names of the migrations it applied.
async fn apply(conn: &mut SqliteConnection, path: &Path) -> Result<Vec<String>> {
    // Fast path without the write lock: an up-to-date database is opened without writing.
    match inspect(conn, path).await? {
        Found::Current => return Ok(Vec::new()),
        Found::Newer(found) => {
            return Err(Error::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Found::Older | Found::Empty => {}
    }

    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| Error::from_db(e, path))?;
    // Re-check under the lock: another process may have migrated in the meantime.
    match inspect(&mut tx, path).await? {
        Found::Current => return Ok(Vec::new()),
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
    let mut adapter = InTransaction(&mut tx);
    let report = runner
        .run_async(&mut adapter)
        .await
        .map_err(|e| Error::Migration(e.to_string()))?;
    let applied = |v: i64| {
        report
            .applied_migrations()
            .iter()
            .any(|m| i64::from(m.version()) == v)
    };
    let rebuild = applied(READ_MODELS_VERSION)
        || (applied(KNOWN_VERSIONS_ONLY)
            && read_models_saw_other_versions(&mut tx)
                .await
                .map_err(|e| Error::from_db(e, path))?);
    if rebuild {
        crate::analytics::rebuild_read_models(&mut tx)
            .await
            .map_err(|e| Error::from_db(e, path))?;
    }
    if report
        .applied_migrations()
        .iter()
        .any(|m| i64::from(m.version()) == HASH_CHAIN_VERSION)
    {
        backfill_chain(&mut tx)
            .await
            .map_err(|e| Error::from_db(e, path))?;
    }
    tx.commit().await.map_err(|e| Error::from_db(e, path))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// True when the log (never archived) holds an event of a type the read models interpret in a
/// schema version other than 1: the triggers before [`KNOWN_VERSIONS_ONLY`] interpreted it.
async fn read_models_saw_other_versions(conn: &mut SqliteConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT (SELECT position FROM chain_anchor WHERE id = 1) = 0 AND EXISTS (SELECT 1 \
         FROM events WHERE event_type IN ('failure_detected', 'healing_attempted', \
         'healing_completed', 'failure_resolved', 'pattern_learned', 'prediction_made', \
         'circuit_transitioned') AND schema_version <> 1)",
    )
    .fetch_one(&mut *conn)
    .await
}

/// The append-only trigger on UPDATE, as `migrations/V1__event_log.sql` creates it.
pub(crate) const REFUSE_UPDATE_TRIGGER: &str =
    "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; UPDATE refused');
END";

/// The append-only trigger on DELETE, as `migrations/V1__event_log.sql` creates it.
pub(crate) const REFUSE_DELETE_TRIGGER: &str =
    "CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; DELETE refused');
END";

/// Computes the hash chain over events stored before it existed, in position order. The
/// append-only trigger is lifted for exactly this, inside the migration's transaction.
async fn backfill_chain(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    use super::chain;
    let any: Option<i64> = sqlx::query_scalar("SELECT position FROM events LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    if any.is_none() {
        return Ok(());
    }
    sqlx::query("DROP TRIGGER events_refuse_update")
        .execute(&mut *conn)
        .await?;
    let mut prev = chain::GENESIS;
    let mut after = 0i64;
    loop {
        let rows: Vec<chain::StoredEvent> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, \
                 schema_version, occurred_at, recorded_at, payload, hash FROM events \
                 WHERE position > ? ORDER BY position LIMIT 10000",
        )
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.position;
        // Written 500 rows per statement: one UPDATE per row made upgrades of large logs slow.
        for chunk in rows.chunks(500) {
            let mut args = sqlx::sqlite::SqliteArguments::default();
            for r in chunk {
                prev = chain::link(&prev, &r.content());
                args.add(r.position).map_err(sqlx::Error::Encode)?;
                args.add(prev.to_vec()).map_err(sqlx::Error::Encode)?;
            }
            let values = vec!["(?, ?)"; chunk.len()].join(",");
            sqlx::query_with(
                AssertSqlSafe(format!(
                    "UPDATE events SET hash = v.column2 FROM (VALUES {values}) AS v \
                     WHERE events.position = v.column1"
                )),
                args,
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    sqlx::query(REFUSE_UPDATE_TRIGGER)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

enum Found {
    Empty,
    Older,
    Current,
    Newer(i64),
}

/// What the file holds. Only a file with no schema object at all, no application id but
/// healstore's and no user version is taken for an empty one (SQLite's own `sqlite_*`
/// objects aside); anything else must be healstore's own: its application id and its schema
/// history. A file holding only a view, or marked by another application, is refused.
async fn inspect(conn: &mut SqliteConnection, path: &Path) -> Result<Found> {
    let db = |e| Error::from_db(e, path);
    let objects: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         ORDER BY type = 'table' DESC, name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let app_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    let user_version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(Error::foreign(
            path,
            format_args!("its application id {app_id:#010x} is another application's"),
        ));
    }
    if user_version != 0 {
        return Err(Error::foreign(
            path,
            format_args!("it carries user version {user_version}, which healstore never sets"),
        ));
    }
    if objects.is_empty() {
        return Ok(Found::Empty);
    }
    if app_id != APPLICATION_ID || !objects.iter().any(|(_, n)| n == HISTORY_TABLE) {
        let (kind, name) = &objects[0];
        let more = match objects.len() - 1 {
            0 => String::new(),
            n => format!(" and {n} more object(s)"),
        };
        return Err(Error::foreign(
            path,
            format_args!("it holds {kind} {name:?}{more}, and no healstore schema"),
        ));
    }
    let version: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT MAX(version) FROM {HISTORY_TABLE}"
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

/// A connection that is already inside the migration transaction. refinery's drivers open a
/// transaction per call; this one runs everything in the caller's. The same adapter serves
/// both backends (see [`refinery_adapter`]).
pub(super) struct InTransaction<'a, 'c, DB: sqlx::Database>(pub &'a mut sqlx::Transaction<'c, DB>);

/// Implements refinery-core's async traits for [`InTransaction`] over one sqlx driver; refinery
/// keeps `version` as an INT4 on PostgreSQL and an INTEGER (64 bits) on SQLite.
macro_rules! refinery_adapter {
    ($db:ty, $version:ty) => {
        impl AsyncTransaction for InTransaction<'_, '_, $db> {
            type Error = sqlx::Error;

            async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
                &'a mut self,
                queries: T,
            ) -> std::result::Result<usize, Self::Error> {
                let mut count = 0;
                for q in queries {
                    // Migration files are trusted text shipped inside the binary.
                    sqlx::raw_sql(AssertSqlSafe(q.to_owned()))
                        .execute(&mut **self.0)
                        .await?;
                    count += 1;
                }
                Ok(count)
            }
        }

        impl AsyncQuery<Vec<Migration>> for InTransaction<'_, '_, $db> {
            async fn query<'a>(
                &'a mut self,
                query: &'a str,
            ) -> std::result::Result<Vec<Migration>, Self::Error> {
                let rows = sqlx::query(AssertSqlSafe(query.to_owned()))
                    .fetch_all(&mut **self.0)
                    .await?;
                let mut applied = Vec::with_capacity(rows.len());
                for row in rows {
                    let version: $version = row.try_get(0)?;
                    let name: String = row.try_get(1)?;
                    let applied_on: String = row.try_get(2)?;
                    let checksum: String = row.try_get(3)?;
                    let bad = |what: &str| {
                        sqlx::Error::Decode(format!("{HISTORY_TABLE}: bad {what}").into())
                    };
                    let applied_on = time::OffsetDateTime::parse(
                        &applied_on,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|_| bad("applied_on"))?;
                    let checksum = checksum.parse::<u64>().map_err(|_| bad("checksum"))?;
                    let version = i32::try_from(version).map_err(|_| bad("version"))?;
                    applied.push(Migration::applied(version, name, applied_on, checksum));
                }
                Ok(applied)
            }
        }

        impl AsyncMigrate for InTransaction<'_, '_, $db> {}
    };
}

refinery_adapter!(sqlx::Sqlite, i64);
refinery_adapter!(sqlx::Postgres, i32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
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
