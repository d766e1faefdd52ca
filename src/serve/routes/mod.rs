//! The routes, one file per area. [`api`] is the one place that registers them: the router,
//! the OpenAPI document and [`Api::registered`] all come from it, so a test can check that
//! every route the server answers is in `/openapi.json`.

pub mod analytics;
pub mod audit;
pub mod circuits;
pub mod events;
pub mod heal;
pub mod health;
pub mod ops;
pub mod prevent;
pub mod record;
pub mod signals;
pub mod states;

use axum::routing::MethodRouter;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::AppState;

/// Every route of the server. Add routes here, with `#[utoipa::path]` on the handler and
/// [`Api::routes`]`(routes!(handler))`: that puts them in the document. A route added with
/// [`Api::route`] (plain axum, no description) is answered but missing from the document,
/// which the tests refuse.
pub fn api() -> Api {
    Api::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::openapi_json))
        .routes(routes!(record::failure))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::event_stream))
        .routes(routes!(signals::raw_event))
        .routes(routes!(heal::heal))
        .routes(routes!(signals::outcome))
        .routes(routes!(signals::recovered))
        .routes(routes!(signals::success))
        .routes(routes!(signals::usage))
        .routes(routes!(circuits::list))
        .routes(routes!(circuits::one))
        .routes(routes!(circuits::permit))
        .routes(routes!(circuits::open))
        .routes(routes!(circuits::close))
        .routes(routes!(circuits::reset))
        .routes(routes!(states::tick))
        .routes(routes!(states::states))
        .routes(routes!(analytics::stats))
        .routes(routes!(analytics::mttr))
        .routes(routes!(analytics::effectiveness))
        .routes(routes!(analytics::recommendations))
        .routes(routes!(analytics::dashboard))
        .routes(routes!(analytics::dashboard_html))
        .routes(routes!(analytics::circuit_report))
        .routes(routes!(
            analytics::patterns_read,
            analytics::patterns_record
        ))
        .routes(routes!(analytics::predict_read, analytics::predict_record))
        .routes(routes!(prevent::list))
        .routes(routes!(prevent::approve))
        .routes(routes!(prevent::reject))
        .routes(routes!(prevent::outcome))
        .routes(routes!(audit::failure))
        .routes(routes!(audit::agent))
        .routes(routes!(audit::report))
        .routes(routes!(events::page))
        .routes(routes!(events::append))
        .routes(routes!(events::import))
}

/// A router that remembers every (method, path) registered on it, described or not.
pub struct Api {
    router: OpenApiRouter<AppState>,
    registered: Vec<(String, String)>,
}

impl Api {
    fn new() -> Api {
        Api {
            router: OpenApiRouter::with_openapi(super::openapi::base()),
            registered: Vec::new(),
        }
    }

    /// Registers handlers described with `#[utoipa::path]` (`routes!(a, b)`): answered, and in
    /// the document.
    pub fn routes(mut self, routes: UtoipaMethodRouter<AppState>) -> Api {
        for (path, item) in routes.1.paths.iter() {
            for method in methods(item) {
                self.registered.push((method.to_owned(), path.clone()));
            }
        }
        self.router = self.router.routes(routes);
        self
    }

    /// Registers a plain axum route for `methods` at `path`: answered, but not described in
    /// the document (the tests fail while such a route exists).
    pub fn route(
        mut self,
        path: &str,
        methods: &[&str],
        method_router: MethodRouter<AppState>,
    ) -> Api {
        for m in methods {
            self.registered
                .push((m.to_ascii_uppercase(), path.to_owned()));
        }
        self.router = self.router.route(path, method_router);
        self
    }

    /// Every (method, path) registered, in OpenAPI's `{param}` path syntax.
    pub fn registered(&self) -> &[(String, String)] {
        &self.registered
    }

    /// The routes registered that the document does not describe (with [`Api::route`]): the
    /// tests require none.
    pub fn undocumented(&self) -> Vec<(String, String)> {
        let doc = self.router.get_openapi();
        self.registered
            .iter()
            .filter(|(m, p)| {
                !doc.paths
                    .paths
                    .get(p)
                    .is_some_and(|item| methods(item).contains(&m.as_str()))
            })
            .cloned()
            .collect()
    }

    /// The router (state still to be given) and the document.
    pub fn split_for_parts(self) -> (axum::Router<AppState>, OpenApi) {
        let (router, doc) = self.router.split_for_parts();
        (router, super::openapi::finish(doc))
    }
}

/// The methods a path item of the document describes.
pub fn methods(item: &utoipa::openapi::PathItem) -> Vec<&'static str> {
    [
        ("GET", item.get.is_some()),
        ("PUT", item.put.is_some()),
        ("POST", item.post.is_some()),
        ("DELETE", item.delete.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("HEAD", item.head.is_some()),
        ("PATCH", item.patch.is_some()),
        ("TRACE", item.trace.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(m, _)| m)
    .collect()
}

/// Every (method, path) of the server, from [`api`].
pub fn registered() -> Vec<(String, String)> {
    api().registered().to_vec()
}
