//! Recording what happened after a decision, and raw monitoring events: outcomes,
//! recoveries, success signals, usage reports and a raw event. Each answer is the document
//! `healstore record ... --format json` prints.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::record::{HealAnswer, time_or};
use crate::serve::AppState;
use crate::serve::error::extract::Json;
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::openapi::document_schema;

document_schema!(
    /// An outcome's answer.
    OutcomeAnswer,
    "As `healstore record outcome --format json` prints it: failure_id, strategy, success, \
     duration_ms, time_to_remediate_ms, duplicate"
);

document_schema!(
    /// A recovery's answer.
    RecoveredAnswer,
    "As `healstore record recovered --format json` prints it: failure_id, how, recovered_at, \
     time_to_recover_ms, duplicate"
);

document_schema!(
    /// A signal's answer.
    SignalAnswer,
    "What a signal changed, as `healstore record success|usage`, `circuit` and `tick` print \
     it with --format json: reactions (strategy, key, reason, actions), permitted, recovered"
);

/// How a delegated decision's actions went (`healstore record outcome`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    pub failure_id: String,
    /// Whether the actions healed the failure.
    pub success: bool,
    /// How long they took.
    pub duration_ms: Option<u32>,
    /// When (RFC 3339; default: now).
    pub at: Option<String>,
}

/// A failure's recovery, confirmed (`healstore record recovered`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveredRequest {
    pub failure_id: String,
    /// When it recovered (RFC 3339; default: now).
    pub at: Option<String>,
}

/// An agent completed work (`healstore record success`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuccessRequest {
    pub agent_id: String,
    pub task_id: Option<String>,
    /// When (RFC 3339; default: now).
    pub at: Option<String>,
}

/// A resource's usage (`healstore record usage`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    pub resource_type: String,
    pub current: f64,
    pub limit: f64,
    /// When measured (RFC 3339; default: now).
    pub at: Option<String>,
}

/// Report the outcome of a delegated decision. Recording it twice the same way answers the
/// recorded one (`duplicate: true`); the other way is a conflict.
#[utoipa::path(post, path = "/v1/outcomes", tag = "record",
    request_body = OutcomeRequest,
    responses(
        (status = 200, description = "The outcome recorded (or already recorded)", body = OutcomeAnswer),
        (status = 400, description = "Not an outcome request", body = ErrorBody),
        (status = 404, description = "No such failure", body = ErrorBody),
        (status = 409, description = "An outcome is recorded the other way", body = ErrorBody),
        (status = 422, description = "Refused", body = ErrorBody),
    ))]
pub async fn outcome(
    State(state): State<AppState>,
    Json(req): Json<OutcomeRequest>,
) -> Result<Json<Value>, ApiError> {
    let healer = state.healer();
    let at = time_or(req.at.as_deref(), healer.now())?;
    let r = healer
        .record_outcome(
            &req.failure_id,
            req.success,
            req.duration_ms.map(i64::from),
            at,
        )
        .await?;
    Ok(Json(json!(r)))
}

/// Confirm that a failure recovered (once per failure; a recovery already recorded is the
/// answer and nothing is written).
#[utoipa::path(post, path = "/v1/recoveries", tag = "record",
    request_body = RecoveredRequest,
    responses(
        (status = 200, description = "The recovery recorded (or already recorded)", body = RecoveredAnswer),
        (status = 400, description = "Not a recovery request", body = ErrorBody),
        (status = 404, description = "No such failure", body = ErrorBody),
        (status = 422, description = "Refused", body = ErrorBody),
    ))]
pub async fn recovered(
    State(state): State<AppState>,
    Json(req): Json<RecoveredRequest>,
) -> Result<Json<Value>, ApiError> {
    let healer = state.healer();
    let at = time_or(req.at.as_deref(), healer.now())?;
    let r = healer.record_recovered(&req.failure_id, at).await?;
    Ok(Json(json!(r)))
}

/// Report that an agent completed work (a success signal: it recovers the agent's open
/// failures, or the task's).
#[utoipa::path(post, path = "/v1/successes", tag = "record",
    request_body = SuccessRequest,
    responses(
        (status = 200, description = "What the signal changed", body = SignalAnswer),
        (status = 400, description = "Not a success request", body = ErrorBody),
        (status = 422, description = "Refused (an empty id)", body = ErrorBody),
    ))]
pub async fn success(
    State(state): State<AppState>,
    Json(req): Json<SuccessRequest>,
) -> Result<Json<Value>, ApiError> {
    let healer = state.healer();
    let at = time_or(req.at.as_deref(), healer.now())?;
    crate::event::check_id("agent_id", &req.agent_id)?;
    if let Some(t) = &req.task_id {
        crate::event::check_id("task_id", t)?;
    }
    let r = healer
        .record_success(&req.agent_id, req.task_id.as_deref(), at)
        .await?;
    Ok(Json(json!(r)))
}

/// Report a resource's usage (degradation steps back as pressure falls).
#[utoipa::path(post, path = "/v1/usage", tag = "record",
    request_body = UsageRequest,
    responses(
        (status = 200, description = "What the report changed", body = SignalAnswer),
        (status = 400, description = "Not a usage request", body = ErrorBody),
        (status = 422, description = "Refused (not a measurement)", body = ErrorBody),
    ))]
pub async fn usage(
    State(state): State<AppState>,
    Json(req): Json<UsageRequest>,
) -> Result<Json<Value>, ApiError> {
    let healer = state.healer();
    let at = time_or(req.at.as_deref(), healer.now())?;
    let r = healer
        .record_usage(&req.resource_type, req.current, req.limit, at)
        .await?;
    Ok(Json(json!(r)))
}

/// Detect a failure in a raw monitoring event (`{"type":"heartbeat_failed","agent_id":..}`)
/// and heal it as a recorded failure is healed (`healstore record event`); an event that is
/// no failure is answered `{"detected": false}`.
#[utoipa::path(post, path = "/v1/raw-events", tag = "record",
    request_body(content = Object, description = "A raw monitoring event"),
    responses(
        (status = 200, description = "The heal's report, or {\"detected\": false}", body = HealAnswer),
        (status = 400, description = "Not a JSON object", body = ErrorBody),
        (status = 409, description = "The failure id is recorded with other facts", body = ErrorBody),
        (status = 422, description = "Not a raw event healstore can read", body = ErrorBody),
    ))]
pub async fn raw_event(
    State(state): State<AppState>,
    Json(raw): Json<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let healer = state.healer();
    let detected = crate::heal::detect(&Value::Object(raw), healer.now())?;
    Ok(Json(match detected {
        Some(f) => Value::Object(healer.heal(f).await?.to_json()),
        None => json!({"detected": false}),
    }))
}
