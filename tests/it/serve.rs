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

/// The guard's answers (401, 403, 413, 503) are in the document for every route it stands in
/// front of, generated from its rules (a route's own annotation need not list them), each
/// with the error body; the open probes have none of them.
#[test]
fn the_document_gives_the_guards_answers_for_every_guarded_route() {
    let doc = serde_json::to_value(healstore::serve::openapi::document()).unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().expect("responses");
            let has = |status: &str| responses.contains_key(status);
            if path == "/healthz" || path == "/readyz" {
                assert!(!has("401") && !has("403"), "{method} {path}: {op}");
                assert!(op.get("security").is_none(), "{method} {path}");
                continue;
            }
            checked += 1;
            assert!(has("401"), "{method} {path}: no 401");
            assert!(has("503"), "{method} {path}: no 503");
            assert_eq!(
                has("403"),
                method != "get",
                "{method} {path}: 403 for writes only"
            );
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.contains_key("application/json"));
            assert_eq!(
                has("413"),
                json_body,
                "{method} {path}: 413 for JSON bodies"
            );
            for status in ["401", "403", "413", "503"] {
                if let Some(r) = responses.get(status) {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
            assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
        }
    }
    assert!(checked > 30, "{checked} operations");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Generated, not annotated: `GET /v1/circuits` describes only its 200 itself.
    let circuits = &doc["paths"]["/v1/circuits"]["get"]["responses"];
    assert!(
        circuits["401"]["description"]
            .as_str()
            .unwrap()
            .contains("token")
    );
    // A route's own description of a status is kept.
    let failures = &doc["paths"]["/v1/failures"]["post"]["responses"]["503"]["description"];
    assert!(failures.as_str().unwrap().contains("busy"), "{failures}");
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
    // (what, content type, body, status, code)
    type Case<'a> = (&'a str, Option<&'a str>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
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

/// `healstore --db DB --now NOW --format json ARGS...`'s standard output.
fn cli_json(db: &std::path::Path, now: &str, args: &[&str]) -> String {
    let mut all = vec!["--now", now, "--format", "json"];
    all.extend_from_slice(args);
    common::expect_success(&common::run(db, &all))
}

