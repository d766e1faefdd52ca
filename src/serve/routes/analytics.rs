//! The analytics commands over HTTP: each route answers the document the command of the same
//! name prints with `--format json`, its window and thresholds given as query parameters
//! named as the command's options (`window`, `since`, `until`, `min_results`, ...).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::analytics::request::{Learning, Verdicts, WindowSpec};
use crate::analytics::{Analytics, PredictOptions, Window};
use crate::serve::AppState;
use crate::serve::error::extract::{Json, Query};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::openapi::AnalyticsAnswer;

/// An optional RFC 3339 time parameter (a 400 when it is not one).
fn time(name: &str, s: &Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    s.as_deref()
        .map(|s| {
            crate::time::parse_time(s).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
        })
        .transpose()
}

/// The window of a request, ending now (the server's `--now`, or the wall clock) unless
/// `until` says otherwise.
fn window(
    state: &AppState,
    length: &Option<String>,
    since: &Option<String>,
    until: &Option<String>,
    default: &str,
) -> Result<Window, ApiError> {
    WindowSpec {
        length: length.clone(),
        since: time("since", since)?,
        until: time("until", until)?,
    }
    .resolve(state.now(), default)
    .map_err(|e| ApiError::param(&e))
}

fn verdicts(min_results: Option<i64>, flap_threshold: Option<i64>) -> Verdicts {
    let d = Verdicts::default();
    Verdicts {
        min_results: min_results.unwrap_or(d.min_results),
        flap_threshold: flap_threshold.unwrap_or(d.flap_threshold),
    }
}

/// A window: `window` (a length ending now: 90s, 15m, 1h, 24h, 7d, 2w), or `since` to
/// `until` (RFC 3339; start inclusive, end exclusive, end default now).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// The window's length, ending now (default 24 h); not with `since`.
    pub window: Option<String>,
    /// The window's start (RFC 3339, inclusive).
    pub since: Option<String>,
    /// The window's end (RFC 3339, exclusive; default now).
    pub until: Option<String>,
}

/// Overall healing statistics over a window (`healstore stats`, default the last 24 h).
#[utoipa::path(get, path = "/v1/stats", tag = "analytics",
    params(WindowQuery),
    responses(
        (status = 200, description = "`stats --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn stats(
    State(state): State<AppState>,
    Query(q): Query<WindowQuery>,
) -> Result<Response, ApiError> {
    let w = window(&state, &q.window, &q.since, &q.until, "24h")?;
    let a = Analytics::new(state.store());
    Ok(Json(a.stats(&w).await?).into_response())
}

/// `GET /v1/mttr`'s parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MttrQuery {
    /// The window's length, ending now (default 24 h); not with `since`.
    pub window: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// `recover` (the default: MTTR proper) or `remediate`.
    pub to: Option<String>,
    /// Split each bucket by `failure-type`, `strategy` or `agent`.
    pub by: Option<String>,
    /// The bucket's length (default 1h).
    pub bucket: Option<String>,
}

/// MTTR as a time series (`healstore mttr`).
#[utoipa::path(get, path = "/v1/mttr", tag = "analytics",
    params(MttrQuery),
    responses(
        (status = 200, description = "`mttr --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn mttr(
    State(state): State<AppState>,
    Query(q): Query<MttrQuery>,
) -> Result<Response, ApiError> {
    let w = window(&state, &q.window, &q.since, &q.until, "24h")?;
    let to = match &q.to {
        Some(s) => s.parse().map_err(|e| ApiError::param(&e))?,
        None => crate::analytics::MttrTo::Recover,
    };
    let by =
        q.by.as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| ApiError::param(&e))?;
    let bucket = q.bucket.as_deref().unwrap_or("1h");
    crate::analytics::parse_duration(bucket).map_err(|e| ApiError::param(&e))?;
    let a = Analytics::new(state.store());
    Ok(Json(a.mttr_report(&w, to, by, bucket).await?).into_response())
}

