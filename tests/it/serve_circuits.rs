//! The HTTP API's outcomes, recoveries, signals, raw events and circuits, through a real
//! `healstore serve` process: each answer is the command line's `--format json` document.

use serde_json::{Value, json};

use crate::common::{assert_same_files, db_files, expect_success, run, temp_db};
use crate::serve_common::{Server, assert_error};

const NOW: &str = "2026-11-01T12:00:00Z";

/// A heal's answer without `result.duration_ms` (the time the heal took: the wall clock's).
fn timeless(mut answer: Value) -> Value {
    if let Some(r) = answer.get_mut("result").and_then(Value::as_object_mut) {
        r.remove("duration_ms");
    }
    answer
}

/// The database's files once the background checkpointer has copied the last commits into
/// the main file (unchanged for a second; bounded): bytes to compare before and after
/// requests that must write nothing.
fn settled_files(db: &std::path::Path) -> crate::common::DbFiles {
    // The files must stay the same for a whole second: the background checkpoint that follows
    // a commit can come later than one sample on a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = db_files(db);
    let mut still = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = db_files(db);
        still = if now == last { still + 1 } else { 0 };
        if still >= 10 || std::time::Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// `healstore --now NOW --format json ARGS` on `db`, its document.
fn cli_json(db: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["--now", NOW, "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&expect_success(&run(db, &all))).expect("a JSON document")
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_and_raw_events_answer_like_the_command_line() {
    let (_d1, cli_db) = temp_db();
    let (_d2, db) = temp_db();
    let raw = r#"{"type":"heartbeat_failed","agent_id":"a-7","failure_id":"raw-1"}"#;
    let cli = [
        timeless(cli_json(
            &cli_db,
            &[
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                "a-1",
                "--id",
                "f-1",
            ],
        )),
        cli_json(
            &cli_db,
            &[
                "record",
                "outcome",
                "--failure",
                "f-1",
                "--success",
                "--duration-ms",
                "40",
            ],
        ),
        cli_json(&cli_db, &["record", "recovered", "--failure", "f-1"]),
        cli_json(&cli_db, &["record", "success", "--agent", "a-1"]),
        cli_json(
            &cli_db,
            &[
                "record",
                "usage",
                "--resource",
                "memory",
                "--current",
                "95",
                "--limit",
                "100",
            ],
        ),
        timeless(cli_json(&cli_db, &["record", "event", "--json", raw])),
        cli_json(
            &cli_db,
            &["record", "event", "--json", r#"{"type":"all_good"}"#],
        ),
    ];
    let server = Server::start(&db, &["--now", NOW]);
    let mut answers = Vec::new();
    for (path, body) in [
        (
            "/v1/failures",
            json!({"failure_type": "agent_down", "agent_id": "a-1", "failure_id": "f-1"}),
        ),
        (
            "/v1/outcomes",
            json!({"failure_id": "f-1", "success": true, "duration_ms": 40}),
        ),
        ("/v1/recoveries", json!({"failure_id": "f-1"})),
        ("/v1/successes", json!({"agent_id": "a-1"})),
        (
            "/v1/usage",
            json!({"resource_type": "memory", "current": 95.0, "limit": 100.0}),
        ),
        ("/v1/raw-events", serde_json::from_str(raw).unwrap()),
        ("/v1/raw-events", json!({"type": "all_good"})),
    ] {
        let (status, v) = server.post_json(path, &body).await;
        assert_eq!(status, 200, "{path}: {v}");
        answers.push(timeless(v));
    }
    for (i, (served, printed)) in answers.iter().zip(&cli).enumerate() {
        assert_eq!(served, printed, "answer {i}");
    }
    assert_eq!(answers[6], json!({"detected": false}));

    // An outcome recorded again the same way is the recorded one; the other way, a conflict.
    let before = settled_files(&db);
    let (status, again) = server
        .post_json(
            "/v1/outcomes",
            &json!({"failure_id": "f-1", "success": true, "duration_ms": 40}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_error(
        &server
            .post_json(
                "/v1/outcomes",
                &json!({"failure_id": "f-1", "success": false}),
            )
            .await,
        409,
        "conflict",
    );
    assert_same_files(
        &before,
        &settled_files(&db),
        "a repeated and a contradicting outcome",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signals_are_json_errors_and_change_nothing() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let (status, _) = server
        .post_json(
            "/v1/failures",
            &json!({"failure_type": "agent_down", "agent_id": "a"}),
        )
        .await;
    assert_eq!(status, 200);
    let before = settled_files(&db);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/outcomes",
            json!({"failure_id": "nope", "success": true}),
            404,
            "not_found",
        ),
        (
            "/v1/outcomes",
            json!({"failure_id": "x"}),
            400,
            "bad_request",
        ),
        (
            "/v1/outcomes",
            json!({"failure_id": "x", "success": "yes"}),
            400,
            "bad_request",
        ),
        (
            "/v1/recoveries",
            json!({"failure_id": "nope"}),
            404,
            "not_found",
        ),
        (
            "/v1/successes",
            json!({"agent_id": ""}),
            422,
            "invalid_input",
        ),
        (
            "/v1/successes",
            json!({"agent_id": "a", "at": "later"}),
            400,
            "bad_request",
        ),
        (
            "/v1/usage",
            json!({"resource_type": "cpu", "current": -1.0, "limit": 1.0}),
            422,
            "invalid_input",
        ),
        (
            "/v1/usage",
            json!({"resource_type": "cpu", "current": 1.0, "limit": 0.0}),
            422,
            "invalid_input",
        ),
        (
            "/v1/usage",
            json!({"resource_type": "", "current": 1.0, "limit": 2.0}),
            422,
            "invalid_input",
        ),
        ("/v1/raw-events", json!([1, 2]), 400, "bad_request"),
        (
            "/v1/raw-events",
            json!({"type": "heartbeat_failed", "agent_id": ""}),
            422,
            "invalid_input",
        ),
        ("/v1/circuits/a/open", json!({}), 400, "bad_request"),
        (
            "/v1/circuits/a/close",
            json!({"reason": "  "}),
            422,
            "invalid_input",
        ),
        (
            "/v1/circuits/a/reset",
            json!({"reason": "r", "extra": 1}),
            400,
            "bad_request",
        ),
    ];
    for (path, body, status, code) in cases {
        let answer = server.post_json(path, &body).await;
        assert_error(&answer, status, code);
    }
    assert_same_files(&before, &settled_files(&db), "refused signals");
}

#[tokio::test(flavor = "multi_thread")]
async fn circuits_are_listed_and_operated_like_the_command_line() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    for i in 0..5 {
        let (status, v) = server
            .post_json("/v1/failures", &json!({"failure_type": "agent_down", "agent_id": "a-1", "failure_id": format!("f-{i}")}))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, list) = server.get_json("/v1/circuits").await;
    assert_eq!(status, 200);
    let (_, one) = server.get_json("/v1/circuits/a-1").await;
    assert_eq!(one["circuits"][0]["agent_id"], "a-1");
    assert_eq!(one["circuits"][0]["state"], "open", "{one}");
    // No circuit held for an agent: a 404, as the command line says it (an error).
    let none = server.get_json("/v1/circuits/nobody").await;
    let message = assert_error(&none, 404, "not_found");
    assert!(message.contains("\"nobody\""), "{message}");
    let (status, permit) = server
        .post_json("/v1/circuits/a-1/permit", &json!(null))
        .await;
    assert_eq!(status, 200, "{permit}");
    assert_eq!(
        permit["permitted"], false,
        "an open circuit rejects: {permit}"
    );
    let (status, closed) = server
        .post_json("/v1/circuits/a-2/open", &json!({"reason": "maintenance"}))
        .await;
    assert_eq!(status, 200, "{closed}");
    let (_, after) = server.get_json("/v1/circuits").await;
    drop(server);

    // The same store, read by the command line at the same instant.
    let cli = cli_json(&db, &["circuits"]);
    assert_eq!(after, cli);
    let out = run(&db, &["--now", NOW, "circuits", "--agent", "nobody"]);
    assert_eq!(
        crate::common::expect_error(&out, "healstore: error: ")
            .trim_start_matches("healstore: error: "),
        message
    );
    assert_ne!(list, after, "the forced-open circuit is listed");
    let (_d, cli_db) = temp_db();
    let cli_open = cli_json(
        &cli_db,
        &[
            "circuit",
            "open",
            "--agent",
            "a-2",
            "--reason",
            "maintenance",
        ],
    );
    assert_eq!(closed, cli_open);
}

/// The half-open trial limit holds across two servers on one database: of many permits asked
/// of both, as many are admitted as the limit allows.
#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_the_half_open_trial_limit() {
    let (_dir, db) = temp_db();
    {
        let server = Server::start(&db, &["--now", NOW]);
        for i in 0..5 {
            let (status, v) = server
                .post_json("/v1/failures", &json!({"failure_type": "agent_down", "agent_id": "a-1", "failure_id": format!("f-{i}")}))
                .await;
            assert_eq!(status, 200, "{v}");
        }
        let (_, one) = server.get_json("/v1/circuits/a-1").await;
        assert_eq!(one["circuits"][0]["state"], "open", "{one}");
    }
    // Past the open wait (60 s by default): the circuit lets trial calls through.
    let later = "2026-11-01T12:05:00Z";
    let a = Server::start(&db, &["--now", later]);
    let b = Server::start(&db, &["--now", later]);
    let mut admitted = 0;
    for i in 0..8 {
        let server = if i % 2 == 0 { &a } else { &b };
        let (status, v) = server
            .post_json("/v1/circuits/a-1/permit", &json!(null))
            .await;
        assert_eq!(status, 200, "{v}");
        if v["permitted"] == true {
            admitted += 1;
        }
    }
    let (_, one) = a.get_json("/v1/circuits/a-1").await;
    let max_calls = one["circuits"][0]["half_open"]["max_calls"]
        .as_i64()
        .expect("max_calls");
    assert_eq!(one["circuits"][0]["state"], "half_open", "{one}");
    assert_eq!(admitted, max_calls, "admitted across both servers");
}

/// `POST /v1/heal` answers JSON Lines of raw events line by line, in order, with the records
/// `healstore heal --format json` writes: heals, events that are no failure, and lines
/// refused on their own while the stream goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_lines_heal_answers_each_line_like_the_command_line() {
    let input = [
        r#"{"type":"heartbeat_failed","agent_id":"a-1","failure_id":"h-1"}"#,
        "not json",
        "",
        r#"{"type":"all_good"}"#,
        r#"{"type":"heartbeat_failed","agent_id":""}"#,
        r#"{"type":"task_timeout","agent_id":"a-2","task_id":"t-1","failure_id":"h-2"}"#,
        r#"{"type":"heartbeat_failed","agent_id":"a-1","failure_id":"h-1"}"#,
    ]
    .join("\n");
    let (_d1, cli_db) = temp_db();
    let out = crate::common::run_with_input(
        &cli_db,
        &["--now", NOW, "--format", "json", "heal"],
        input.as_bytes(),
    );
    let printed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| timeless(serde_json::from_str(l).unwrap()))
        .collect();
    let (_d2, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let (status, headers, text) = server
        .send_raw(
            "POST",
            "/v1/heal",
            Some("application/x-ndjson"),
            input.clone(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let served: Vec<Value> = text
        .lines()
        .map(|l| timeless(serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(served.len(), 6, "one record per non-blank line: {text}");
    assert_eq!(served, printed);
    let lines: Vec<i64> = served.iter().map(|v| v["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [1, 2, 4, 5, 6, 7]);
    assert_eq!(served[1]["error"]["code"], "invalid_input");
    assert_eq!(served[2]["detected"], false);
    assert_eq!(served[5]["duplicate"], true, "a line repeated heals once");
}
