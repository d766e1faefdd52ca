//! `/healthz`, `/readyz` and `/openapi.json`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::serve::AppState;
use crate::serve::error::extract::Json;
use crate::serve::error::{ApiError, ErrorBody};

/// `/healthz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    pub status: &'static str,
}

/// `/readyz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// The store is open, its writer alive and its schema current.
    pub ready: bool,
    pub writer_alive: bool,
    /// The newest migration applied to the database file.
    pub schema_version: i64,
    pub schema_current: bool,
    /// The newest event's position (0 when the log is empty).
    pub head_position: i64,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The process answers", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The store is open, its writer alive and the database's schema current: 200, else 503.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready: the writer stopped, or the schema changed", body = Ready),
        (status = 500, description = "The store cannot be read", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, Json<Ready>), ApiError> {
    let r = state.store().readiness().await?;
    let head_position = state.store().head_position().await?;
    let ready = r.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(Ready {
            ready,
            writer_alive: r.writer_alive,
            schema_version: r.schema_version,
            schema_current: r.schema_current,
            head_position,
        }),
    ))
}

/// This document: the OpenAPI 3.1 description of every route.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(crate::serve::openapi::document())
}
