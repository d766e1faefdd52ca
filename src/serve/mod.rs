//! The HTTP service: the command line's JSON contract over HTTP, for clients on other hosts and
//! in any language.
//!
//! Like the command line, the server is a thin adapter over the library: a handler reads the
//! request, calls the library, and answers with the document `--format json` prints; it takes
//! no decision of its own. One process holds the store and one long-lived healer, so that the
//! appends of every client are group-committed together.
//!
//! - [`state`]: what every handler shares (the store, the healer, the configuration, the clock).
//! - [`error`]: one error type, answered as `{"error":{"code":..,"message":..}}` with the
//!   status its kind calls for, and the extractors that refuse bad requests that way.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers.
//! - [`routes`]: the handlers, one file per area; [`routes::api`] is the one place that
//!   registers them.
//! - [`guard`]: who may call the server and how much: bearer tokens with a role, and limits
//!   on a request's body, its time and the number served at once.
//! - [`observe`]: the outermost middleware: a span, a request id and HTTP metrics for every
//!   request (`/metrics` and the live event stream are in [`routes::ops`]).
//!
//! [`router`] builds the whole application (layers such as limits, metrics or tracing go on
//! the router it returns); [`serve`] binds, prints the address, and serves until its shutdown
//! future completes.

pub mod body;
pub mod error;
pub mod guard;
pub mod observe;
pub mod openapi;
pub mod routes;
pub mod state;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

pub use error::ApiError;
pub use state::AppState;

use crate::{Error, Result};

/// The address `healstore serve` listens on unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7878,
));

/// How long [`serve`] waits, once told to stop, for the requests in flight to finish.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where [`serve`] listens, and how it stops.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to bind (port 0: a free port; the address bound is printed on start).
    pub listen: SocketAddr,
    /// Once the shutdown future completes, how long the requests in flight may take to
    /// finish. Past it they are abandoned (their connections dropped), what was accepted is
    /// committed, the store closed, and [`serve`] answers an error.
    pub shutdown_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: DEFAULT_LISTEN,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// The whole application over `state`: every route of [`routes::api`] (`/openapi.json`
/// included), and JSON answers for a path no route serves (404 `no_route`) and a method a
/// route does not serve (405).
pub fn router(state: AppState) -> axum::Router {
    router_with(state, None)
}

/// [`router`] with `guard` (tokens and limits) in front of every route, inside the
/// observation (so that a refusal is counted and carries a request id too).
pub fn router_with(state: AppState, guard: Option<&guard::Guard>) -> axum::Router {
    let (router, _) = routes::api().split_for_parts();
    let metrics = state.metrics().clone();
    let router = router
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed);
    let router = if state.store().is_postgres() {
        router.layer(axum::middleware::from_fn(not_yet_on_postgres))
    } else {
        router
    };
    let router = match guard {
        Some(g) => g.apply(router),
        None => router,
    };
    router
        // Outermost: every answer, the fallbacks' included, is counted and carries an id.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            observe::observe,
        ))
        .with_state(state)
}

/// The routes that read the analytics read models (and the audit, which joins `failures`
/// with them), by path prefix: not yet available on PostgreSQL.
const ANALYTICS_PATHS: &[&str] = &[
    "/v1/stats",
    "/v1/mttr",
    "/v1/effectiveness",
    "/v1/recommendations",
    "/v1/dashboard",
    "/v1/circuit-report",
    "/v1/patterns",
    "/v1/predict",
    "/v1/preventions",
    "/v1/audit/",
];

/// On a PostgreSQL store, answers the analytics routes `501 not_yet_available` (as the
/// command line refuses their commands), the request unread.
async fn not_yet_on_postgres(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let path = request.uri().path();
    if ANALYTICS_PATHS.iter().any(|p| path.starts_with(p)) {
        return ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not_yet_available",
            "not yet available on PostgreSQL: analytics (the read models)",
        )
        .into_response();
    }
    next.run(request).await
}

/// Binds `options.listen`, writes `listening on http://HOST:PORT` to standard output (one
/// line, flushed: scripts and tests read the port from it), and serves [`router`] until
/// `shutdown` completes; then finishes the requests in flight, checkpoints the healer and
/// closes the store (every accepted append committed and answered). Requests still running
/// [`ServeOptions::shutdown_timeout`] after `shutdown` are abandoned: the store is closed all
/// the same (what was accepted committed), and the answer is an error saying so.
pub async fn serve(
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_app(state.clone(), router(state), options, shutdown).await
}

/// [`serve`] with an application built by the caller (for instance [`router`] with layers
/// added); `state` is the one the application's handlers use, closed at the end.
pub async fn serve_app(
    state: AppState,
    app: axum::Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(l) => l,
        Err(e) => {
            let _ = state.close().await;
            return Err(Error::from_io(
                format_args!("cannot listen on {}", options.listen),
                &e,
            ));
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = state.close().await;
            return Err(Error::from_io("cannot read the address bound", &e));
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{addr}");
        let _ = stdout.flush();
    }
    tracing::info!(%addr, "listening");
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .into_future();
    let timeout = options.shutdown_timeout;
    let deadline = async move {
        match stopping.await {
            Ok(()) => tokio::time::sleep(timeout).await,
            // Served to the end without being told to stop: no deadline.
            Err(_) => std::future::pending().await,
        }
    };
    let served = tokio::select! {
        served = serving => served.map_err(|e| Error::from_io("the server stopped", &e)),
        () = deadline => {
            tracing::warn!(?timeout, "shutdown deadline passed: abandoning the requests in flight");
            Err(Error::Io(format!(
                "requests still in flight {timeout:?} after the signal to stop were abandoned \
                 (--shutdown-timeout); what was accepted is committed"
            )))
        }
    };
    let closed = state.close().await;
    served?;
    closed
}
