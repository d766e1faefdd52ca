//! Reading the log: paged scans by stream, by position and by time, and live tails.
//!
//! Every scan is keyset-paged (`WHERE key > last ORDER BY key LIMIT page`): each page is its
//! own short read transaction, so a long scan neither holds memory nor blocks WAL checkpoints.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};
use sqlx::Row;

use super::Store;
use super::dialect::{Dialect, Param};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::time::{from_micros, to_micros};

/// Which events to read. All conditions must hold.
///
/// Order: a scan with a `stream_id` comes in stream order; a scan with `since` or `until` (and
/// no stream) comes in time order (`occurred_at`, ties by position), which lets it use the time
/// indexes; anything else, and every live tail, comes in position (commit) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub stream_id: Option<String>,
    /// Streams whose id starts with this.
    pub stream_prefix: Option<String>,
    /// Events whose payload names this agent (`agent_id`).
    pub agent_id: Option<String>,
    /// Any of these types (all types when empty).
    pub event_types: Vec<String>,
    /// `occurred_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `occurred_at < until`.
    pub until: Option<DateTime<Utc>>,
    /// `position > after_position` (catch-up from a position; 0 reads from the start).
    pub after_position: i64,
    /// `position <= up_to_position`.
    pub up_to_position: Option<i64>,
    /// At most this many events.
    pub limit: Option<u64>,
    /// Always read in position (commit) order, even with a time range: what an export needs,
    /// so that each stream's events come back in their order.
    pub position_order: bool,
}

impl EventFilter {
    pub fn stream(stream_id: impl Into<String>) -> Self {
        EventFilter {
            stream_id: Some(stream_id.into()),
            ..Default::default()
        }
    }

    pub fn after(position: i64) -> Self {
        EventFilter {
            after_position: position,
            ..Default::default()
        }
    }

    pub fn time_range(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        EventFilter {
            since,
            until,
            ..Default::default()
        }
    }

    pub fn with_types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, types: I) -> Self {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }
}

/// A lazily paged sequence of events.
pub type EventStream = BoxStream<'static, Result<RecordedEvent>>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Position,
    Stream,
    Time,
}

#[derive(Debug, Clone, Copy)]
enum Cursor {
    Position(i64),
    Stream(i64),
    Time(i64, i64),
}

struct Scan {
    store: Store,
    filter: EventFilter,
    order: Order,
    cursor: Cursor,
    follow: bool,
    buffer: VecDeque<RecordedEvent>,
    delivered: u64,
    finished: bool,
    head: tokio::sync::watch::Receiver<i64>,
}

pub(crate) fn stream(store: Store, filter: EventFilter, follow: bool) -> EventStream {
    scan(store, filter, follow, 0)
}

/// One stream's events after `after_version`, in version order.
pub(crate) fn stream_after(store: Store, stream_id: &str, after_version: u64) -> EventStream {
    scan(
        store,
        EventFilter::stream(stream_id),
        false,
        i64::try_from(after_version).unwrap_or(i64::MAX),
    )
}

fn scan(store: Store, filter: EventFilter, follow: bool, after_version: i64) -> EventStream {
    let order = if follow || filter.position_order {
        Order::Position
    } else if filter.stream_id.is_some() {
        Order::Stream
    } else if filter.since.is_some() || filter.until.is_some() {
        Order::Time
    } else {
        Order::Position
    };
    let cursor = match order {
        Order::Position => Cursor::Position(filter.after_position),
        Order::Stream => Cursor::Stream(after_version),
        Order::Time => Cursor::Time(i64::MIN, i64::MIN),
    };
    let head = store.inner.head.clone();
    let scan = Scan {
        store,
        filter,
        order,
        cursor,
        follow,
        buffer: VecDeque::new(),
        delivered: 0,
        finished: false,
        head,
    };
    futures_util::stream::unfold(scan, |mut scan| async move {
        loop {
            if scan.filter.limit.is_some_and(|l| scan.delivered >= l) {
                return None;
            }
            if let Some(e) = scan.buffer.pop_front() {
                scan.delivered += 1;
                return Some((Ok(e), scan));
            }
            if scan.finished {
                return None;
            }
            match scan.next_page().await {
                Err(e) => {
                    scan.finished = true;
                    return Some((Err(e), scan));
                }
                Ok(full) => {
                    if full {
                        continue;
                    }
                    let past_end = matches!(
                        (scan.filter.up_to_position, scan.cursor),
                        (Some(end), Cursor::Position(p)) if p >= end
                    );
                    if !scan.follow || past_end {
                        scan.finished = true;
                    } else if scan.buffer.is_empty() {
                        scan.wait_for_more().await;
                    }
                }
            }
        }
    })
    .boxed()
}

