//! `verify`: the hash chain, the triggers, the position counter, the read models and the
//! snapshots, against alterations made behind healstore's back with plain SQL (as with the
//! sqlite3 shell after dropping a trigger), and the chain computed for a database upgraded
//! from before it existed.

use std::path::Path;

use crate::common::{block_on, expect_success, raw_connection, run, temp_db};

/// A database with a healed history: a short demo run.
fn healed_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, path) = temp_db();
    expect_success(&run(
        &path,
        &[
            "--now",
            "2026-11-01T12:00:00Z",
            "demo",
            "--ticks",
            "30",
            "--seed",
            "5",
        ],
    ));
    // A checkpoint exists: the snapshots are checked too.
    let n: i64 = sql_scalar(&path, "SELECT COUNT(*) FROM strategy_snapshots");
    assert!(n > 0, "the demo leaves snapshots");
    (dir, path)
}

fn sql(path: &Path, statements: &[&str]) {
    block_on(async {
        let mut c = raw_connection(path).await;
        for s in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    })
}

fn sql_scalar(path: &Path, q: &str) -> i64 {
    block_on(async {
        let mut c = raw_connection(path).await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(q.to_string()))
            .fetch_one(&mut c)
            .await
            .unwrap()
    })
}

/// Runs `verify --format json`; the exit code and the report.
fn verify(path: &Path) -> (i32, serde_json::Value) {
    let out = run(path, &["--format", "json", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "verify failed to run ({code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        code,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

#[test]
fn an_untouched_database_verifies() {
    let (_dir, path) = healed_db();
    let (code, r) = verify(&path);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ok"], true);
    let events = sql_scalar(&path, "SELECT COUNT(*) FROM events");
    assert_eq!(r["events"], events);
    for c in [
        "integrity",
        "triggers",
        "chain",
        "counter",
        "read_models",
        "snapshots",
    ] {
        assert_eq!(check(&r, c)["ok"], true, "{c}: {r}");
    }
    // Verifying twice gives the same commitment to the whole log.
    let (_, again) = verify(&path);
    assert_eq!(again["head_hash"], r["head_hash"]);
    let table = expect_success(&run(&path, &["verify"]));
    assert!(table.contains("verified:"), "{table}");
}

#[test]
fn an_altered_event_is_named_by_position() {
    let (_dir, path) = healed_db();
    sql(
        &path,
        &[
            "DROP TRIGGER events_refuse_update",
            "UPDATE events SET payload = json_set(payload, '$.reason', 'forged') WHERE position = 25",
        ],
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1);
    let chain = check(&r, "chain");
    assert_eq!(chain["ok"], false);
    assert_eq!(chain["position"], 25);
    assert!(
        chain["detail"]
            .as_str()
            .unwrap()
            .contains("does not match its hash")
    );
    assert_eq!(
        check(&r, "triggers")["ok"],
        false,
        "the dropped trigger is reported"
    );
    let text = String::from_utf8_lossy(&run(&path, &["verify"]).stdout).into_owned();
    assert!(
        text.contains("NOT verified: chain at position 25"),
        "{text}"
    );
}

#[test]
fn a_timestamp_changed_without_touching_the_payload_is_caught() {
    let (_dir, path) = healed_db();
    sql(
        &path,
        &[
            "DROP TRIGGER events_refuse_update",
            "UPDATE events SET occurred_at = occurred_at + 1 WHERE position = 7",
            // The trigger is put back as it was: only the chain can tell.
            "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; UPDATE refused');
END",
        ],
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "triggers")["ok"], true);
    assert_eq!(check(&r, "chain")["position"], 7);
}

#[test]
fn a_removed_event_is_named() {
    let (_dir, path) = healed_db();
    sql(
        &path,
        &[
            "DROP TRIGGER events_refuse_delete",
            "DELETE FROM events WHERE position = 12",
        ],
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1);
    let chain = check(&r, "chain");
    assert_eq!(chain["position"], 12);
    assert!(
        chain["detail"].as_str().unwrap().contains("was removed"),
        "{chain}"
    );
}

#[test]
fn removing_the_newest_events_is_caught_by_the_counter() {
    let (_dir, path) = healed_db();
    let last = sql_scalar(&path, "SELECT MAX(position) FROM events");
    sql(
        &path,
        &[
            "DROP TRIGGER events_refuse_delete",
            &format!("DELETE FROM events WHERE position > {}", last - 3),
        ],
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1);
    assert_eq!(
        check(&r, "chain")["ok"],
        true,
        "the rest of the chain is intact"
    );
    let counter = check(&r, "counter");
    assert_eq!(counter["ok"], false);
    assert_eq!(counter["position"], last - 2);
}

#[test]
fn an_inserted_event_is_named() {
    let (_dir, path) = healed_db();
    let last = sql_scalar(&path, "SELECT MAX(position) FROM events");
    // INSERT is not refused by a trigger (appends are legitimate); one without healstore's
    // chain is still caught.
    sql(
        &path,
        &[&format!(
            "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, \
             schema_version, occurred_at, recorded_at, payload) VALUES \
             ({}, 'forged-1', 'forged', 1, 'failure_resolved', 1, 0, 0, '{{}}')",
            last + 1
        )],
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1);
    let chain = check(&r, "chain");
    assert_eq!(chain["position"], last + 1);
    assert!(
        chain["detail"].as_str().unwrap().contains("no hash"),
        "{chain}"
    );
    // And appending after it goes on, but the forged event stays reported.
    expect_success(&run(
        &path,
        &[
            "--now",
            "2026-11-01T13:00:00Z",
            "record",
            "success",
            "--agent",
            "agent-1",
        ],
    ));
    let (code, r) = verify(&path);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "chain")["position"], last + 1);
}

