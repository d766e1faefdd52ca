//! Retention: moving the oldest events out of the log into a compressed archive file.
//!
//! `archive(before, file)` cuts the longest prefix of the log (in position order) whose events
//! all occurred before `before`, and never past a strategy checkpoint (strategy state is then
//! restored from snapshots, not from archived events); every strategy state stream the cut
//! goes through must have a snapshot covering it, at rest or not (`Healer::archive` writes
//! them). In order:
//!
//! 1. The prefix is written to `file` (gzip; a header line, then one JSON line per event with
//!    its position, stream version and chain hash), checking the chain on the way, through a
//!    temporary file that is synced and then put in place under a name that must be new
//!    ([`crate::output`]: never the database's files, an existing or a non-regular file),
//!    readable by its owner only.
//! 2. One transaction then deletes the prefix, moves the chain's anchor to the last archived
//!    event, remembers the versions of streams whose newest events left (so that they continue
//!    where they were), keeps the analytics' facts of the events that leave, and appends an
//!    `events_archived` event that records the cut and its hash. A crash before the commit
//!    leaves the log as it was (run the archive again, to a new file name); after it, the file
//!    is complete.
//!
//! The analytics read models keep every row, and the cut's transaction keeps in
//! `archived_facts` what the analytics read of archived events one by one (the partial hours
//! of a window, trends, success signals, usage), so statistics for archived periods stay
//! exactly what they were; `rebuild` refuses a log with an archived prefix (it would lose
//! them). The archive file is accepted by `import` and checked by `verify --archive`.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use tokio::io::AsyncWriteExt;

use super::Store;
use super::chain::{self, Hash};
use crate::error::{Error, Result};
use crate::event::EventLine;
use crate::time::{format_time, from_micros, to_micros};

/// The first line of an archive file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveHeader {
    /// Format version (1).
    pub healstore_archive: u32,
    pub from_position: i64,
    pub to_position: i64,
    pub events: i64,
    /// The hash the first archived event chains to.
    pub anchor_hash: String,
    /// The last archived event's hash: the live log's anchor after the cut.
    pub end_hash: String,
    pub before: String,
    pub created_at: String,
}

/// What an archive did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveReport {
    pub file: String,
    pub from_position: i64,
    pub to_position: i64,
    pub events: i64,
    pub end_hash: String,
    /// The position of the `events_archived` event recording the cut.
    pub recorded_at_position: i64,
}

/// What `verify --archive` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveCheck {
    pub ok: bool,
    pub header: Option<ArchiveHeader>,
    pub events: i64,
    /// The first bad position, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub detail: String,
}

/// An archive never replaces an existing file: it may hold an earlier cut's events.
pub(crate) const EXISTING: crate::output::Existing = crate::output::Existing::Refuse {
    hint: "it may hold an earlier archive, whose events would be lost: give each archive a new \
           file name (for example one with the --before date)",
};

/// A request to the writer: the cut, checked again under the write lock.
pub(crate) struct Cut {
    pub anchor_position: i64,
    pub to_position: i64,
    pub end_hash: Hash,
    pub file: String,
    pub event: super::writer::PreparedEvent,
}

impl Store {
    /// Archives the events before `before` into `file` (see the module's documentation).
    /// `None` when there is nothing to archive.
    ///
    /// Every strategy state stream the cut goes through must have a snapshot covering it,
    /// states at rest included (a fold could not rebuild them once their events are gone):
    /// [`crate::heal::Healer::archive`] writes them first; this refuses a cut without them.
    pub async fn archive(
        &self,
        before: DateTime<Utc>,
        file: &Path,
        now: DateTime<Utc>,
    ) -> Result<Option<ArchiveReport>> {
        self.archive_up_to(before, file, now, None).await
    }

