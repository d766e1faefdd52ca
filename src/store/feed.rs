//! A live feed of JSON Lines events: each line appended as it arrives, acknowledged in input
//! order once committed (`healstore append`, `POST /v1/events/append`). Memory is bounded by
//! the number of appends in flight and by their bytes, whatever the input's length.

use std::collections::VecDeque;

use serde::Serialize;
use tokio::io::AsyncBufRead;

use super::{PendingAppend, Store};
use crate::Error;
use crate::event::{Appended, EventLine, ExpectedVersion};
use crate::input::{LineError, LineReader};

/// Bytes of input lines kept in flight at most (besides the count of appends in flight):
/// with lines of up to 1 MiB, memory stays bounded whatever the pipeline.
pub const APPEND_BYTES_IN_FLIGHT: usize = 16 << 20;

/// One event's acknowledgement (`append --format json`): its input line and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendAck {
    pub line: u64,
    pub event_id: String,
    pub position: i64,
    pub stream_version: u64,
    /// The event id was already stored: nothing was written.
    pub duplicate: bool,
}

impl AppendAck {
    pub fn new(line: u64, a: &Appended) -> AppendAck {
        AppendAck {
            line,
            event_id: a.event_id.clone(),
            position: a.position,
            stream_version: a.stream_version,
            duplicate: a.duplicate,
        }
    }
}

/// Why a feed stopped before the end of its input.
#[derive(Debug)]
pub enum FeedError {
    /// Line `line` could not be read (too long, not UTF-8, the input failed).
    Read { line: u64, error: LineError },
    /// Line `line` was refused (not an event, or the store refused its append).
    Line { line: u64, error: Error },
    /// The acknowledgements' receiver was dropped.
    Closed,
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::Read { line, error } => write!(f, "line {line}: {error}"),
            FeedError::Line { line, error } => write!(f, "line {line}: {error}"),
            FeedError::Closed => write!(f, "nobody takes the acknowledgements any more"),
        }
    }
}

impl std::error::Error for FeedError {}

/// Appends the events read from `lines` as they arrive, at most `pipeline` in flight (and
/// [`APPEND_BYTES_IN_FLIGHT`] bytes; group commit gathers them), and sends each event's
/// acknowledgement on `acks` in input order as soon as it is committed: a source that sends
/// one event and waits for its acknowledgement is answered at once. Blank lines are skipped.
/// Each line stands alone (an event of its own stream, appended at any version).
///
/// Stops at the first line that cannot be read or is refused, or when `acks` is closed;
/// either way, the appends already queued are committed (and acknowledged, while `acks` is
/// open) before it returns.
pub async fn append_lines<R>(
    store: &Store,
    lines: &mut LineReader<R>,
    pipeline: usize,
    acks: &tokio::sync::mpsc::Sender<AppendAck>,
) -> std::result::Result<(), FeedError>
where
    R: AsyncBufRead + Unpin,
{
    let pipeline = pipeline.max(1);
    // Each append in flight, with its line's number and length.
    let mut in_flight: VecDeque<(u64, usize, PendingAppend)> = VecDeque::new();
    let mut bytes_in_flight = 0usize;
    let mut eof = false;
    let result: std::result::Result<(), FeedError> = async {
        while !eof || !in_flight.is_empty() {
            tokio::select! {
                biased;
                r = async {
                    match in_flight.front_mut() {
                        Some(front) => (&mut front.2).await,
                        None => std::future::pending().await,
                    }
                }, if !in_flight.is_empty() => {
                    let Some((n, len, _)) = in_flight.pop_front() else {
                        continue;
                    };
                    bytes_in_flight -= len;
                    let appended = r.map_err(|error| FeedError::Line { line: n, error })?;
                    for a in &appended {
                        acks.send(AppendAck::new(n, a))
                            .await
                            .map_err(|_| FeedError::Closed)?;
                    }
                }
                line = lines.next_line(), if !eof
                    && in_flight.len() < pipeline
                    && bytes_in_flight < APPEND_BYTES_IN_FLIGHT =>
                {
                    let line_no = lines.line_number();
                    let line = match line {
                        Ok(Some(l)) => l,
                        Ok(None) => {
                            eof = true;
                            continue;
                        }
                        Err(error) => return Err(FeedError::Read { line: line_no, error }),
                    };
                    if line.trim().is_empty() {
                        continue;
                    }
                    let len = line.len();
                    let parsed = EventLine::parse(&line).and_then(EventLine::into_append);
                    drop(line);
                    let (stream, event) =
                        parsed.map_err(|error| FeedError::Line { line: line_no, error })?;
                    let pending = store
                        .submit(&stream, ExpectedVersion::Any, vec![event])
                        .await
                        .map_err(|error| FeedError::Line { line: line_no, error })?;
                    bytes_in_flight += len;
                    in_flight.push_back((line_no, len, pending));
                }
            }
        }
        Ok(())
    }
    .await;
    // Whatever happened, appends already queued are committed and acknowledged.
    while let Some((n, _, p)) = in_flight.pop_front() {
        if let Ok(appended) = p.await {
            for a in &appended {
                let _ = acks.send(AppendAck::new(n, a)).await;
            }
        }
    }
    result
}

