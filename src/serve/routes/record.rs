//! Recording failures, and raw monitoring events as a stream of JSON Lines (outcomes,
//! recoveries, signals and single raw events are in [`super::signals`]). Each answer is what
//! `healstore record failure --format json` (or `heal --format json`) prints.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::heal::{Failure, Severity};
use crate::serve::AppState;
use crate::serve::error::extract::Json;
use crate::serve::error::{ApiError, ErrorBody};
pub use crate::serve::openapi::HealAnswer;

/// A failure to record and heal (`healstore record failure`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureRequest {
    /// agent_down, task_timeout, resource_exhaustion, quorum_loss, ...
    pub failure_type: String,
    pub agent_id: Option<String>,
    pub task_id: Option<String>,
    /// critical, high (the default), medium or low.
    #[schema(value_type = Option<String>)]
    pub severity: Option<Severity>,
    /// Strategy inputs (resource_type, current_usage, limit, ...).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// The idempotency key (default: a new UUIDv7): a retry with the same id and facts
    /// returns the recorded answer and writes nothing; different facts are a conflict (409).
    pub failure_id: Option<String>,
    /// When the failure happened (RFC 3339; default: now).
    pub detected_at: Option<String>,
}

/// An optional RFC 3339 time from a request (a 400 when it is not one), or `default`.
pub(crate) fn time_or(s: Option<&str>, default: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match s {
        Some(s) => crate::time::parse_time(s).map_err(|e| ApiError::param(&e)),
        None => Ok(default),
    }
}

const RETRY: &str = "The database is busy (Retry-After), or the server is stopping";

/// Record a failure and run the healer on it (decision mode: the actions to carry out are in
/// `delegated_actions`; report how they went with an outcome). The failure id is the
/// idempotency key.
#[utoipa::path(post, path = "/v1/failures", tag = "record",
    request_body = FailureRequest,
    responses(
        (status = 200, description = "The heal's report (a retry: the recorded one, `duplicate: true`)", body = HealAnswer),
        (status = 400, description = "Not a failure request", body = ErrorBody),
        (status = 409, description = "The failure id is recorded with other facts", body = ErrorBody),
        (status = 422, description = "Refused (an empty or too long id)", body = ErrorBody),
        (status = 503, description = RETRY, body = ErrorBody),
    ))]
pub async fn failure(
    State(state): State<AppState>,
    Json(req): Json<FailureRequest>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let healer = state.healer();
    let at = time_or(req.detected_at.as_deref(), healer.now())?;
    let mut f = Failure::new(req.failure_type, req.severity.unwrap_or(Severity::High), at);
    f.agent_id = req.agent_id;
    f.task_id = req.task_id;
    if let Some(id) = req.failure_id {
        f.failure_id = id;
    }
    if let Some(m) = req.metadata {
        f.metadata = m;
    }
    f.check_ids()?;
    let report = healer.heal(f).await?;
    Ok(Json(report.to_json()))
}
