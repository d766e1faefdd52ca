//! Circuit breakers: the list, one agent's, a permit, and operating one by hand. Each answer
//! is the document `healstore circuits` or `healstore circuit ...` prints with
//! `--format json`.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::signals::SignalAnswer;
use crate::serve::AppState;
use crate::serve::error::extract::{Json, Path};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::openapi::document_schema;

document_schema!(
    /// The circuits' list.
    CircuitsAnswer,
    "As `healstore circuits --format json` prints it: {\"circuits\": [state, ...]}, each \
     state with its agent_id, state, consecutive_failures, reopen_count, opened_at, \
     next_transition_at, half_open, window..."
);

/// Why a circuit is operated by hand (recorded in the log).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: String,
}

/// Every circuit breaker and its state.
#[utoipa::path(get, path = "/v1/circuits", tag = "circuits",
    responses((status = 200, description = "Every circuit", body = CircuitsAnswer)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = state.healer().circuits(None).await?;
    Ok(Json(json!({ "circuits": rows })))
}

/// One agent's circuit (`healstore circuits --agent A`): a list of one, or a 404 when the
/// healer holds no circuit for the agent (none of its failures counted, or its circuit back
/// at rest: closed).
#[utoipa::path(get, path = "/v1/circuits/{agent}", tag = "circuits",
    params(("agent" = String, Path, description = "The agent")),
    responses(
        (status = 200, description = "The agent's circuit", body = CircuitsAnswer),
        (status = 404, description = "No circuit is held for the agent (a circuit at rest is closed)", body = ErrorBody),
    ))]
pub async fn one(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.healer().circuits_report(Some(&agent)).await?
    )))
}

/// Ask whether a call may go to the agent: `permitted` true (admitted) or false (rejected).
/// The half-open trial limit holds across every process on the database.
#[utoipa::path(post, path = "/v1/circuits/{agent}/permit", tag = "circuits",
    params(("agent" = String, Path, description = "The agent")),
    responses(
        (status = 200, description = "Admitted or rejected (`permitted`)", body = SignalAnswer),
        (status = 422, description = "Refused (an empty agent id)", body = ErrorBody),
    ))]
pub async fn permit(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.healer().permit(&agent).await?)))
}

async fn command(
    state: &AppState,
    agent: &str,
    word: &str,
    req: ReasonRequest,
) -> Result<Json<Value>, ApiError> {
    let r = state
        .healer()
        .command(Some("CircuitBreaker"), agent, word, &req.reason)
        .await?;
    Ok(Json(json!(r)))
}

/// Force the circuit open (the agent is out of rotation until closed).
#[utoipa::path(post, path = "/v1/circuits/{agent}/open", tag = "circuits",
    params(("agent" = String, Path, description = "The agent")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "What the command changed", body = SignalAnswer),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 422, description = "A blank reason", body = ErrorBody),
    ))]
pub async fn open(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Json(req): Json<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    command(&state, &agent, "open", req).await
}

/// Force the circuit closed.
#[utoipa::path(post, path = "/v1/circuits/{agent}/close", tag = "circuits",
    params(("agent" = String, Path, description = "The agent")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "What the command changed", body = SignalAnswer),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 422, description = "A blank reason", body = ErrorBody),
    ))]
pub async fn close(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Json(req): Json<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    command(&state, &agent, "close", req).await
}

/// Close the circuit and clear its counters and escalation.
#[utoipa::path(post, path = "/v1/circuits/{agent}/reset", tag = "circuits",
    params(("agent" = String, Path, description = "The agent")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "What the command changed", body = SignalAnswer),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 422, description = "A blank reason", body = ErrorBody),
    ))]
pub async fn reset(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Json(req): Json<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    command(&state, &agent, "reset", req).await
}