impl Scan {
    /// Fetches the next page into the buffer; true when the page was full (more may follow).
    async fn next_page(&mut self) -> Result<bool> {
        let page = self.store.inner.options.page_size.max(1);
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
        let mut args = Params::default();
        let f = &self.filter;
        let enc = |e: std::convert::Infallible| -> Error { match e {} };
        if let Some(s) = &f.stream_id {
            sql.push_str(" AND stream_id = ?");
            args.add(s.as_str()).map_err(enc)?;
        }
        if let Some(prefix) = &f.stream_prefix {
            // A range on the (stream_id, stream_version) index rather than LIKE, whose
            // case-folding and wildcards would get in the way.
            // The unary `+` keeps SQLite from scanning the stream index for this range: prefix
            // reads are catch-ups in position order, whose tail is short.
            // (PostgreSQL has no unary `+` on text; its planner weighs the ranges itself.)
            sql.push_str(match self.store.inner.readers.dialect() {
                Dialect::Sqlite => " AND +stream_id >= ? AND +stream_id < ?",
                Dialect::Postgres => " AND stream_id >= ? AND stream_id < ?",
            });
            args.add(prefix.as_str()).map_err(enc)?;
            args.add(prefix_end(prefix)).map_err(enc)?;
        }
        if let Some(a) = &f.agent_id {
            sql.push_str(" AND agent_id = ?");
            args.add(a.as_str()).map_err(enc)?;
        }
        if !f.event_types.is_empty() {
            sql.push_str(" AND event_type IN (");
            for (i, t) in f.event_types.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
                args.add(t.as_str()).map_err(enc)?;
            }
            sql.push(')');
        }
        if let Some(t) = f.since {
            sql.push_str(" AND occurred_at >= ?");
            args.add(to_micros(t)).map_err(enc)?;
        }
        if let Some(t) = f.until {
            sql.push_str(" AND occurred_at < ?");
            args.add(to_micros(t)).map_err(enc)?;
        }
        if f.after_position > 0 && self.order != Order::Position {
            sql.push_str(" AND position > ?");
            args.add(f.after_position).map_err(enc)?;
        }
        if let Some(end) = f.up_to_position {
            sql.push_str(" AND position <= ?");
            args.add(end).map_err(enc)?;
        }
        match self.cursor {
            Cursor::Position(p) => {
                sql.push_str(" AND position > ? ORDER BY position");
                args.add(p).map_err(enc)?;
            }
            Cursor::Stream(v) => {
                sql.push_str(" AND stream_version > ? ORDER BY stream_version");
                args.add(v).map_err(enc)?;
            }
            Cursor::Time(t, p) => {
                sql.push_str(
                    " AND (occurred_at, position) > (?, ?) ORDER BY occurred_at, position",
                );
                args.add(t).map_err(enc)?;
                args.add(p).map_err(enc)?;
            }
        }
        sql.push_str(" LIMIT ?");
        args.add(page as i64).map_err(enc)?;

        let rows = (self.store.inner.readers)
            .events(&sql, &args.0, &self.store.inner.path)
            .await?;
        let full = rows.len() as u32 == page;
        for e in rows {
            self.cursor = match self.cursor {
                Cursor::Position(_) => Cursor::Position(e.position),
                Cursor::Stream(_) => Cursor::Stream(e.stream_version as i64),
                Cursor::Time(..) => Cursor::Time(to_micros(e.occurred_at), e.position),
            };
            self.buffer.push_back(e);
        }
        Ok(full)
    }

    /// Waits until this process commits something new, or the poll interval passes (another
    /// process may have appended).
    async fn wait_for_more(&mut self) {
        let poll: Duration = self.store.inner.options.poll_interval;
        tokio::select! {
            changed = self.head.changed() => {
                if changed.is_err() {
                    // The writer is gone (store closed): fall back to polling.
                    tokio::time::sleep(poll).await;
                }
            }
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// The smallest string greater than every string starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    // Only U+10FFFF characters: no upper bound within text.
    "\u{10FFFF}".repeat(prefix.chars().count() + 1)
}

/// The columns of an event, in [`decode_row`]'s order.
pub(crate) const EVENT_COLUMNS: &str = "position, event_id, stream_id, stream_version, \
     event_type, schema_version, occurred_at, recorded_at, payload";

/// The values of a query being built, in order, for either backend.
#[derive(Default)]
struct Params(Vec<Param>);

impl Params {
    fn add(&mut self, p: impl Into<Param>) -> std::result::Result<(), std::convert::Infallible> {
        self.0.push(p.into());
        Ok(())
    }
}

/// An event from a row of [`EVENT_COLUMNS`], of either backend.
pub(crate) fn decode_row<R: Row>(row: &R) -> Result<RecordedEvent>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let payload: String = row.try_get(8)?;
    let schema_version: i64 = row.try_get(5)?;
    let stream_version: i64 = row.try_get(3)?;
    let position: i64 = row.try_get(0)?;
    Ok(RecordedEvent {
        position,
        event_id: row.try_get(1)?,
        stream_id: row.try_get(2)?,
        stream_version: u64::try_from(stream_version).unwrap_or(0),
        event_type: row.try_get(4)?,
        schema_version: u32::try_from(schema_version).unwrap_or(0),
        occurred_at: from_micros(row.try_get(6)?)?,
        recorded_at: from_micros(row.try_get(7)?)?,
        payload: serde_json::from_str(&payload).map_err(|e| {
            Error::InvalidInput(format!(
                "stored payload at position {position} is not JSON: {e}"
            ))
        })?,
    })
}