    /// The last position an archive before `before` would cut: the longest prefix of events
    /// that all occurred before it, never past a strategy checkpoint. `None`: nothing to cut.
    pub(crate) async fn archive_cut(&self, before: DateTime<Utc>) -> Result<Option<i64>> {
        let pool = self.read_pool();
        let anchor_position: i64 =
            sqlx::query_scalar("SELECT position FROM chain_anchor WHERE id = 1")
                .fetch_one(pool)
                .await?;
        let mut cut: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE((SELECT MIN(position) FROM events WHERE occurred_at >= ?) - 1, \
                             (SELECT MAX(position) FROM events))",
        )
        .bind(to_micros(before))
        .fetch_one(pool)
        .await?;
        // Never past a strategy checkpoint: archived strategy events could not be replayed.
        let checkpoint: Option<i64> =
            sqlx::query_scalar("SELECT MIN(position) FROM strategy_checkpoints")
                .fetch_one(pool)
                .await?;
        if let (Some(c), Some(p)) = (checkpoint, cut) {
            cut = Some(p.min(c));
        }
        Ok(cut.filter(|p| *p > anchor_position))
    }

    /// [`Store::archive`], cutting at most up to `limit`.
    pub(crate) async fn archive_up_to(
        &self,
        before: DateTime<Utc>,
        file: &Path,
        now: DateTime<Utc>,
        limit: Option<i64>,
    ) -> Result<Option<ArchiveReport>> {
        // The file is checked before anything else: never the database, an existing file or
        // a non-regular one.
        crate::output::check(file, self.path(), EXISTING)?;
        let pool = self.read_pool();
        let (anchor_position, anchor_hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT position, hash FROM chain_anchor WHERE id = 1")
                .fetch_one(pool)
                .await?;
        let anchor = chain::from_blob(&anchor_hash).ok_or_else(|| Error::Corrupt {
            path: self.path().to_path_buf(),
            reason: "the chain anchor is not a 32-byte hash".into(),
        })?;
        let mut cut = self.archive_cut(before).await?;
        if let (Some(l), Some(p)) = (limit, cut) {
            cut = Some(p.min(l));
        }
        if let Some(p) = cut {
            // And every strategy with events in the prefix must have a checkpoint at all,
            let uncovered: Option<String> = sqlx::query_scalar(
                "SELECT COALESCE(strategy, stream_id) FROM events \
                 WHERE stream_id >= 'strategy-' AND stream_id < 'strategy.' AND position <= ? \
                   AND (strategy IS NULL \
                        OR strategy NOT IN (SELECT strategy FROM strategy_checkpoints)) \
                 LIMIT 1",
            )
            .bind(p)
            .fetch_optional(pool)
            .await?;
            if let Some(s) = uncovered {
                return Err(Error::InvalidInput(format!(
                    "strategy {s} has no snapshot yet: checkpoint the healer before archiving \
                     (the command line does)"
                )));
            }
            // and every state stream in it a snapshot that covers it.
            let stream: Option<(Option<String>, String, i64)> =
                sqlx::query_as(AssertSqlSafe(super::snapshots::uncovered_sql("")))
                    .bind(p)
                    .bind(1i64)
                    .fetch_optional(pool)
                    .await?;
            if let Some((_, stream, version)) = stream {
                return Err(Error::InvalidInput(format!(
                    "the state of {stream} (version {version}) has no snapshot covering it: a \
                     state's snapshot must be stored before its events are archived; archive \
                     through a healer (Healer::archive; the command line does), which writes \
                     them"
                )));
            }
        }
        let Some(to_position) = cut.filter(|p| *p > anchor_position) else {
            return Ok(None);
        };

        let (end_hash, events) = write_file(
            self,
            file,
            anchor_position,
            anchor,
            to_position,
            before,
            now,
        )
        .await?;

        // Every earlier cut is carried forward, so that the log names each one even after a
        // later archive swept up the events_archived record that first recorded it.
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT payload FROM events WHERE event_type = 'events_archived' \
             ORDER BY position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        let mut earlier_cuts = Vec::new();
        if let Some(p) = previous.and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok()) {
            if let Some(list) = p.get("earlier_cuts").and_then(|l| l.as_array()) {
                earlier_cuts.extend(list.iter().cloned());
            }
            let mut own = serde_json::Map::new();
            for k in ["from_position", "to_position", "end_hash", "before"] {
                if let Some(v) = p.get(k) {
                    own.insert(k.into(), v.clone());
                }
            }
            earlier_cuts.push(serde_json::Value::Object(own));
        }
        let payload = serde_json::json!({
            "from_position": anchor_position + 1,
            "to_position": to_position,
            "events": events,
            "end_hash": chain::hex(&end_hash),
            "file": file.display().to_string(),
            "before": format_time(before),
            "earlier_cuts": earlier_cuts,
        });
        let event = crate::event::NewEvent::new("events_archived", now, payload);
        let cut = Box::new(Cut {
            anchor_position,
            to_position,
            end_hash,
            file: file.display().to_string(),
            event: super::writer::PreparedEvent::new(event),
        });
        let recorded_at_position = self
            .ask(|reply| super::writer::Request::Archive(cut, reply))
            .await?;
        Ok(Some(ArchiveReport {
            file: file.display().to_string(),
            from_position: anchor_position + 1,
            to_position,
            events,
            end_hash: chain::hex(&end_hash),
            recorded_at_position,
        }))
    }
}

