//! What operators watch: `GET /metrics` (Prometheus) and the live event stream
//! (`GET /v1/events/stream`, Server-Sent Events).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::serve::AppState;
use crate::serve::error::extract::Query;
use crate::serve::error::{ApiError, ErrorBody};

/// How often an idle event stream sends a comment line, so that proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /metrics`: every metric in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics in the Prometheus text format (version 0.0.4)",
         content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, description = "The store could not be read", body = ErrorBody),
        (status = 503, description = "The store is busy or closing; retry later", body = ErrorBody)
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics().render(Some(state.healer())).await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this log position (0: from the first event). A `Last-Event-ID` header (a
    /// reconnecting client's) takes precedence.
    pub after: Option<String>,
}

/// `GET /v1/events/stream`: the log's events after a position, then each new one as it is
/// committed, as Server-Sent Events: `id:` the event's log position, `event:` its type,
/// `data:` its JSON line (as `healstore events --format json` prints it). A client that
/// reconnects with `Last-Event-ID` resumes right after the last event it received: nothing
/// is skipped or repeated. A comment line every 15 s keeps an idle stream open.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header,
         description = "The last position received: the stream resumes after it"),
    ),
    responses(
        (status = 200, description = "The event stream",
         content_type = "text/event-stream", body = String),
        (status = 400, description = "A position that is not a whole number of 0 or more", body = ErrorBody),
        (status = 503, description = "The store is closing", body = ErrorBody)
    )
)]
pub async fn event_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let (what, given) = match headers.get("last-event-id") {
        Some(v) => ("Last-Event-ID", v.to_str().unwrap_or("\u{fffd}").to_owned()),
        None => ("after", query.after.unwrap_or_else(|| "0".to_owned())),
    };
    let after = match given.trim().parse::<i64>() {
        Ok(p) if p >= 0 => p,
        _ => {
            return Err(ApiError::bad_request(format!(
                "{what} must be a log position (a whole number, 0 or more), not {given:?}"
            )));
        }
    };
    let events = state.live().subscribe(after).await?;
    // An error reading the log ends the stream (the client resumes with Last-Event-ID).
    let events = events
        .take_while(|e| {
            if let Err(err) = e {
                tracing::warn!(error = %err, "an event stream could not read the log");
            }
            std::future::ready(e.is_ok())
        })
        .filter_map(|e| std::future::ready(e.ok()))
        .map(|e| {
            let mut ev = Event::default().id(e.position.to_string());
            if !e.event_type.is_empty() && !e.event_type.chars().any(char::is_control) {
                ev = ev.event(&e.event_type);
            }
            Ok::<_, Infallible>(ev.data(&e.json))
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}
