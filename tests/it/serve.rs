//! The HTTP service, through a real `healstore serve` process and a real HTTP client: every
//! route answers the document the command line prints, errors are JSON, and bad input
//! changes nothing.

use serde_json::{Value, json};

use crate::common::{self, temp_db};
use crate::serve_common::{Server, assert_error};

/// A fixed `--now`, so that answers do not depend on the wall clock.
const NOW: &str = "2026-11-01T12:00:00Z";

/// The log's head, as `/readyz` reports it.
async fn head(server: &Server) -> i64 {
    let (status, v) = server.get_json("/readyz").await;
    assert_eq!(status, 200, "{v}");
    v["head_position"].as_i64().expect("head_position")
}

#[test]
fn the_document_describes_every_route_registered() {
    let api = healstore::serve::routes::api();
    assert!(
        api.undocumented().is_empty(),
        "routes missing from /openapi.json: {:?}",
        api.undocumented()
    );
    let doc = healstore::serve::openapi::document();
    let mut described: Vec<(String, String)> = doc
        .paths
        .paths
        .iter()
        .flat_map(|(p, item)| {
            healstore::serve::routes::methods(item)
                .into_iter()
                .map(move |m| (m.to_owned(), p.clone()))
        })
        .collect();
    let mut registered = healstore::serve::routes::registered();
    described.sort();
    registered.sort();
    assert_eq!(described, registered);
    for path in ["/healthz", "/readyz", "/openapi.json", "/v1/failures"] {
        assert!(
            registered.iter().any(|(_, p)| p == path),
            "{path} is registered"
        );
    }
}

#[test]
fn a_route_without_a_description_is_caught() {
    let api = healstore::serve::routes::api().route(
        "/v1/undescribed",
        &["GET"],
        axum::routing::get(|| async { "hidden" }),
    );
    assert_eq!(
        api.undocumented(),
        vec![("GET".to_owned(), "/v1/undescribed".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_served_document_is_the_generated_one_and_every_path_in_it_is_answered() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let (status, served) = server.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let generated = serde_json::to_value(healstore::serve::openapi::document()).unwrap();
    assert_eq!(served, generated);
    assert_eq!(served["openapi"], "3.1.0");
    let paths = served["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (path, item) in paths {
        // Path parameters get a value; the request itself may be refused, but by its route.
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().expect("path item").keys() {
            let (status, _, text) = server
                .send_raw(
                    &method.to_ascii_uppercase(),
                    &concrete,
                    Some("application/json"),
                    "{}",
                )
                .await;
            assert_ne!(status, 405, "{method} {path}: {text}");
            assert!(
                !text.contains("\"no_route\""),
                "{method} {path} is described but not served: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    assert_eq!(
        server.get_json("/healthz").await,
        (200, json!({"status": "ok"}))
    );
    let (status, v) = server.get_json("/readyz").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["writer_alive"], true);
    assert_eq!(v["schema_current"], true);
    assert_eq!(v["schema_version"], healstore::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_are_json_errors() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    assert_error(&server.get_json("/v1/nothing-here").await, 404, "no_route");
    assert_error(
        &server.get_json("/v1/failures").await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_is_healed_once_and_a_retry_returns_the_first_answer() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let failure = json!({
        "failure_id": "f-1",
        "failure_type": "agent_down",
        "agent_id": "agent-1",
        "detected_at": "2026-11-01T11:59:00Z",
    });
    let (status, first) = server.post_json("/v1/failures", &failure).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["failure_id"], "f-1");
    assert_eq!(first["duplicate"], false);
    assert!(
        !first["delegated_actions"].as_array().unwrap().is_empty(),
        "{first}"
    );
    let after_first = head(&server).await;

    let (status, retry) = server.post_json("/v1/failures", &failure).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["duplicate"], true);
    for key in [
        "failure_id",
        "failure_type",
        "agent_id",
        "route",
        "attempts",
        "delegated_actions",
    ] {
        assert_eq!(retry[key], first[key], "{key}");
    }
    assert_eq!(head(&server).await, after_first, "a retry writes nothing");

    // The same id with other facts: a conflict, and nothing written.
    let mut other = failure.clone();
    other["agent_id"] = json!("agent-2");
    let message = assert_error(
        &server.post_json("/v1/failures", &other).await,
        409,
        "conflict",
    );
    assert!(message.contains("f-1"), "{message}");
    assert_eq!(head(&server).await, after_first);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_failures_are_refused_and_change_nothing() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let before = head(&server).await;
    let long = "x".repeat(300);
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "not JSON",
            Some("application/json"),
            "{".into(),
            400,
            "bad_request",
        ),
        (
            "empty body",
            Some("application/json"),
            String::new(),
            400,
            "bad_request",
        ),
        (
            "an array",
            Some("application/json"),
            "[]".into(),
            400,
            "bad_request",
        ),
        (
            "no type",
            Some("application/json"),
            r#"{"agent_id":"a"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "unknown field",
            Some("application/json"),
            r#"{"failure_type":"agent_down","colour":"red"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "type of the wrong type",
            Some("application/json"),
            r#"{"failure_type":7}"#.into(),
            400,
            "bad_request",
        ),
        (
            "unknown severity",
            Some("application/json"),
            r#"{"failure_type":"agent_down","severity":"dire"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "metadata not an object",
            Some("application/json"),
            r#"{"failure_type":"agent_down","metadata":[1]}"#.into(),
            400,
            "bad_request",
        ),
        (
            "a time that is not RFC 3339",
            Some("application/json"),
            r#"{"failure_type":"agent_down","detected_at":"yesterday"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "no content type",
            None,
            r#"{"failure_type":"agent_down"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "empty type",
            Some("application/json"),
            r#"{"failure_type":""}"#.into(),
            422,
            "invalid_input",
        ),
        (
            "an id too long",
            Some("application/json"),
            json!({"failure_type": "agent_down", "failure_id": long}).to_string(),
            422,
            "invalid_input",
        ),
        (
            "an agent too long",
            Some("application/json"),
            json!({"failure_type": "agent_down", "agent_id": long}).to_string(),
            422,
            "invalid_input",
        ),
    ];
    for (what, content_type, body, status, code) in cases {
        let (s, _, text) = server
            .send_raw("POST", "/v1/failures", content_type, body)
            .await;
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_error(&(s, v), status, code);
    }
    assert_eq!(
        head(&server).await,
        before,
        "refused requests wrote nothing"
    );
    drop(server);
    let events = common::read_all(&db).await;
    assert!(
        events
            .iter()
            .all(|e| e.event_type == "configuration_changed"),
        "only the configuration is recorded: {:?}",
        events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
}