/// Which cuts of this log are recorded: the `events_archived` records in the log, each with
/// the earlier cuts it carries. SQL with one parameter, an end hash (hexadecimal); it yields
/// the position of a record naming that cut.
pub(crate) const RECORDED_CUT: &str = "\
SELECT e.position FROM events e WHERE e.event_type = 'events_archived' \
  AND (e.payload ->> '$.end_hash' = ?1 \
       OR EXISTS (SELECT 1 FROM json_each(e.payload, '$.earlier_cuts') c \
                  WHERE c.value ->> '$.end_hash' = ?1)) \
ORDER BY e.position LIMIT 1";

impl Store {
    /// The position of the `events_archived` record that names the cut ending with `end_hash`
    /// (hexadecimal), directly or among the earlier cuts it carries.
    pub async fn recorded_cut(&self, end_hash: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(RECORDED_CUT)
            .bind(end_hash)
            .fetch_optional(self.read_pool())
            .await?)
    }

    /// Refuses to import an archive back into the log it was cut from: its events would be
    /// stored twice (counted twice by the analytics, and strategy state moved back). Into any
    /// other database, a new one in particular, the archive imports.
    pub async fn check_archive_import(&self, header: &ArchiveHeader) -> Result<()> {
        let (anchor_position, anchor_hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT position, hash FROM chain_anchor WHERE id = 1")
                .fetch_one(self.read_pool())
                .await?;
        if anchor_position < header.to_position {
            return Ok(());
        }
        let is_anchor =
            anchor_position == header.to_position && chain::hex(&anchor_hash) == header.end_hash;
        let recorded = if is_anchor {
            true
        } else {
            self.recorded_cut(&header.end_hash).await?.is_some()
        };
        if recorded {
            return Err(Error::InvalidInput(format!(
                "this archive (positions {} to {}) was cut from this database's log: importing \
                 it back would store its events twice; to restore, import the archives and the \
                 log's export into a new database",
                header.from_position, header.to_position
            )));
        }
        Ok(())
    }
}

