//! What operators watch, through a real server: `/metrics` parsed by a Prometheus-format
//! parser and checked against the store, the live event stream dropped and resumed with
//! `Last-Event-ID` while appends go on, request ids and JSON logs.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{self, read_all, temp_db};
use crate::metrics::{Parsed, assert_families, expected_from_log};
use crate::serve_common::{Server, assert_error};

const NOW: &str = "2026-11-01T12:00:00Z";

async fn scrape(server: &Server) -> Parsed {
    let r = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    Parsed::parse(&r.text().await.unwrap())
}

async fn fail(server: &Server, id: &str, kind: &str, agent: &str) {
    let (status, v) = server
        .post_json(
            "/v1/failures",
            &json!({"failure_id": id, "failure_type": kind, "agent_id": agent}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_agree_with_the_store_after_failures_and_circuit_openings() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let start = scrape(&server)
        .await
        .value("healstore_log_head_position", &[])
        .expect("the head") as i64;
    // Five failures in a row open agent-1's circuit, twice more for agent-2 (no opening), a
    // task failure.
    for i in 0..5 {
        fail(&server, &format!("f-1-{i}"), "agent_down", "agent-1").await;
    }
    for i in 0..2 {
        fail(&server, &format!("f-2-{i}"), "heartbeat_failed", "agent-2").await;
    }
    fail(&server, "f-3", "task_timeout", "agent-3").await;
    // A retry writes nothing and counts nothing.
    fail(&server, "f-3", "task_timeout", "agent-3").await;

    let parsed = scrape(&server).await;
    let all = read_all(&db).await;
    let since: Vec<_> = all.iter().filter(|e| e.position > start).cloned().collect();
    assert!(since.iter().any(|e| e.event_type == "circuit_transitioned"));
    assert_families(&parsed, &expected_from_log(&since));
    assert_eq!(
        parsed.value(
            "healstore_failures_detected_total",
            &[("failure_type", "agent_down"), ("severity", "high")]
        ),
        Some(5.0)
    );
    assert_eq!(
        parsed.value("healstore_log_head_position", &[]),
        Some(all.last().unwrap().position as f64)
    );
    assert_eq!(
        parsed.value("healstore_group_commit_events_sum", &[]),
        Some(since.len() as f64)
    );

    // Circuit states: as `healstore circuits` reads them from the log.
    let out = common::run(&db, &["--format", "json", "--now", NOW, "circuits"]);
    let circuits: Value = serde_json::from_str(&common::expect_success(&out)).unwrap();
    let circuits = circuits["circuits"].as_array().unwrap();
    assert!(
        circuits
            .iter()
            .any(|c| c["circuit"] == "agent-1" && c["state"] == "open"),
        "{circuits:?}"
    );
    for c in circuits {
        let key = c["circuit"].as_str().unwrap();
        for state in ["closed", "open", "half_open", "forced_open"] {
            let want = if c["state"] == state { 1.0 } else { 0.0 };
            assert_eq!(
                parsed.value(
                    "healstore_circuit_state",
                    &[("agent", key), ("state", state)]
                ),
                Some(want),
                "{key} {state}"
            );
        }
    }
    assert_eq!(
        parsed.value("healstore_circuits", &[("state", "open")]),
        Some(1.0)
    );

    // HTTP requests by route template and status, never a raw path.
    assert_eq!(
        parsed.value(
            "healstore_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/failures"),
                ("status", "200")
            ]
        ),
        Some(9.0)
    );
    assert!(
        parsed
            .value(
                "healstore_http_requests_total",
                &[("method", "GET"), ("route", "/metrics"), ("status", "200")]
            )
            .is_some()
    );
    server.get_json("/v1/no/such/f-1-0").await;
    let parsed = scrape(&server).await;
    assert_eq!(
        parsed.value(
            "healstore_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        Some(1.0)
    );
    let health = parsed.value("healstore_health_score", &[]).unwrap();
    assert!((0.0..=100.0).contains(&health));
}

/// One Server-Sent Event: id, event type, data.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

/// Reads events from an open stream until `n` are read (keep-alive comments skipped).
async fn read_events<B: AsRef<[u8]>>(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    buf: &mut String,
    n: usize,
) -> Vec<Sse> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, None, None);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse::<i64>().unwrap());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(v).unwrap());
                } else {
                    assert!(line.starts_with(':') || line.is_empty(), "{line:?}");
                }
            }
            if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                out.push(Sse { id, event, data });
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(60), body.next())
            .await
            .expect("an event within the deadline")
            .expect("the stream goes on")
            .unwrap();
        buf.push_str(std::str::from_utf8(chunk.as_ref()).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_resumed_with_last_event_id_misses_and_repeats_nothing() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    for i in 0..5 {
        fail(
            &server,
            &format!("a-{i}"),
            "agent_down",
            &format!("agent-{i}"),
        )
        .await;
    }
    // From position 3.
    let r = server
        .client
        .get(server.url("/v1/events/stream?after=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    let mut seen = read_events(&mut body, &mut buf, 10).await;
    // Appends go on while the client is away.
    let writer = {
        let base = server.base.clone();
        let client = server.client.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                let r = client
                    .post(format!("{base}/v1/failures"))
                    .json(&json!({"failure_id": format!("b-{i}"), "failure_type": "task_timeout", "agent_id": "agent-9"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let more = read_events(&mut body, &mut buf, 5).await;
    seen.extend(more);
    drop(body);
    let last = seen.last().unwrap().id;
    let r = server
        .client
        .get(server.url("/v1/events/stream?after=0"))
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    writer.await.unwrap();
    let log = read_all(&db).await;
    let wanted: Vec<_> = log.iter().filter(|e| e.position > 3).collect();
    let rest = read_events(&mut body, &mut buf, wanted.len() - seen.len()).await;
    seen.extend(rest);
    assert_eq!(seen.len(), wanted.len());
    for (s, e) in seen.iter().zip(&wanted) {
        assert_eq!(s.id, e.position);
        assert_eq!(s.event, e.event_type);
        // The JSON line `events --format json` prints.
        assert_eq!(s.data, serde_json::to_value(e.to_line()).unwrap());
    }
    // Nothing beyond the log (a keep-alive comment at most).
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            read_events(&mut body, &mut buf, 1)
        )
        .await
        .is_err()
    );
    // A position that is not one is refused.
    for bad in ["after=-1", "after=x", "after=1.5", "nope=1"] {
        let (status, v) = server.get_json(&format!("/v1/events/stream?{bad}")).await;
        assert_error(&(status, v), 400, "bad_request");
    }
    let r = server
        .client
        .get(server.url("/v1/events/stream"))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_a_request_id_and_json_logs_never_hold_a_token() {
    let (_dir, db) = temp_db();
    let server = Server::start_with_env(
        &db,
        &["--now", NOW, "--log-format", "json"],
        &[("RUST_LOG", "healstore=info")],
    );
    let secret = "Bearer s3cr3t-t0ken-never-logged";
    let r = server
        .client
        .get(server.url("/healthz"))
        .header("X-Request-Id", "client-chosen-42")
        .header("Authorization", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-chosen-42");
    let r = server
        .client
        .get(server.url("/v1/nothing"))
        .header("Authorization", secret)
        .send()
        .await
        .unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    // An id unfit to log is replaced.
    let r = server
        .client
        .get(server.url("/healthz"))
        .header("X-Request-Id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "x".repeat(500).as_str());

    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let answered = |id: &str| {
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "request answered" && l["span"]["request_id"] == id)
    };
    assert!(answered("client-chosen-42"), "{stderr}");
    assert!(answered(&made), "{stderr}");
}