/// A window and the thresholds of verdicts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerdictQuery {
    /// The window's length, ending now; not with `since`.
    pub window: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Healing results a strategy needs before a verdict other than `monitor` (default 10).
    pub min_results: Option<i64>,
    /// Opens in the window from which a circuit counts as flapping (default 3).
    pub flap_threshold: Option<i64>,
}

impl VerdictQuery {
    fn parts(
        &self,
        state: &AppState,
        default: &str,
    ) -> Result<(Window, crate::analytics::advice::AdviceOptions, Verdicts), ApiError> {
        let w = window(state, &self.window, &self.since, &self.until, default)?;
        let v = verdicts(self.min_results, self.flap_threshold);
        let advice = v.advice().map_err(|e| ApiError::param(&e))?;
        Ok((w, advice, v))
    }
}

/// Strategy effectiveness with trend and verdict, and which strategy works for which failure
/// type (`healstore effectiveness`, default window 7 days).
#[utoipa::path(get, path = "/v1/effectiveness", tag = "analytics",
    params(VerdictQuery),
    responses(
        (status = 200, description = "`effectiveness --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn effectiveness(
    State(state): State<AppState>,
    Query(q): Query<VerdictQuery>,
) -> Result<Response, ApiError> {
    let (w, advice, _) = q.parts(&state, "7d")?;
    let a = Analytics::new(state.store());
    Ok(Json(a.effectiveness(&w, &advice.effectiveness).await?).into_response())
}

/// What to change, from the window's figures (`healstore recommendations`).
#[utoipa::path(get, path = "/v1/recommendations", tag = "analytics",
    params(VerdictQuery),
    responses(
        (status = 200, description = "`recommendations --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn recommendations(
    State(state): State<AppState>,
    Query(q): Query<VerdictQuery>,
) -> Result<Response, ApiError> {
    let (w, advice, _) = q.parts(&state, "24h")?;
    let a = Analytics::new(state.store());
    let mut r = a.recommendations_report(&w, &advice).await?;
    // Each with the configuration change that addresses it, as the command line gives it.
    crate::analytics::propose::proposals(&mut r.recommendations, state.config());
    Ok(Json(r).into_response())
}

/// Every figure against its target, the health score and the recommendations (`healstore
/// dashboard`).
#[utoipa::path(get, path = "/v1/dashboard", tag = "analytics",
    params(VerdictQuery),
    responses(
        (status = 200, description = "`dashboard --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn dashboard(
    State(state): State<AppState>,
    Query(q): Query<VerdictQuery>,
) -> Result<Response, ApiError> {
    let (w, advice, _) = q.parts(&state, "24h")?;
    let a = Analytics::new(state.store());
    Ok(Json(a.dashboard(&w, &advice, state.now()).await?).into_response())
}

/// The dashboard as a self-contained HTML page with charts (`healstore dashboard --html`).
#[utoipa::path(get, path = "/v1/dashboard.html", tag = "analytics",
    params(VerdictQuery),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn dashboard_html(
    State(state): State<AppState>,
    Query(q): Query<VerdictQuery>,
) -> Result<Response, ApiError> {
    let (w, advice, _) = q.parts(&state, "24h")?;
    let a = Analytics::new(state.store());
    let d = a.dashboard(&w, &advice, state.now()).await?;
    let page = crate::analytics::html::render(&d);
    let mut r = page.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(r)
}

/// Circuit analytics: time open and half-open, reopenings, flapping circuits (`healstore
/// circuit-report`).
#[utoipa::path(get, path = "/v1/circuit-report", tag = "analytics",
    params(VerdictQuery),
    responses(
        (status = 200, description = "`circuit-report --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn circuit_report(
    State(state): State<AppState>,
    Query(q): Query<VerdictQuery>,
) -> Result<Response, ApiError> {
    let (w, _, v) = q.parts(&state, "24h")?;
    let a = Analytics::new(state.store());
    Ok(Json(a.circuits(&w, v.flap_threshold).await?).into_response())
}

/// A window and pattern-learning thresholds.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LearnQuery {
    /// The window's length, ending now (default 7 days); not with `since`.
    pub window: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Occurrences a pattern needs (default 5, at least 2).
    pub min_occurrences: Option<i64>,
    /// Confidence a pattern needs (0 to 1, default 0.7).
    pub min_confidence: Option<f64>,
    /// Longest gap between two steps of a sequence (default 1h).
    pub sequence_gap: Option<String>,
    /// How soon after A a B counts as following it (default 10s).
    pub correlation_window: Option<String>,
    /// Only with `predict`: only this agent's predictions.
    pub agent: Option<String>,
}

impl LearnQuery {
    fn learning(&self, record: bool) -> Learning {
        let d = Learning::default();
        Learning {
            min_occurrences: self.min_occurrences.unwrap_or(d.min_occurrences),
            min_confidence: self.min_confidence.unwrap_or(d.min_confidence),
            sequence_gap: self.sequence_gap.clone().unwrap_or(d.sequence_gap),
            correlation_window: self
                .correlation_window
                .clone()
                .unwrap_or(d.correlation_window),
            record,
        }
    }
}

async fn patterns(state: &AppState, q: &LearnQuery, record: bool) -> Result<Response, ApiError> {
    if q.agent.is_some() {
        return Err(ApiError::bad_request("agent: patterns take no agent"));
    }
    let w = window(state, &q.window, &q.since, &q.until, "7d")?;
    let learning = q.learning(record);
    let options = learning.options().map_err(|e| ApiError::param(&e))?;
    let a = Analytics::new(state.store());
    Ok(Json(a.patterns_report(&w, &options, record, state.now()).await?).into_response())
}

/// Learn failure patterns over the window without recording them (`healstore patterns
/// --no-record`).
#[utoipa::path(get, path = "/v1/patterns", tag = "analytics",
    params(LearnQuery),
    responses(
        (status = 200, description = "`patterns --no-record --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn patterns_read(
    State(state): State<AppState>,
    Query(q): Query<LearnQuery>,
) -> Result<Response, ApiError> {
    patterns(&state, &q, false).await
}

/// Learn failure patterns over the window and record new or changed ones as
/// `pattern_learned` events (`healstore patterns`).
#[utoipa::path(post, path = "/v1/patterns", tag = "analytics",
    params(LearnQuery),
    responses(
        (status = 200, description = "`patterns --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 503, description = "Retry later", body = ErrorBody),
    ))]
pub async fn patterns_record(
    State(state): State<AppState>,
    Query(q): Query<LearnQuery>,
) -> Result<Response, ApiError> {
    patterns(&state, &q, true).await
}

async fn predict(state: &AppState, q: &LearnQuery, record: bool) -> Result<Response, ApiError> {
    let w = window(state, &q.window, &q.since, &q.until, "7d")?;
    let options =
        PredictOptions::for_request(state.config(), &q.learning(record), q.agent.as_deref(), &w)
            .map_err(|e| ApiError::param(&e))?;
    let a = Analytics::new(state.store());
    // (predicted from the window's end: `until`, or now)
    Ok(Json(a.predict(w.until, &options).await?).into_response())
}

/// The likely next failures, and how earlier predictions turned out, without recording
/// anything (`healstore predict --no-record`).
#[utoipa::path(get, path = "/v1/predict", tag = "analytics",
    params(LearnQuery),
    responses(
        (status = 200, description = "`predict --no-record --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn predict_read(
    State(state): State<AppState>,
    Query(q): Query<LearnQuery>,
) -> Result<Response, ApiError> {
    predict(&state, &q, false).await
}

/// The likely next failures, recorded as `prediction_made` events (with the patterns learned)
/// (`healstore predict`).
#[utoipa::path(post, path = "/v1/predict", tag = "analytics",
    params(LearnQuery),
    responses(
        (status = 200, description = "`predict --format json`", body = AnalyticsAnswer),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 503, description = "Retry later", body = ErrorBody),
    ))]
pub async fn predict_record(
    State(state): State<AppState>,
    Query(q): Query<LearnQuery>,
) -> Result<Response, ApiError> {
    predict(&state, &q, true).await
}
