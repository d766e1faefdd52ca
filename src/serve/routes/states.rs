//! Time-dependent states and every strategy's state: `healstore tick` and `states`.

use axum::extract::State;
use serde::Deserialize;

use crate::heal::{SignalReport, StatesReport};
use crate::serve::AppState;
use crate::serve::error::extract::{Json, Query};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::openapi::{SignalAnswer, StatesAnswer};

/// Let time-dependent states move on: open circuits whose wait passed are recorded half-open
/// (`healstore tick`).
#[utoipa::path(post, path = "/v1/tick", tag = "circuits",
    responses(
        (status = 200, description = "What changed", body = SignalAnswer),
        (status = 503, description = "Retry later", body = ErrorBody),
    ))]
pub async fn tick(State(state): State<AppState>) -> Result<Json<SignalReport>, ApiError> {
    Ok(Json(state.healer().tick().await?))
}

/// `GET /v1/states`' parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatesQuery {
    /// Only this strategy's states (CircuitBreaker, AgentRestart, ...).
    pub strategy: Option<String>,
}

/// Every strategy's state not at rest (`healstore states`).
#[utoipa::path(get, path = "/v1/states", tag = "circuits",
    params(StatesQuery),
    responses(
        (status = 200, description = "The states", body = StatesAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn states(
    State(state): State<AppState>,
    Query(q): Query<StatesQuery>,
) -> Result<Json<StatesReport>, ApiError> {
    Ok(Json(
        state.healer().states_report(q.strategy.as_deref()).await?,
    ))
}