/// Why an import failed. Nothing was imported either way.
#[derive(Debug)]
pub enum ImportError {
    /// The input cannot be imported into this database at all (an archive cut from its own
    /// log): the message says why.
    Refused(Error),
    /// The input failed: a line that is not an event (`line` is its number), an unreadable
    /// input, or the store refused the import.
    Failed { line: Option<u64>, error: Error },
    /// Line `line` could not be read (too long, not UTF-8, the input failed).
    Read { line: u64, error: LineError },
}

impl ImportError {
    /// The library error it amounts to (its kind says what to do about it).
    pub fn to_error(&self) -> Error {
        match self {
            ImportError::Refused(e) | ImportError::Failed { error: e, .. } => e.clone(),
            ImportError::Read {
                error: LineError::Io(_),
                ..
            } => Error::Io(self.to_string()),
            ImportError::Read { .. } => Error::InvalidInput(self.to_string()),
        }
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Refused(e) => write!(f, "{e}"),
            ImportError::Failed {
                line: Some(line),
                error,
            } => write!(f, "line {line}: {error}"),
            ImportError::Failed { line: None, error } => write!(f, "{error}"),
            ImportError::Read { line, error } => write!(f, "line {line}: {error}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// Imports the events of an input opened with [`super::archive::open_input`] (JSON Lines, or
/// an archive told by its first bytes), all or nothing, idempotent by event id (`healstore
/// import`, `POST /v1/events/import`). `progress` is told, once a line is read, whether the
/// input is an archive and how many bytes of (decompressed) lines were read so far.
pub async fn import(
    store: &Store,
    (header, mut lines): (Option<super::archive::ArchiveHeader>, super::archive::Lines),
    mut progress: impl FnMut(bool, u64),
) -> std::result::Result<super::ImportReport, ImportError> {
    let failed = |line, error| ImportError::Failed { line, error };
    if let Some(h) = &header {
        store
            .check_archive_import(h)
            .await
            .map_err(ImportError::Refused)?;
    }
    let archive = header.is_some();
    let mut sink = store.begin_import().await.map_err(|e| failed(None, e))?;
    let mut bytes = 0u64;
    let failure = loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break None,
            Err(error) => {
                break Some(ImportError::Read {
                    line: lines.line_number(),
                    error,
                });
            }
        };
        let line_no = lines.line_number();
        bytes += line.len() as u64 + 1;
        progress(archive, bytes);
        if line.trim().is_empty() {
            continue;
        }
        let parsed = EventLine::parse(&line).and_then(EventLine::into_append);
        drop(line);
        let (stream, event) = match parsed {
            Ok(v) => v,
            Err(e) => break Some(failed(Some(line_no), e)),
        };
        match sink.send(line_no, stream, event).await {
            Ok(()) => {}
            // The writer refused an earlier line; `finish` says which.
            Err(Error::Closed) => break None,
            Err(e) => break Some(failed(Some(line_no), e)),
        }
    };
    if let Some(e) = failure {
        sink.abort().await;
        return Err(e);
    }
    sink.finish().await.map_err(|e| failed(None, e))
}
