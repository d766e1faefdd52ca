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