/// GET `path`'s body, as text.
async fn get_text(server: &Server, path: &str) -> (u16, String) {
    let r = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// A store with a little of everything, recorded through the command line at `T`.
const T: &str = "2026-11-01T12:00:00Z";
const LATER: &str = "2026-11-01T12:10:00Z";

fn populated() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = temp_db();
    for (i, agent) in ["agent-1", "agent-1", "agent-2", "agent-3"]
        .iter()
        .enumerate()
    {
        let id = format!("f-{i}");
        let at = format!("2026-11-01T11:0{i}:00Z");
        cli_json(
            &db,
            T,
            &[
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                agent,
                "--id",
                &id,
                "--at",
                &at,
            ],
        );
    }
    cli_json(
        &db,
        T,
        &[
            "record",
            "failure",
            "--type",
            "task_timeout",
            "--task",
            "t-1",
            "--id",
            "f-t",
        ],
    );
    cli_json(
        &db,
        T,
        &[
            "record",
            "outcome",
            "--failure",
            "f-0",
            "--success",
            "--duration-ms",
            "40",
        ],
    );
    cli_json(
        &db,
        T,
        &["record", "outcome", "--failure", "f-2", "--failed"],
    );
    cli_json(&db, T, &["record", "success", "--agent", "agent-1"]);
    cli_json(
        &db,
        T,
        &[
            "record",
            "usage",
            "--resource",
            "memory",
            "--current",
            "91",
            "--limit",
            "100",
        ],
    );
    for i in 0..5 {
        let at = format!("2026-11-01T11:5{i}:00Z");
        cli_json(
            &db,
            T,
            &[
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                "agent-9",
                "--at",
                &at,
            ],
        );
    }
    (dir, db)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_read_route_answers_the_document_the_command_line_prints() {
    let (dir, db) = populated();
    let server = Server::start(&db, &["--now", LATER]);
    let page = dir.path().join("page.html");
    let page_arg = page.to_str().unwrap().to_owned();
    // (route, the command line's arguments)
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("/v1/stats", vec!["stats"]),
        ("/v1/stats?window=1h", vec!["stats", "--window", "1h"]),
        (
            "/v1/stats?since=2026-11-01T11:00:00Z&until=2026-11-01T11:30:00Z",
            vec![
                "stats",
                "--since",
                "2026-11-01T11:00:00Z",
                "--until",
                "2026-11-01T11:30:00Z",
            ],
        ),
        ("/v1/mttr", vec!["mttr"]),
        (
            "/v1/mttr?to=remediate&by=strategy&bucket=30m",
            vec![
                "mttr",
                "--to",
                "remediate",
                "--by",
                "strategy",
                "--bucket",
                "30m",
            ],
        ),
        (
            "/v1/mttr?by=failure-type",
            vec!["mttr", "--by", "failure-type"],
        ),
        ("/v1/effectiveness", vec!["effectiveness"]),
        (
            "/v1/effectiveness?min_results=1",
            vec!["effectiveness", "--min-results", "1"],
        ),
        ("/v1/recommendations", vec!["recommendations"]),
        ("/v1/dashboard", vec!["dashboard"]),
        (
            "/v1/dashboard?window=2h&flap_threshold=1",
            vec!["dashboard", "--window", "2h", "--flap-threshold", "1"],
        ),
        ("/v1/circuit-report", vec!["circuit-report"]),
        ("/v1/patterns", vec!["patterns", "--no-record"]),
        (
            "/v1/patterns?min_occurrences=2&min_confidence=0.5&sequence_gap=2h",
            vec![
                "patterns",
                "--no-record",
                "--min-occurrences",
                "2",
                "--min-confidence",
                "0.5",
                "--sequence-gap",
                "2h",
            ],
        ),
        ("/v1/predict", vec!["predict", "--no-record"]),
        (
            "/v1/predict?agent=agent-1",
            vec!["predict", "--no-record", "--agent", "agent-1"],
        ),
        ("/v1/circuits", vec!["circuits"]),
        (
            "/v1/circuits/agent-9",
            vec!["circuits", "--agent", "agent-9"],
        ),
        ("/v1/states", vec!["states"]),
        (
            "/v1/states?strategy=AgentRestart",
            vec!["states", "--strategy", "AgentRestart"],
        ),
        ("/v1/audit/failures/f-0", vec!["audit", "f-0"]),
        (
            "/v1/audit/agents/agent-1",
            vec!["audit", "--agent", "agent-1"],
        ),
        (
            "/v1/audit/report?since=2026-11-01T00:00:00Z",
            vec!["audit", "--since", "2026-11-01T00:00:00Z"],
        ),
        (
            "/v1/audit/report?since=2026-11-01T00:00:00Z&agent=agent-1",
            vec![
                "audit",
                "--since",
                "2026-11-01T00:00:00Z",
                "--agent",
                "agent-1",
            ],
        ),
        ("/v1/events?limit=5", vec!["events", "--limit", "5"]),
        (
            "/v1/events?type=failure_detected,failure_resolved&after=3&limit=100",
            vec![
                "events",
                "--type",
                "failure_detected",
                "--type",
                "failure_resolved",
                "--after",
                "3",
                "--limit",
                "100",
            ],
        ),
        (
            "/v1/events?stream=failure-f-1",
            vec!["events", "--stream", "failure-f-1"],
        ),
    ];
    for (route, args) in cases {
        let (status, body) = get_text(&server, route).await;
        assert_eq!(status, 200, "{route}: {body}");
        let cli = cli_json(&db, LATER, &args);
        assert!(!cli.trim().is_empty(), "{args:?} printed something");
        let body = if body.ends_with('\n') {
            body
        } else {
            body + "\n"
        };
        assert_eq!(body, cli, "{route} against `{}`", args.join(" "));
    }
    // The dashboard's page is the one `dashboard --html` writes.
    let (status, html) = get_text(&server, "/v1/dashboard.html").await;
    assert_eq!(status, 200);
    cli_json(&db, LATER, &["dashboard", "--html", &page_arg]);
    assert_eq!(html, std::fs::read_to_string(&page).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn record_routes_answer_as_the_command_line_and_retries_write_nothing() {
    let (_dir, db) = populated();
    let server = Server::start(&db, &["--now", LATER]);
    let before = head(&server).await;

    // A retried failure is answered as the command line answers its retry.
    let retry = json!({"failure_id": "f-0", "failure_type": "agent_down", "agent_id": "agent-1"});
    let (status, answer) = server.post_json("/v1/failures", &retry).await;
    assert_eq!(status, 200, "{answer}");
    let cli = cli_json(
        &db,
        LATER,
        &[
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "agent-1",
            "--id",
            "f-0",
        ],
    );
    assert_eq!(answer, serde_json::from_str::<Value>(&cli).unwrap());
    assert_eq!(answer["duplicate"], true);

    // An outcome reported again: the recorded one; the other result: a conflict.
    let (status, outcome) = server
        .post_json(
            "/v1/outcomes",
            &json!({"failure_id": "f-0", "success": true, "duration_ms": 40}),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["duplicate"], true);
    let cli = cli_json(
        &db,
        LATER,
        &[
            "record",
            "outcome",
            "--failure",
            "f-0",
            "--success",
            "--duration-ms",
            "40",
        ],
    );
    assert_eq!(outcome, serde_json::from_str::<Value>(&cli).unwrap());
    assert_error(
        &server
            .post_json(
                "/v1/outcomes",
                &json!({"failure_id": "f-0", "success": false}),
            )
            .await,
        409,
        "conflict",
    );
    assert_error(
        &server
            .post_json(
                "/v1/outcomes",
                &json!({"failure_id": "nobody", "success": true}),
            )
            .await,
        404,
        "not_found",
    );
    // A raw event whose failure id is recorded: the recorded answer.
    let (status, raw) = server
        .post_json(
            "/v1/raw-events",
            &json!({"type": "heartbeat_failed", "agent_id": "agent-1", "failure_id": "f-0"}),
        )
        .await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(raw["duplicate"], true);
    assert_eq!(
        server
            .post_json("/v1/raw-events", &json!({"type": "all_is_well"}))
            .await,
        (200, json!({"detected": false}))
    );
    assert_eq!(
        head(&server).await,
        before,
        "retries and non-failures wrote nothing"
    );

    // New facts are written, and answered as the command line answers them.
    let (status, healed) = server
        .post_json(
            "/v1/raw-events",
            &json!({"type": "heartbeat_failed", "agent_id": "agent-5", "failure_id": "raw-1"}),
        )
        .await;
    assert_eq!(status, 200, "{healed}");
    assert_eq!(healed["failure_id"], "raw-1");
    assert_eq!(healed["agent_id"], "agent-5");
    let (status, recovered) = server
        .post_json("/v1/recoveries", &json!({"failure_id": "raw-1"}))
        .await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["how"], "confirmed");
    let again = cli_json(&db, LATER, &["record", "recovered", "--failure", "raw-1"]);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["recovered_at"], recovered["recovered_at"]);
    let (status, signal) = server
        .post_json(
            "/v1/successes",
            &json!({"agent_id": "agent-2", "task_id": "t-9"}),
        )
        .await;
    assert_eq!(status, 200, "{signal}");
    assert!(signal["reactions"].is_array());
    let (status, usage) = server
        .post_json(
            "/v1/usage",
            &json!({"resource_type": "memory", "current": 95.0, "limit": 100.0}),
        )
        .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["permitted"], Value::Null);
    assert!(head(&server).await > before);
}

