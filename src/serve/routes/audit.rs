//! The audit: one failure's decision trail, everything about an agent, and the audit report
//! over a window. Each answers the JSON Lines `healstore audit ... --format json` prints,
//! streamed as it is read (memory bounded by a page of the log).

use axum::extract::State;
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::EventFilter;
use crate::audit::AuditQuery;
use crate::serve::AppState;
use crate::serve::body::stream_json_lines;
use crate::serve::error::extract::{Path, Query};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::openapi::JsonLines;

/// One failure's decision trail (`healstore audit FAILURE_ID`): every event of its stream,
/// one JSON Lines record each (the event format).
#[utoipa::path(get, path = "/v1/audit/failures/{failure_id}", tag = "audit",
    params(("failure_id" = String, Path, description = "The failure id")),
    responses(
        (status = 200, description = "The trail's events", body = JsonLines, content_type = "application/x-ndjson"),
        (status = 404, description = "No failure with this id is recorded", body = ErrorBody),
    ))]
pub async fn failure(
    State(state): State<AppState>,
    Path(failure_id): Path<String>,
) -> Result<Response, ApiError> {
    let filter = EventFilter::stream(crate::heal::model::failure_stream(&failure_id));
    let mut events = state.store().read(filter).map(|e| e.map(|e| e.to_line()));
    match events.next().await {
        None => Err(crate::Error::NotFound(format!(
            "no failure with id {failure_id:?} is recorded"
        ))
        .into()),
        Some(first) => Ok(stream_json_lines(Some(first?), events)),
    }
}

/// Every event that names an agent, in log order (`healstore audit --agent A`).
#[utoipa::path(get, path = "/v1/audit/agents/{agent_id}", tag = "audit",
    params(("agent_id" = String, Path, description = "The agent")),
    responses(
        (status = 200, description = "The events (none: an empty answer)", body = JsonLines, content_type = "application/x-ndjson"),
    ))]
pub async fn agent(
    State(state): State<AppState>,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    let filter = EventFilter {
        agent_id: Some(agent_id),
        position_order: true,
        ..Default::default()
    };
    let events = state.store().read(filter).map(|e| e.map(|e| e.to_line()));
    Ok(stream_json_lines(None, events))
}

/// `GET /v1/audit/report`'s parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// The report's start (RFC 3339, inclusive).
    pub since: String,
    /// The report's end (RFC 3339, exclusive; default now).
    pub until: Option<String>,
    /// Only the actions naming this agent.
    pub agent: Option<String>,
}

/// The audit report (`healstore audit --since T [--until T] [--agent A]`): every automated
/// action in the window, one record per action, in time order, streamed.
#[utoipa::path(get, path = "/v1/audit/report", tag = "audit",
    params(ReportQuery),
    responses(
        (status = 200, description = "One record per action (see the README's audit reports)", body = JsonLines, content_type = "application/x-ndjson"),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn report(
    State(state): State<AppState>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let time = |name: &str, s: &str| {
        crate::time::parse_time(s).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
    };
    let since = time("since", &q.since)?;
    let until = match &q.until {
        Some(u) => time("until", u)?,
        None => state.now(),
    };
    let window = crate::Window::new(since, until).map_err(|e| ApiError::param(&e))?;
    let records = crate::audit::records(
        state.store(),
        AuditQuery {
            window,
            agent_id: q.agent,
        },
    );
    Ok(stream_json_lines(None, records))
}