#[test]
fn altered_read_models_and_snapshots_are_caught() {
    let (_dir, path) = healed_db();
    sql(
        &path,
        &["UPDATE failures SET remediate_us = remediate_us + 1 WHERE remediated_at IS NOT NULL"],
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1);
    let rm = check(&r, "read_models");
    assert_eq!(rm["ok"], false);
    assert!(rm["detail"].as_str().unwrap().contains("failures"), "{rm}");
    assert_eq!(check(&r, "chain")["ok"], true);
    // `rebuild` repairs them.
    expect_success(&run(&path, &["rebuild"]));
    assert_eq!(verify(&path).0, 0);

    let (_dir2, path2) = healed_db();
    sql(
        &path2,
        &[
            "UPDATE strategy_snapshots SET state = json_set(state, '$.forged', 1) \
           WHERE rowid = (SELECT MIN(rowid) FROM strategy_snapshots)",
        ],
    );
    let (code, r) = verify(&path2);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "snapshots")["ok"], false, "{r}");
}

#[test]
fn a_database_from_before_the_chain_gets_it_on_upgrade() {
    let (_dir, path) = healed_db();
    let (_, before) = verify(&path);
    // Make it look like a schema-3 database: no hashes, no anchor, no snapshots at rest, no
    // record of migrations 4 on (nor the table of migration 8), the last migration undone
    // first.
    block_on(crate::common::run_sql(
        &path,
        &crate::common::undo_v10_statements(),
    ));
    sql(
        &path,
        &[
            "DROP INDEX strategy_snapshots_in_use",
            "ALTER TABLE strategy_snapshots DROP COLUMN at_rest",
            "ALTER TABLE strategy_checkpoints DROP COLUMN snapshots",
            "DROP TRIGGER rm_circuit_transitioned",
            "DROP TABLE circuit_transitions",
            "DROP TRIGGER events_refuse_update",
            "ALTER TABLE events DROP COLUMN hash",
            "DROP TABLE chain_anchor",
            "DROP TABLE archived_streams",
            "DROP TABLE archived_facts",
            "DELETE FROM refinery_schema_history WHERE version >= 4",
            "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; UPDATE refused');
END",
        ],
    );
    // Opening it migrates and computes the chain over the stored events.
    let (code, after) = verify(&path);
    assert_eq!(code, 0, "{after}");
    assert_eq!(
        after["head_hash"], before["head_hash"],
        "the same chain as when written"
    );
}