#[tokio::test(flavor = "multi_thread")]
async fn circuits_are_operated_with_a_reason_and_asked_for_permits() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let (status, opened) = server
        .post_json(
            "/v1/circuits/agent-7/open",
            &json!({"reason": "maintenance"}),
        )
        .await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["reactions"][0]["strategy"], "CircuitBreaker");
    let (_, circuits) = server.get_json("/v1/circuits/agent-7").await;
    assert_eq!(circuits["circuits"][0]["state"], "forced_open");
    let (status, permit) = server
        .post_json("/v1/circuits/agent-7/permit", &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(permit["permitted"], false);
    // Without a reason, nothing is done.
    let before = head(&server).await;
    assert_error(
        &server
            .post_json("/v1/circuits/agent-7/close", &json!({}))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &server
            .post_json("/v1/circuits/agent-7/close", &json!({"reason": "  "}))
            .await,
        422,
        "invalid_input",
    );
    assert_eq!(head(&server).await, before);
    for (command, state) in [("close", "closed"), ("reset", "closed")] {
        let (status, v) = server
            .post_json(
                &format!("/v1/circuits/agent-7/{command}"),
                &json!({"reason": "back"}),
            )
            .await;
        assert_eq!(status, 200, "{command}: {v}");
        // A circuit back at rest is not held: a 404 (it is closed).
        let (status, c) = server.get_json("/v1/circuits/agent-7").await;
        if status == 404 {
            assert_eq!(c["error"]["code"], "not_found", "{command}: {c}");
            assert_eq!(state, "closed", "{command}: {c}");
        } else {
            assert_eq!(status, 200, "{command}: {c}");
            let states: Vec<&Value> = c["circuits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| &c["state"])
                .collect();
            assert!(states == [state], "{command}: {c}");
        }
    }
    let (status, permit) = server
        .post_json("/v1/circuits/agent-7/permit", &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(permit["permitted"], true);
    let (status, tick) = server.post_json("/v1/tick", &json!({})).await;
    assert_eq!(status, 200, "{tick}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_database_admit_only_the_half_open_trial_limit() {
    // Given a circuit opened by five failures in a row, whose wait has passed,
    let (_dir, db) = temp_db();
    for i in 1..=5 {
        let at = format!("2026-11-01T12:00:0{i}Z");
        cli_json(
            &db,
            &at,
            &[
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                "a-1",
            ],
        );
    }
    let later = "2026-11-01T12:05:00Z";
    let v: Value = serde_json::from_str(&cli_json(&db, later, &["circuits"])).unwrap();
    assert_eq!(v["circuits"][0]["state"], "half_open");
    let max = v["circuits"][0]["half_open"]["max_calls"].as_u64().unwrap();
    // when two servers on the database are asked for permits at once,
    let a = Server::start(&db, &["--now", later]);
    let b = Server::start(&db, &["--now", later]);
    let empty = json!({});
    let mut asks = Vec::new();
    for i in 0..12 {
        let server = if i % 2 == 0 { &a } else { &b };
        asks.push(server.post_json("/v1/circuits/a-1/permit", &empty));
    }
    let answers = futures_util::future::join_all(asks).await;
    // then exactly the trial limit is admitted, across both.
    let mut admitted = 0;
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
        if v["permitted"] == true {
            admitted += 1;
        }
    }
    assert_eq!(admitted, max, "{answers:?}");
    drop((a, b));
    let v: Value = serde_json::from_str(&cli_json(&db, later, &["circuits"])).unwrap();
    assert_eq!(v["circuits"][0]["half_open"]["trials_started"], max);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_events_as_json_lines_are_answered_in_order_each_bad_line_on_its_own() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let body = [
        r#"{"type":"heartbeat_failed","agent_id":"a-1","failure_id":"h-1"}"#,
        "not json",
        "",
        r#"{"type":"task_timeout"}"#,
        r#"{"type":"all_is_well"}"#,
        r#"{"type":"heartbeat_failed","agent_id":"a-2","failure_id":"h-2"}"#,
    ]
    .join("\n");
    let (status, headers, text) = server
        .send_raw("POST", "/v1/heal", Some("application/x-ndjson"), body)
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "application/x-ndjson", "{text}");
    let answers: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = answers
        .iter()
        .map(|a| a["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 2, 4, 5, 6]);
    assert_eq!(answers[0]["failure_id"], "h-1", "{text}");
    assert_eq!(answers[1]["error"]["code"], "invalid_input");
    assert_eq!(answers[2]["error"]["code"], "invalid_input");
    assert_eq!(answers[3]["detected"], false);
    assert_eq!(answers[4]["failure_id"], "h-2");
    // A recorded failure id with other facts, in a later request (lines of one request are
    // healed at once: two lines of one id would race): refused on its own.
    let body = [
        r#"{"type":"heartbeat_failed","agent_id":"a-3","failure_id":"h-1"}"#,
        r#"{"type":"heartbeat_failed","agent_id":"a-1","failure_id":"h-1"}"#,
    ]
    .join("\n");
    let (_, _, text) = server
        .send_raw("POST", "/v1/heal", Some("application/x-ndjson"), body)
        .await;
    let again: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again[0]["error"]["code"], "conflict", "{text}");
    assert_eq!(again[1]["duplicate"], true, "{text}");
    // The same lines through `healstore heal` on another database: the same answers.
    let (_dir2, db2) = temp_db();
    let body = [
        r#"{"type":"heartbeat_failed","agent_id":"a-1","failure_id":"h-1"}"#,
        "not json",
    ]
    .join("\n");
    let out = common::run_with_input(
        &db2,
        &["--now", NOW, "--format", "json", "heal", "-"],
        body.as_bytes(),
    );
    let cli: Vec<Value> = common::stdout_text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cli[1], answers[1]);
    assert_eq!(cli[0]["attempts"], answers[0]["attempts"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_appended_imported_and_paged_with_the_command_lines_acknowledgements() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let line = |id: &str| {
        json!({
            "event_id": id,
            "stream_id": "s-1",
            "event_type": "test_happened",
            "occurred_at": "2026-11-01T11:00:00Z",
            "payload": {"n": id},
        })
        .to_string()
    };
    let body = format!("{}\n\n{}\n{}\n", line("e-1"), line("e-2"), line("e-1"));
    let (status, _, text) = server
        .send_raw(
            "POST",
            "/v1/events/append",
            Some("application/x-ndjson"),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    // The command line's acknowledgements of the same lines, on a copy of the empty log.
    let (_dir2, db2) = temp_db();
    common::expect_success(&common::run(&db2, &["init"]));
    cli_json(&db2, NOW, &["events"]);
    let cli = common::expect_success(&common::run_with_input(
        &db2,
        &["--now", NOW, "--format", "json", "append", "-"],
        body.as_bytes(),
    ));
    let strip = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("position");
                v
            })
            .collect()
    };
    assert_eq!(strip(&text), strip(&cli));
    let acks = strip(&text);
    assert_eq!(acks.len(), 3);
    assert_eq!(acks[2]["duplicate"], true);
    assert_eq!(acks[2]["line"], 4);

    // A bad line ends the answer with its error record; the lines before it are stored.
    let body = format!("{}\n{{\"nope\":1}}\n{}\n", line("e-3"), line("e-4"));
    let (_, _, text) = server
        .send_raw(
            "POST",
            "/v1/events/append",
            Some("application/x-ndjson"),
            body,
        )
        .await;
    let answers: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert_eq!(answers[0]["event_id"], "e-3");
    assert_eq!(answers[1]["line"], 2);
    assert_eq!(answers[1]["error"]["code"], "invalid_input");

    // Import: all or nothing, idempotent.
    let body = format!("{}\n{}\n", line("e-5"), line("e-1"));
    let (status, _, text) = server
        .send_raw(
            "POST",
            "/v1/events/import",
            Some("application/x-ndjson"),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"imported": 1, "duplicates": 1})
    );
    let before = head(&server).await;
    let bad = format!("{}\nnot an event\n", line("e-6"));
    let (status, _, text) = server
        .send_raw(
            "POST",
            "/v1/events/import",
            Some("application/x-ndjson"),
            bad,
        )
        .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let message = assert_error(&(status, v), 422, "invalid_input");
    assert!(message.contains("line 2"), "{message}");
    assert_eq!(
        head(&server).await,
        before,
        "a failed import imports nothing"
    );

    // Pages by position.
    let (_, page) = get_text(&server, "/v1/events?stream=s-1&limit=2").await;
    let first: Vec<Value> = page
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(first.len(), 2);
    let after = first[1]["position"].as_i64().unwrap();
    let (_, page) = get_text(&server, &format!("/v1/events?stream=s-1&after={after}")).await;
    let rest: Vec<Value> = page
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&Value> = first.iter().chain(&rest).map(|e| &e["event_id"]).collect();
    assert_eq!(ids, ["e-1", "e-2", "e-3", "e-5"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_on_every_kind_of_route_are_json_errors_and_change_nothing() {
    let (_dir, db) = populated();
    let server = Server::start(&db, &["--now", LATER]);
    let before_events = common::read_all(&db).await.len();
    let before = head(&server).await;
    let json_ct = Some("application/json");
    let lines_ct = Some("application/x-ndjson");
    // (method, path, content type, body, status, code)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/v1/stats?window=forever",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/stats?since=yesterday",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/stats?window=1h&since=2026-11-01T00:00:00Z",
            None,
            "",
            400,
            "bad_request",
        ),
        ("GET", "/v1/stats?colour=red", None, "", 400, "bad_request"),
        (
            "GET",
            "/v1/stats?since=2026-11-01T12:00:00Z&until=2026-11-01T11:00:00Z",
            None,
            "",
            400,
            "bad_request",
        ),
        ("GET", "/v1/mttr?to=never", None, "", 400, "bad_request"),
        ("GET", "/v1/mttr?bucket=0s", None, "", 400, "bad_request"),
        (
            "GET",
            "/v1/effectiveness?min_results=0",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/effectiveness?min_results=many",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/circuit-report?flap_threshold=-1",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/patterns?min_confidence=2",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/patterns?min_occurrences=1",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/patterns?sequence_gap=soon",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/predict?correlation_window=x",
            None,
            "",
            400,
            "bad_request",
        ),
        ("GET", "/v1/events?limit=0", None, "", 400, "bad_request"),
        ("GET", "/v1/events?after=-1", None, "", 400, "bad_request"),
        (
            "GET",
            "/v1/events?until=tomorrow",
            None,
            "",
            400,
            "bad_request",
        ),
        ("GET", "/v1/audit/report", None, "", 400, "bad_request"),
        (
            "GET",
            "/v1/audit/report?since=x",
            None,
            "",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/audit/failures/nobody",
            None,
            "",
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/outcomes",
            json_ct,
            r#"{"failure_id":"f-0"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/outcomes",
            json_ct,
            r#"{"failure_id":"nobody","success":true}"#,
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/outcomes",
            json_ct,
            r#"{"failure_id":"f-0","success":false}"#,
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/outcomes",
            json_ct,
            r#"{"failure_id":"f-0","success":true,"duration_ms":-4}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recoveries",
            json_ct,
            r#"{"failure_id":"nobody"}"#,
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/recoveries",
            json_ct,
            r#"{"failure_id":"f-3","at":"2020-01-01T00:00:00Z"}"#,
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/successes",
            json_ct,
            r#"{"task_id":"t"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/successes",
            json_ct,
            r#"{"agent_id":""}"#,
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/usage",
            json_ct,
            r#"{"resource_type":"memory","current":-1,"limit":100}"#,
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/usage",
            json_ct,
            r#"{"resource_type":"memory","current":1,"limit":0}"#,
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/usage",
            json_ct,
            r#"{"resource_type":"memory","current":"1","limit":2}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/raw-events",
            json_ct,
            r#"{"type":"task_timeout"}"#,
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/raw-events",
            json_ct,
            r#"[1,2]"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/raw-events",
            json_ct,
            r#"{"type":"heartbeat_failed","agent_id":"agent-2","failure_id":"f-0"}"#,
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/raw-events",
            None,
            r#"{"type":"heartbeat_failed"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/circuits/agent-1/open",
            json_ct,
            "{}",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/circuits/agent-1/reset",
            json_ct,
            r#"{"reason":""}"#,
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/events/append",
            json_ct,
            "{}",
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/events/import",
            lines_ct,
            "{\"event_id\":1}\n",
            422,
            "invalid_input",
        ),
        ("DELETE", "/v1/events", None, "", 405, "method_not_allowed"),
        ("GET", "/v2/stats", None, "", 404, "no_route"),
    ];
    for (method, path, ct, body, status, code) in cases {
        let (s, _, text) = server.send_raw(method, path, ct, body.to_owned()).await;
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        let message = assert_error(&(s, v), status, code);
        assert!(!message.contains('\n'), "{message}");
    }
    assert_eq!(head(&server).await, before);
    drop(server);
    assert_eq!(common::read_all(&db).await.len(), before_events);
}