/// Writes `(anchor, to]` to `file` through a temporary file; the last hash and the count.
async fn write_file(
    store: &Store,
    file: &Path,
    anchor_position: i64,
    anchor: Hash,
    to_position: i64,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(Hash, i64)> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::from_io(format_args!("cannot {what} {}", p.display()), &e)
    };
    let end: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM events WHERE position = ?")
        .bind(to_position)
        .fetch_optional(store.read_pool())
        .await?
        .flatten();
    let end_hash = end.as_deref().and_then(chain::from_blob).ok_or_else(|| {
        Error::InvalidInput(format!(
            "event {to_position} has no chain hash: run `healstore verify` before archiving"
        ))
    })?;
    let mut out = crate::output::OutputFile::create(file, store.path(), EXISTING, 0o600)?;
    let tmp = out.target().to_path_buf();
    let f = out
        .file()
        .try_clone()
        .map(tokio::fs::File::from_std)
        .map_err(|e| io("write", &tmp, e))?;
    let mut gz = async_compression::tokio::write::GzipEncoder::new(tokio::io::BufWriter::new(f));
    let header = ArchiveHeader {
        healstore_archive: 1,
        from_position: anchor_position + 1,
        to_position,
        events: to_position - anchor_position,
        anchor_hash: chain::hex(&anchor),
        end_hash: chain::hex(&end_hash),
        before: format_time(before),
        created_at: format_time(now),
    };
    let mut text = serde_json::to_string(&header)
        .map_err(|e| Error::InvalidInput(format!("cannot write the archive header: {e}")))?;
    text.push('\n');
    gz.write_all(text.as_bytes())
        .await
        .map_err(|e| io("write", &tmp, e))?;
    let mut prev = anchor;
    let mut expected = anchor_position + 1;
    let mut after = anchor_position;
    while after < to_position {
        let rows: Vec<chain::StoredEvent> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             occurred_at, recorded_at, payload, hash FROM events \
             WHERE position > ? AND position <= ? ORDER BY position LIMIT 5000",
        )
        .bind(after)
        .bind(to_position)
        .fetch_all(store.read_pool())
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut chunk = String::new();
        for r in &rows {
            let link = chain::link(&prev, &r.content());
            if r.position != expected || r.stored_hash() != Some(link) {
                return Err(Error::InvalidInput(format!(
                    "the log fails verification at position {expected}: run `healstore verify`; nothing was archived"
                )));
            }
            let line = EventLine {
                position: Some(r.position),
                event_id: Some(r.event_id.clone()),
                stream_id: r.stream_id.clone(),
                stream_version: Some(r.stream_version as u64),
                event_type: r.event_type.clone(),
                schema_version: r.schema_version as u32,
                occurred_at: from_micros(r.occurred_at)?,
                recorded_at: Some(from_micros(r.recorded_at)?),
                payload: serde_json::from_str(&r.payload).map_err(|e| {
                    Error::InvalidEvent(format!(
                        "the payload of event {} does not parse: {e}",
                        r.position
                    ))
                })?,
                hash: Some(chain::hex(&link)),
            };
            chunk.push_str(&line.to_json());
            chunk.push('\n');
            prev = link;
            expected += 1;
            after = r.position;
        }
        gz.write_all(chunk.as_bytes())
            .await
            .map_err(|e| io("write", &tmp, e))?;
    }
    if expected != to_position + 1 || prev != end_hash {
        return Err(Error::Conflict(format!(
            "the log changed while archiving (expected position {expected}); nothing was archived"
        )));
    }
    gz.shutdown().await.map_err(|e| io("write", &tmp, e))?;
    drop(gz);
    // Synced, then linked into place only if the name is still free.
    out.commit()?;
    Ok((end_hash, to_position - anchor_position))
}

/// Lines of an archive or of plain JSON Lines, read with bounded memory.
pub type Lines = crate::input::LineReader<crate::input::Input>;

/// The archive's lines after its header, decompressed, for `verify --archive`.
pub async fn read_archive(file: &Path) -> Result<(ArchiveHeader, Lines)> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Error::from_io(format_args!("cannot read {}", file.display()), &e))?;
    match open_input(f, &file.display().to_string()).await? {
        (Some(header), lines) => Ok((header, lines)),
        (None, _) => Err(Error::InvalidInput(format!(
            "{} is not a healstore archive (not gzip)",
            file.display()
        ))),
    }
}

