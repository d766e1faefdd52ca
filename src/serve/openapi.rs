//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa): every route
//! registered through [`super::routes::api`] with `routes!` is in it, with its parameters,
//! bodies and answers. Served at `/openapi.json`.

use std::sync::OnceLock;

use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;

use super::error::{ErrorBody, ErrorDetail};

/// The document's fixed parts; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "healstore",
        description = "The healstore command line's JSON contract over HTTP: record failures \
                       and signals, operate circuits, read analytics, audits and events. Every \
                       success answer is the document `healstore ... --format json` prints; \
                       every error is `{\"error\":{\"code\":..,\"message\":..}}`."
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct Base;

/// The fixed parts of the document (title, version, shared schemas).
pub fn base() -> Document {
    Base::openapi()
}

/// The document once every route is in: the version is the binary's, and every route the
/// guard stands in front of ([`super::guard`]) gets the answers the guard gives, from the
/// guard's own rules: 401 (no valid token, when the server has tokens), 403 (a read token on
/// a route that writes), 413 (a JSON body over `--max-body`), 503 (over `--max-concurrent`,
/// past `--request-timeout`, or stopping), each with the error body; and the bearer scheme.
pub(super) fn finish(mut doc: Document) -> Document {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for (path, item) in doc.paths.paths.iter_mut() {
        if super::guard::OPEN_PATHS.contains(&path.as_str()) {
            continue;
        }
        let operations = [
            (axum::http::Method::GET, &mut item.get),
            (axum::http::Method::PUT, &mut item.put),
            (axum::http::Method::POST, &mut item.post),
            (axum::http::Method::DELETE, &mut item.delete),
            (axum::http::Method::PATCH, &mut item.patch),
            (axum::http::Method::HEAD, &mut item.head),
        ];
        for (method, op) in operations {
            let Some(op) = op else { continue };
            let json_body = op.request_body.as_ref().is_some_and(|b| match b {
                utoipa::openapi::RefOr::T(b) => !b.content.keys().any(|ct| {
                    let mut h = axum::http::HeaderMap::new();
                    h.insert(
                        axum::http::header::CONTENT_TYPE,
                        axum::http::HeaderValue::from_str(ct)
                            .unwrap_or(axum::http::HeaderValue::from_static("")),
                    );
                    super::guard::is_json_lines(&h)
                }),
                utoipa::openapi::RefOr::Ref(_) => true,
            });
            let mut add = |status: u16, description: &str| {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(description).into());
            };
            add(
                401,
                "No valid token (`Authorization: Bearer TOKEN`), when the server has tokens; \
                 with `WWW-Authenticate: Bearer`",
            );
            if !super::guard::Role::Read.allows(&method) {
                add(403, "A read token: this route needs a write token");
            }
            if json_body {
                add(
                    413,
                    "The body is longer than the server takes (`--max-body`)",
                );
            }
            add(
                503,
                "Retry later (`Retry-After`): the server is answering as many requests as it \
                 serves at once (`overloaded`), the request took too long (`timeout`), the \
                 database is busy (`retry_later`) or the server is stopping (`closed`)",
            );
            op.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
        }
    }
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    doc
}

/// The name of the bearer token scheme in the document.
const BEARER: &str = "bearer";

/// An answer with the error body.
fn error_response(description: &str) -> utoipa::openapi::Response {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The whole document, built once from [`super::routes::api`].
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| super::routes::api().split_for_parts().1)
}

/// Declares a schema named `$name` for a JSON document whose shape is the command line's
/// (`healstore ... --format json`, documented in the README): an object, described.
#[macro_export]
#[doc(hidden)]
macro_rules! __serve_document {
    ($(#[$meta:meta])* $name:ident, $description:expr) => {
        $(#[$meta])*
        pub struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Object)
                    .description(Some($description))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}
pub use crate::__serve_document as document_schema;

document_schema!(
    /// A heal's answer.
    HealAnswer,
    "A heal's answer, as `healstore record failure --format json` prints it: failure_id, \
     failure_type, agent_id, duplicate, route, attempts, delegated_actions, result. A raw \
     event that is no failure is answered `{\"detected\":false}`."
);
document_schema!(
    /// A signal's answer.
    SignalAnswer,
    "What a signal changed, as `healstore record success|usage`, `circuit ...` and `tick` \
     print it with --format json: reactions, permitted (a permit: whether the call is \
     admitted), recovered (a success: the failures it recovered)"
);
document_schema!(
    /// An outcome's answer.
    OutcomeAnswer,
    "The outcome recorded, as `healstore record outcome --format json` prints it: failure_id, \
     strategy, success, duration_ms, time_to_remediate_ms, duplicate"
);
document_schema!(
    /// A recovery's answer.
    RecoveryAnswer,
    "The recovery recorded (or found recorded), as `healstore record recovered --format json` \
     prints it: failure_id, how, recovered_at, time_to_recover_ms, duplicate"
);
document_schema!(
    /// The circuits.
    CircuitsAnswer,
    "`healstore circuits --format json`: {\"circuits\": [each breaker's state with agent_id]}"
);
document_schema!(
    /// The strategy states.
    StatesAnswer,
    "`healstore states --format json`: {\"states\": [{strategy, key, version, state}]}"
);
document_schema!(
    /// An analytics document.
    AnalyticsAnswer,
    "The document the analytics command of the same name prints with --format json (stats, \
     mttr, effectiveness, recommendations, dashboard, circuit-report, patterns, predict); \
     see the README"
);
document_schema!(
    /// An import's answer.
    ImportAnswer,
    "`healstore import --format json`: imported, duplicates"
);
document_schema!(
    /// JSON Lines.
    JsonLines,
    "JSON Lines (application/x-ndjson): one JSON document a line, written as it is ready. A \
     stream that fails after its answer began ends with an error record \
     {\"error\":{\"code\":..,\"message\":..}}"
);
