//! `healstore serve` on PostgreSQL: a real server records failures, answers permits and
//! readiness, counts the log in its metrics (other processes' commits included), and refuses
//! the analytics routes, which need the read models.

use std::path::Path;

use serde_json::json;

use super::PgDb;
use crate::common::{expect_success, healstore};
use crate::serve_common::{Server, assert_error};

const NOW: &str = "2026-11-01T12:00:00Z";

#[tokio::test]
async fn a_server_on_postgres_records_failures_answers_permits_and_counts_the_log() {
    let db = PgDb::new().await;
    let url = Path::new(&db.url);
    let server = Server::start(url, &["--now", NOW]);
    let (status, ready) = server.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["schema_current"], true, "{ready}");

    // Five failures in a row open agent a-1's circuit; a permit is then rejected.
    for i in 1..=5 {
        let (status, answer) = server
            .post_json(
                "/v1/failures",
                &json!({"failure_type": "agent_down", "agent_id": "a-1", "failure_id": format!("F{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["failure_id"], format!("F{i}"), "{answer}");
    }
    let (status, permit) = server
        .post_json("/v1/circuits/a-1/permit", &json!({}))
        .await;
    assert_eq!(status, 200, "{permit}");
    assert_eq!(permit["permitted"], false, "{permit}");
    let (_, other) = server
        .post_json("/v1/circuits/b-1/permit", &json!({}))
        .await;
    assert_eq!(other["permitted"], true, "{other}");
    // A retried record is answered with the first answer.
    let (status, again) = server
        .post_json(
            "/v1/failures",
            &json!({"failure_type": "agent_down", "agent_id": "a-1", "failure_id": "F1"}),
        )
        .await;
    assert_eq!(
        (status, &again["duplicate"]),
        (200, &json!(true)),
        "{again}"
    );

    // Another process's failure is counted by the server's tail (woken by NOTIFY).
    expect_success(
        &healstore(url)
            .args([
                "--now",
                NOW,
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                "c-1",
            ])
            .output()
            .unwrap(),
    );
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("healstore_failures_detected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 6.0, "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("healstore_circuit") && l.contains("a-1")),
        "the circuits from the healer's memory: {metrics}"
    );

    // The analytics need the read models: refused, not a crash.
    let stats = server.get_json("/v1/stats").await;
    assert_error(&stats, 501, "not_yet_available");
    let (status, _) = server.get_json("/readyz").await;
    assert_eq!(status, 200);
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{stderr}");
}
