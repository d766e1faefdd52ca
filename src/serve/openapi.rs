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

/// The document once every route is in: the version is the binary's.
pub(super) fn finish(mut doc: Document) -> Document {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
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
