//! The outermost middleware ([`observe`]): every request gets a span, a request id and its
//! place in the HTTP metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::metrics::Metrics;

/// The request id header: a client's own is kept (when it is 1 to [`MAX_REQUEST_ID`] visible
/// ASCII characters), otherwise one is made; the answer carries it either way.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id kept from a client.
pub const MAX_REQUEST_ID: usize = 128;

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
    let in_flight = metrics.http_in_flight();
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
    drop(in_flight);
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

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::StatusCode;

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
        let inside = metrics.clone();
        let app = axum::Router::new()
            .route("/v1/things/{id}", axum::routing::get(|| async { "ok" }))
            .route(
                "/v1/inside",
                axum::routing::get(move || {
                    let m = inside.clone();
                    async move { m.render(None).await.unwrap() }
                }),
            )
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
        // The gauge of requests in flight: 1 while a request is answered (itself), 0 after.
        let inside = call("/v1/inside", None).await.unwrap();
        let body = axum::body::to_bytes(inside.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("# TYPE healstore_http_requests_in_flight gauge"),
            "{body}"
        );
        assert!(
            body.contains("\nhealstore_http_requests_in_flight 1\n"),
            "{body}"
        );
        let after = metrics.render(None).await.unwrap();
        assert!(
            after.contains("\nhealstore_http_requests_in_flight 0\n"),
            "{after}"
        );
    }
}
