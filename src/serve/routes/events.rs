//! The log: a page of events, appending a live feed of events, importing events. Answers are
//! what `healstore events|append|import --format json` print.

use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::EventFilter;
use crate::input::LineReader;
use crate::serve::AppState;
use crate::serve::body::{self, BodyReader, stream_json_lines};
use crate::serve::error::extract::{Json, Query};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::openapi::{ImportAnswer, JsonLines};
use crate::store::feed::{self, AppendAck, FeedError, ImportError};

/// Events a page holds unless told otherwise, and at most.
pub const DEFAULT_PAGE: u64 = 1000;
pub const MAX_PAGE: u64 = 10_000;

/// `GET /v1/events`' parameters (`healstore events`' options).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this stream.
    pub stream: Option<String>,
    /// Only these event types, separated by commas (`failure_detected,healing_attempted`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub types: Option<String>,
    /// Only events that occurred at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only events that occurred before this time (RFC 3339).
    pub until: Option<String>,
    /// Only events after this global position (the next page: the last position received).
    pub after: Option<i64>,
    /// At most this many events (default 1000, at most 10000).
    pub limit: Option<u64>,
}

/// A page of events (`healstore events --format json`), one JSON Lines record each (the event
/// format), streamed. Page on with `after` = the last position received.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "The events", body = JsonLines, content_type = "application/x-ndjson"),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn page(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let time = |name: &str, s: &Option<String>| {
        s.as_deref()
            .map(|s| {
                crate::time::parse_time(s)
                    .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
            })
            .transpose()
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is not between 1 and {MAX_PAGE}"
        )));
    }
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(format!(
            "after: {after} is not a position (0 or more)"
        )));
    }
    let event_types = q
        .types
        .as_deref()
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let filter = EventFilter {
        stream_id: q.stream,
        event_types,
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        after_position: after,
        limit: Some(limit),
        ..Default::default()
    };
    let events = state.store().read(filter).map(|e| e.map(|e| e.to_line()));
    Ok(stream_json_lines(None, events))
}

/// How many appends of one request may be in flight at once (group commit gathers them).
const PIPELINE: usize = 256;

/// Append events sent as JSON Lines as they arrive (`healstore append`), each acknowledged
/// once committed, in input order, while the body is still being sent
/// (`{"line","event_id","position","stream_version","duplicate"}`). Each line stands alone;
/// the first line refused is answered with `{"line":N,"error":{...}}`, which ends the answer
/// (the lines before it are stored and acknowledged; nothing after it is read).
#[utoipa::path(post, path = "/v1/events/append", tag = "events",
    request_body(content = String, content_type = "application/x-ndjson", description = "Events in the JSON Lines event format"),
    responses(
        (status = 200, description = "One acknowledgement per event", body = JsonLines, content_type = "application/x-ndjson"),
        (status = 415, description = "The body is not JSON Lines", body = ErrorBody),
    ))]
pub async fn append(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    body::require_json_lines(request.headers())?;
    let mut lines = LineReader::new(BodyReader::new(request.into_body()));
    let (tx, response) = body::json_lines_channel();
    let (acks, mut rx) = tokio::sync::mpsc::channel::<AppendAck>(PIPELINE);
    tokio::spawn(async move {
        let forward = tx.clone();
        let forwarding = tokio::spawn(async move {
            while let Some(a) = rx.recv().await {
                if forward.send(&a).await.is_err() {
                    break;
                }
            }
        });
        let appended = feed::append_lines(state.store(), &mut lines, PIPELINE, &acks).await;
        drop(acks);
        // (every acknowledgement first, then the error that ended the feed)
        let _ = forwarding.await;
        let refused = match appended {
            Ok(()) | Err(FeedError::Closed) => None,
            Err(FeedError::Line { line, error }) => Some((line, error)),
            Err(FeedError::Read { line, error }) => {
                let e = match error {
                    crate::input::LineError::Io(io) => {
                        crate::Error::Io(format!("cannot read the body: {io}"))
                    }
                    other => crate::Error::InvalidInput(other.to_string()),
                };
                Some((line, e))
            }
        };
        if let Some((line, e)) = refused {
            let record = serde_json::json!({
                "line": line,
                "error": ApiError::from_error(&e).body().error,
            });
            let _ = tx.send(&record).await;
        }
    });
    Ok(response)
}

/// Import events sent as JSON Lines, or an archive file (gzip, told by its first bytes), all
/// or nothing, idempotent by event id (`healstore import`): answered once the import
/// committed.
#[utoipa::path(post, path = "/v1/events/import", tag = "events",
    request_body(content = String, content_type = "application/x-ndjson", description = "Events in the JSON Lines event format, or an archive"),
    responses(
        (status = 200, description = "What was imported", body = ImportAnswer),
        (status = 409, description = "An event id already stored with other content", body = ErrorBody),
        (status = 415, description = "The body is not JSON Lines", body = ErrorBody),
        (status = 422, description = "A line is not an event (nothing imported)", body = ErrorBody),
        (status = 503, description = "Retry later", body = ErrorBody),
    ))]
pub async fn import(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    body::require_json_lines(request.headers())?;
    let reader = BodyReader::new(request.into_body());
    let opened = crate::store::archive::open_input(reader, "the request body").await?;
    match feed::import(state.store(), opened, |_, _| {}).await {
        Ok(report) => Ok(axum::response::IntoResponse::into_response(Json(report))),
        Err(ImportError::Refused(e)) => Err(e.into()),
        Err(e) => {
            let mut err = ApiError::from_error(&e.to_error());
            err.message = format!("nothing was imported: {e}");
            Err(err)
        }
    }
}
