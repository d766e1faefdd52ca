//! Preventions: the list, approving and rejecting one, the caller's report on a delegated
//! one's actions. Each answer is the document `healstore prevent ... --format json` prints.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::heal::prevention;
use crate::serve::AppState;
use crate::serve::error::extract::{Json, Path, Query};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::openapi::document_schema;

document_schema!(
    /// The preventions' list.
    PreventionsAnswer,
    "As `healstore prevent list --format json` prints it: {\"preventions\": [prevention, \
     ...]}, each with prevention_id, prediction_id, agent_id, failure_type, source, \
     probability, strategy, actions, status (pending, held_back, approved, rejected, executed, \
     failed, shadow, declined), holdout, decided_by, decision_reason..."
);

document_schema!(
    /// An approval's answer.
    ApprovalAnswer,
    "As `healstore prevent approve --format json` prints it: prevention_id, by, decision \
     (act, delegated, shadow, declined), reason, actions, results, prevention"
);

document_schema!(
    /// A prevention.
    PreventionAnswer,
    "As `healstore prevent reject --format json` prints it: the prevention with its status"
);

document_schema!(
    /// An outcome's answer.
    PreventionOutcomeAnswer,
    "As `healstore prevent outcome --format json` prints it: {\"prevention\": prevention (its \
     status executed or failed), \"duplicate\": true when the same outcome was already recorded}"
);

/// Which preventions to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only preventions of this status.
    pub status: Option<String>,
}

/// Who approves, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub by: String,
    pub reason: Option<String>,
}

/// Who rejects, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    pub by: String,
    pub reason: String,
}

/// How a delegated prevention's actions went (`healstore prevent outcome`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    /// Whether the actions were carried out successfully.
    pub success: bool,
    /// How long they took (default 0).
    pub duration_ms: Option<i64>,
    /// When (RFC 3339; default: now).
    pub at: Option<String>,
}

/// Every prevention (or those of one status), oldest first.
#[utoipa::path(get, path = "/v1/preventions", tag = "preventions",
    params(ListQuery),
    responses((status = 200, description = "The preventions", body = PreventionsAnswer)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut list = prevention::list(state.store(), None, None).await?;
    if let Some(s) = &q.status {
        list.retain(|v| &v.status == s);
    }
    Ok(Json(json!({ "preventions": list })))
}

/// Approve a pending prevention: its actions are carried out (or handed back, `delegated`),
/// once; approving again, or approving a rejected or held-back one, is a 409.
#[utoipa::path(post, path = "/v1/preventions/{id}/approve", tag = "preventions",
    params(("id" = String, Path, description = "The prevention id (prev-...)")),
    request_body = ApproveRequest,
    responses(
        (status = 200, description = "What the approval did", body = ApprovalAnswer),
        (status = 404, description = "No such prevention", body = ErrorBody),
        (status = 409, description = "Not pending: already approved, rejected or held back", body = ErrorBody),
        (status = 422, description = "No approver named", body = ErrorBody),
    ))]
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<ApproveRequest>,
) -> Result<Json<Value>, ApiError> {
    let r = state
        .healer()
        .approve_prevention(&id, &req.by, req.reason.as_deref(), state.now())
        .await?;
    Ok(Json(json!(r)))
}

/// Reject a pending prevention, with who and why.
#[utoipa::path(post, path = "/v1/preventions/{id}/reject", tag = "preventions",
    params(("id" = String, Path, description = "The prevention id (prev-...)")),
    request_body = RejectRequest,
    responses(
        (status = 200, description = "The rejected prevention", body = PreventionAnswer),
        (status = 404, description = "No such prevention", body = ErrorBody),
        (status = 409, description = "Not pending", body = ErrorBody),
        (status = 422, description = "No reason, or no one named", body = ErrorBody),
    ))]
pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<RejectRequest>,
) -> Result<Json<Value>, ApiError> {
    let v = state
        .healer()
        .reject_prevention(&id, &req.by, &req.reason, state.now())
        .await?;
    Ok(Json(json!(v)))
}

/// Report how a delegated prevention's actions went, once: the same report again answers the
/// recorded one (`duplicate: true`), the other result is a 409, and so is an outcome for a
/// prevention that awaits none (pending, held back, rejected, carried out by the service).
#[utoipa::path(post, path = "/v1/preventions/{id}/outcome", tag = "preventions",
    params(("id" = String, Path, description = "The prevention id (prev-...)")),
    request_body = OutcomeRequest,
    responses(
        (status = 200, description = "The outcome recorded (or already recorded)", body = PreventionOutcomeAnswer),
        (status = 400, description = "Not an outcome request, or a time that is not RFC 3339", body = ErrorBody),
        (status = 404, description = "No such prevention", body = ErrorBody),
        (status = 409, description = "No outcome awaited, or one recorded the other way", body = ErrorBody),
        (status = 422, description = "A malformed id, or a duration out of range", body = ErrorBody),
    ))]
pub async fn outcome(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<OutcomeRequest>,
) -> Result<Json<Value>, ApiError> {
    let at = super::record::time_or(req.at.as_deref(), state.now())?;
    let (v, duplicate) = state
        .healer()
        .record_prevention_outcome(&id, req.success, req.duration_ms.unwrap_or(0), at)
        .await?;
    Ok(Json(json!({ "prevention": v, "duplicate": duplicate })))
}