/// Opens events for reading from any stream (a file, a pipe, a FIFO, standard input): an
/// archive (gzip, told by its first two bytes, read without seeking) with its header, or plain
/// JSON Lines. `name` names the input in errors.
pub async fn open_input<R>(reader: R, name: &str) -> Result<(Option<ArchiveHeader>, Lines)>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (gzip, input) = crate::input::sniff(reader)
        .await
        .map_err(|e| Error::from_io(format_args!("cannot read {name}"), &e))?;
    let mut lines = crate::input::LineReader::new(input);
    if !gzip {
        return Ok((None, lines));
    }
    let first = lines
        .next_line()
        .await
        .map_err(|e| {
            Error::InvalidInput(format!(
                "{name} is not a healstore archive: its header line: {e}"
            ))
        })?
        .ok_or_else(|| Error::InvalidInput(format!("{name} is an empty archive")))?;
    let header: ArchiveHeader = serde_json::from_str(&first)
        .map_err(|e| Error::InvalidInput(format!("{name} has no archive header: {e}")))?;
    Ok((Some(header), lines))
}

/// Checks an archive file on its own: its chain from the header's anchor, its positions, and
/// its end hash. `recorded` says whether the database records a cut with that end hash.
pub async fn verify_archive(file: &Path) -> Result<ArchiveCheck> {
    let (header, mut lines) = read_archive(file).await?;
    let bad = |header: &ArchiveHeader, events, position, detail: String| ArchiveCheck {
        ok: false,
        header: Some(header.clone()),
        events,
        position,
        detail,
    };
    let Some(mut prev) = chain::from_hex(&header.anchor_hash) else {
        return Ok(bad(
            &header,
            0,
            None,
            "the header's anchor hash is malformed".into(),
        ));
    };
    let mut expected = header.from_position;
    let mut n = 0i64;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                return Ok(bad(
                    &header,
                    n,
                    Some(expected),
                    format!("the file is damaged: {e}"),
                ));
            }
        };
        let Ok(e) = EventLine::parse(&line) else {
            return Ok(bad(
                &header,
                n,
                Some(expected),
                "a line does not parse".into(),
            ));
        };
        let position = e.position.unwrap_or(-1);
        if position != expected {
            return Ok(bad(
                &header,
                n,
                Some(expected),
                format!("position {expected} is missing (found {position})"),
            ));
        }
        let payload = e.payload.to_string();
        let link = chain::link(
            &prev,
            &chain::Content {
                position,
                event_id: e.event_id.as_deref().unwrap_or(""),
                stream_id: &e.stream_id,
                stream_version: e.stream_version.unwrap_or(0) as i64,
                event_type: &e.event_type,
                schema_version: i64::from(e.schema_version),
                occurred_at: to_micros(e.occurred_at),
                recorded_at: e.recorded_at.map(to_micros).unwrap_or(0),
                payload: &payload,
            },
        );
        if e.hash.as_deref().and_then(chain::from_hex) != Some(link) {
            return Ok(bad(
                &header,
                n,
                Some(position),
                format!("event {position} does not match its hash: the archive was altered"),
            ));
        }
        prev = link;
        expected += 1;
        n += 1;
    }
    if expected != header.to_position + 1 {
        return Ok(bad(
            &header,
            n,
            Some(expected),
            format!(
                "the archive ends at position {} but its header says {}",
                expected - 1,
                header.to_position
            ),
        ));
    }
    if chain::hex(&prev) != header.end_hash {
        return Ok(bad(
            &header,
            n,
            Some(header.to_position),
            "the chain's end does not match the header's end hash".into(),
        ));
    }
    Ok(ArchiveCheck {
        ok: true,
        header: Some(header),
        events: n,
        position: None,
        detail: format!("{n} events chained; the end hash matches"),
    })
}

/// Checks an archive's target file before anything is done (see [`crate::output`]): never the
/// database `database` or one of its files, an existing file or a non-regular one.
pub fn check_target(file: &Path, database: &Path) -> Result<()> {
    crate::output::check(file, database, EXISTING)
}
