//! What operators watch: `GET /metrics` (Prometheus), the live event stream
//! (`GET /v1/events/stream`, Server-Sent Events), and the middleware that gives every request
//! a span, a request id and its place in the HTTP metrics ([`observe`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::heal::Healer;
use crate::live::LiveLog;
use crate::metrics::Metrics;

/// The request id header: a client's own is kept (when it is 1 to [`MAX_REQUEST_ID`] visible
/// ASCII characters), otherwise one is made; the answer carries it either way.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id kept from a client.
pub const MAX_REQUEST_ID: usize = 128;

/// How often an idle event stream sends a comment line, so that proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the routes here need: the metrics, the live log and the healer (for circuit states).
#[derive(Clone)]
pub struct Ops {
    pub metrics: Metrics,
    pub live: LiveLog,
    pub healer: Arc<Healer>,
}

/// `GET /metrics` and `GET /v1/events/stream`, for any router state (they carry their own).
pub fn router<S: Clone + Send + Sync + 'static>(ops: Ops) -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(event_stream))
        .with_state(ops)
}

/// A request's id, in its extensions for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's request id when it is fit to keep (and to log): 1 to [`MAX_REQUEST_ID`]
/// visible ASCII characters.
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(&REQUEST_ID)?.to_str().ok()?;
    (!v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_owned())
}

/// The outermost middleware: a request id (the client's `X-Request-Id`, or a new one),
/// returned in the answer's `X-Request-Id`; one span per request (`request` with the id, the
/// method, the matched route template and the path, never a header: no token is ever
/// logged), an `info` line when it is answered; and the HTTP metrics (by route template,
/// never the raw path, and status; the time to the answer's head).
pub async fn observe(State(metrics): State<Metrics>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = client_request_id(req.headers()).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        path = %req.uri().path(),
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status();
    let elapsed = started.elapsed();
    metrics.observe_http(method.as_str(), &route, status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            "request answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

/// `GET /metrics`: every metric in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics in the Prometheus text format (version 0.0.4)",
         content_type = "text/plain; version=0.0.4", body = String),
        (status = 503, description = "The store could not be read; retry later")
    )
)]
async fn metrics(State(ops): State<Ops>) -> Response {
    match ops.metrics.render(Some(&ops.healer)).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "a scrape could not read the store");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &format!("the metrics could not be read: {e}"),
            )
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Start after this log position (0: from the first event). A `Last-Event-ID` header (a
    /// reconnecting client's) takes precedence.
    after: Option<String>,
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
        (status = 400, description = "A position that is not a whole number of 0 or more")
    )
)]
async fn event_stream(
    State(ops): State<Ops>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_input", &e.body_text()),
    };
    let (what, given) = match headers.get("last-event-id") {
        Some(v) => ("Last-Event-ID", v.to_str().unwrap_or("\u{fffd}").to_owned()),
        None => ("after", query.after.unwrap_or_else(|| "0".to_owned())),
    };
    let after = match given.trim().parse::<i64>() {
        Ok(p) if p >= 0 => p,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                &format!(
                    "{what} must be a log position (a whole number, 0 or more), not {given:?}"
                ),
            );
        }
    };
    let events = match ops.live.subscribe(after).await {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &format!("the log could not be read: {e}"),
            );
        }
    };
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
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// An error answer in the service's shape: `{"error":{"code","message"}}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_request_id_is_kept_only_when_fit_to_log() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(REQUEST_ID, HeaderValue::from_str(v).unwrap());
            client_request_id(&h)
        };
        assert_eq!(with("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(with("has space"), None);
        assert_eq!(with(&"x".repeat(MAX_REQUEST_ID + 1)), None);
        assert_eq!(client_request_id(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_carry_a_request_id() {
        use axum::body::Body;
        use tower::ServiceExt as _;
        let metrics = Metrics::default();
        let app = axum::Router::new()
            .route("/v1/things/{id}", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                observe,
            ));
        let call = |uri: &str, id: Option<&str>| {
            let mut req = Request::get(uri);
            if let Some(id) = id {
                req = req.header("x-request-id", id);
            }
            app.clone().oneshot(req.body(Body::empty()).unwrap())
        };
        let a = call("/v1/things/42", None).await.unwrap();
        let b = call("/v1/things/43", Some("client-id-1")).await.unwrap();
        let c = call("/nope", Some("bad id")).await.unwrap();
        assert_eq!(a.status(), StatusCode::OK);
        assert_eq!(c.status(), StatusCode::NOT_FOUND);
        let made = a.headers()[&REQUEST_ID].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
        assert_eq!(b.headers()[&REQUEST_ID], "client-id-1");
        assert_ne!(c.headers()[&REQUEST_ID], "bad id");
        let text = metrics.render(None).await.unwrap();
        assert!(text.contains(
            "healstore_http_requests_total{method=\"GET\",route=\"/v1/things/{id}\",status=\"200\"} 2"
        ), "{text}");
        assert!(
            text.contains(
                "healstore_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("/v1/things/42"));
    }
}
