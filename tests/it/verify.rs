//! `verify`: the hash chain, the triggers, the position counter, the read models and the
//! snapshots, against alterations made behind healstore's back with plain SQL (as with the
//! sqlite3 shell after dropping a trigger), and the chain computed for a database upgraded
//! from before it existed.

use std::path::{Path, PathBuf};

use crate::common::{
    Rng, assert_same_files, block_on, db_files, expect_error, expect_success, raw_connection, run,
    stderr_text, temp_db,
};

/// A database with a healed history: a short demo run.
fn healed_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, path) = temp_db();
    expect_success(&run(
        &path,
        &[
            // 30 ticks of 5 s ending at --now: 12:00:00 to 12:02:30.
            "--now",
            "2026-11-01T12:02:30Z",
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
    verify_with(path, &[])
}

/// Runs `verify --format json` with more arguments; the exit code and the report.
fn verify_with(path: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut argv = vec!["--format", "json", "verify"];
    argv.extend_from_slice(args);
    let out = run(path, &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "verify failed to run ({code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stderr_text(&out).contains("panicked"),
        "verify panicked: {}",
        stderr_text(&out)
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
        "schema",
        "chain",
        "payloads",
        "counter",
        "read_models",
        "snapshots",
    ] {
        assert_eq!(check(&r, c)["ok"], true, "{c}: {r}");
    }
    // Verifying twice gives the same commitment to the whole log.
    let (_, again) = verify(&path);
    assert_eq!(again["head_hash"], r["head_hash"]);
    assert_eq!(r["head_position"], r["last_position"]);
    let table = expect_success(&run(&path, &["verify"]));
    let head = format!(
        "head {}:{}",
        r["head_position"],
        r["head_hash"].as_str().unwrap()
    );
    assert!(
        table.contains("verified:") && table.contains(&head),
        "{table}"
    );
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

// ---------------------------------------------------------------------------------------------
// Tampering that keeps the chain intact, and files that are not healstore's.
// ---------------------------------------------------------------------------------------------

/// The append-only trigger on UPDATE exactly as healstore creates it, to put back after a
/// forgery (so that only the other checks can tell).
const REFUSE_UPDATE: &str = "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; UPDATE refused');
END";

/// The append-only trigger on DELETE exactly as healstore creates it.
const REFUSE_DELETE: &str = "CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'healstore: the event log is append-only; DELETE refused');
END";

/// A healed database folded into its main file (no write-ahead log), so that copies of it
/// are cheap.
fn healed_file() -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = healed_db();
    sql(&path, &["PRAGMA wal_checkpoint(TRUNCATE)"]);
    (dir, path)
}

/// A copy of `src` (its main file) next to it, named `name`.
fn copy_of(src: &Path, name: &str) -> PathBuf {
    let dest = src.with_file_name(format!("{name}.db"));
    std::fs::copy(src, &dest).unwrap();
    dest
}

fn sql_opt(path: &Path, q: &str) -> Option<i64> {
    block_on(async {
        let mut c = raw_connection(path).await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(q.to_string()))
            .fetch_one(&mut c)
            .await
            .unwrap()
    })
}

/// The failed checks of a report.
fn failed(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect()
}

/// The lowest position a failed check names.
fn first_bad_position(report: &serde_json::Value) -> Option<i64> {
    failed(report)
        .iter()
        .filter_map(|c| c["position"].as_i64())
        .min()
}

fn successful_healings(path: &Path) -> i64 {
    let text = expect_success(&run(
        path,
        &[
            "--format",
            "json",
            "stats",
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2028-01-01T00:00:00Z",
        ],
    ));
    let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
    stats["successful_healings"].as_i64().unwrap()
}

#[test]
fn a_failed_healing_forged_into_a_success_is_named_by_position_and_column() {
    let (_dir, path) = healed_db();
    let forged = sql_opt(
        &path,
        "SELECT MIN(position) FROM events WHERE event_type = 'healing_completed' AND success = 0",
    )
    .expect("the demo records a failed healing");
    let before = successful_healings(&path);
    // The indexed copy of the payload's `success` is rewritten; the payload (which the chain
    // covers) is not, and the read models are rebuilt from the forged columns.
    sql(
        &path,
        &[
            "DROP TRIGGER events_refuse_update",
            "UPDATE events SET success = 1 WHERE event_type = 'healing_completed'",
            REFUSE_UPDATE,
        ],
    );
    expect_success(&run(&path, &["rebuild"]));
    assert!(
        successful_healings(&path) > before,
        "the forgery reaches the statistics"
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1, "{r}");
    assert_eq!(check(&r, "chain")["ok"], true, "the chain is intact: {r}");
    let payloads = check(&r, "payloads");
    assert_eq!(payloads["ok"], false, "{r}");
    assert_eq!(payloads["position"], forged, "{r}");
    let detail = payloads["detail"].as_str().unwrap();
    assert!(detail.contains("success"), "{detail}");
    let text = String::from_utf8_lossy(&run(&path, &["verify"]).stdout).into_owned();
    assert!(
        text.contains(&format!("NOT verified: payloads at position {forged}")),
        "{text}"
    );
}

#[test]
fn every_indexed_column_is_checked_against_its_payload() {
    let (_dir, src) = healed_file();
    for (column, forge) in [
        ("failure_id", "failure_id = 'forged'"),
        ("agent_id", "agent_id = 'agent-forged'"),
        ("failure_type", "failure_type = 'forged'"),
        ("strategy", "strategy = 'Forged'"),
        ("success", "success = 1 - success"),
        ("duration_ms", "duration_ms = duration_ms + 1"),
        ("duration_ms", "duration_ms = NULL"),
    ] {
        let path = copy_of(&src, column);
        let at = sql_opt(
            &path,
            &format!("SELECT MIN(position) FROM events WHERE {column} IS NOT NULL"),
        )
        .unwrap_or_else(|| panic!("no event with a {column}"));
        sql(
            &path,
            &[
                "DROP TRIGGER events_refuse_update",
                &format!("UPDATE events SET {forge} WHERE position = {at}"),
                REFUSE_UPDATE,
            ],
        );
        let (code, r) = verify(&path);
        assert_eq!(code, 1, "{forge}: {r}");
        let payloads = check(&r, "payloads");
        assert_eq!(payloads["position"], at, "{forge}: {r}");
        assert!(
            payloads["detail"].as_str().unwrap().contains(column),
            "{forge}: {payloads}"
        );
        std::fs::remove_file(&path).unwrap();
    }
    // A column filled in where the payload has no such field.
    let path = copy_of(&src, "filled");
    let at = sql_opt(
        &path,
        "SELECT MIN(position) FROM events WHERE agent_id IS NULL",
    )
    .expect("an event without an agent");
    sql(
        &path,
        &[
            "DROP TRIGGER events_refuse_update",
            &format!("UPDATE events SET agent_id = 'agent-1' WHERE position = {at}"),
            REFUSE_UPDATE,
        ],
    );
    let (code, r) = verify(&path);
    assert_eq!(code, 1, "{r}");
    assert_eq!(check(&r, "payloads")["position"], at, "{r}");
}

/// The head of an intact log, as `verify --format json` reports it: `position:hash`.
fn head_of(path: &Path) -> (i64, String) {
    let (code, r) = verify(path);
    assert_eq!(code, 0, "{r}");
    let position = r["head_position"].as_i64().expect("head_position");
    assert_eq!(r["head_position"], r["last_position"], "{r}");
    let hash = r["head_hash"].as_str().expect("head_hash").to_owned();
    assert_eq!(hash.len(), 64, "{r}");
    (position, hash)
}

#[test]
fn removing_the_newest_event_and_rewinding_the_counter_is_caught_by_the_expected_head() {
    let (_dir, path) = healed_db();
    let (head, hash) = head_of(&path);
    let expected = format!("{head}:{hash}");
    let (code, r) = verify_with(&path, &["--expect-head", &expected]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(check(&r, "head")["ok"], true, "{r}");

    // The newest event goes, the counter is wound back, the triggers are put back and the
    // read models rebuilt: the shortened log is consistent with itself.
    sql(
        &path,
        &[
            "DROP TRIGGER events_refuse_delete",
            &format!("DELETE FROM events WHERE position = {head}"),
            "UPDATE sqlite_sequence SET seq = seq - 1 WHERE name = 'events'",
            REFUSE_DELETE,
        ],
    );
    expect_success(&run(&path, &["rebuild"]));
    let (code, r) = verify(&path);
    assert_eq!(code, 0, "only a head kept elsewhere can tell: {r}");

    // Against the head an earlier run reported, it is not the log it was.
    for expectation in [expected.clone(), hash.clone()] {
        let (code, r) = verify_with(&path, &["--expect-head", &expectation]);
        assert_eq!(code, 1, "{expectation}: {r}");
        let c = check(&r, "head");
        assert_eq!(c["ok"], false, "{r}");
        if expectation.contains(':') {
            assert_eq!(c["position"], head, "{r}");
            assert!(
                c["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("ends at position {}", head - 1)),
                "{c}"
            );
        }
    }
    let text = String::from_utf8_lossy(&run(&path, &["verify", "--expect-head", &expected]).stdout)
        .into_owned();
    assert!(text.contains("NOT verified: head"), "{text}");
}

#[test]
fn an_expected_head_from_an_earlier_run_still_verifies_after_the_log_grew() {
    let (dir, path) = healed_db();
    let (head, hash) = head_of(&path);
    for agent in ["agent-1", "agent-2"] {
        expect_success(&run(
            &path,
            &[
                "--now",
                "2026-11-01T13:00:00Z",
                "record",
                "success",
                "--agent",
                agent,
            ],
        ));
    }
    let (now, _) = head_of(&path);
    assert!(now > head);
    for expectation in [format!("{head}:{hash}"), hash.clone(), hash.to_uppercase()] {
        let (code, r) = verify_with(&path, &["--expect-head", &expectation]);
        assert_eq!(code, 0, "{expectation}: {r}");
        let c = check(&r, "head");
        assert_eq!(c["ok"], true, "{r}");
        assert!(
            c["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("position {head}")),
            "{c}"
        );
    }
    // Another hash at that position, or a position the log never reached, is not this log.
    let other = format!("{head}:{}", "ab".repeat(32));
    let (code, r) = verify_with(&path, &["--expect-head", &other]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(check(&r, "head")["position"], head, "{r}");
    let (code, r) = verify_with(&path, &["--expect-head", &"ab".repeat(32)]);
    assert_eq!(code, 1, "{r}");
    let beyond = format!("{}:{hash}", now + 5);
    let (code, r) = verify_with(&path, &["--expect-head", &beyond]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(check(&r, "head")["position"], now + 1, "{r}");

    // A malformed expectation is an input error, and nothing is touched.
    let files = db_files(&path);
    for bad in [
        "",
        "12",
        "x:y",
        "12:abc",
        "-3:00",
        &format!("-1:{hash}"),
        &format!("{hash}:12"),
    ] {
        let out = run(&path, &["verify", &format!("--expect-head={bad}")]);
        expect_error(&out, "--expect-head");
    }
    assert_same_files(&files, &db_files(&path), "a refused --expect-head");
    drop(dir);
}

#[test]
fn schema_objects_healstore_did_not_create_are_named() {
    let (_dir, src) = healed_file();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "ignore",
            &[
                "CREATE TRIGGER events_ignore_failures BEFORE INSERT ON events \
                 WHEN NEW.event_type = 'failure_detected' BEGIN SELECT RAISE(IGNORE); END",
            ],
            "events_ignore_failures",
        ),
        (
            "changed",
            &[
                "DROP TRIGGER rm_healing_completed",
                "CREATE TRIGGER rm_healing_completed AFTER INSERT ON events \
                 WHEN NEW.event_type = 'healing_completed' BEGIN SELECT 1; END",
            ],
            "rm_healing_completed",
        ),
        ("missing", &["DROP INDEX events_by_time"], "events_by_time"),
        (
            "index",
            &["CREATE INDEX events_by_payload ON events (payload)"],
            "events_by_payload",
        ),
        (
            "view",
            &["CREATE VIEW recent_events AS SELECT * FROM events"],
            "recent_events",
        ),
        ("table", &["CREATE TABLE shadow (x)"], "shadow"),
    ];
    for (name, statements, needle) in cases {
        let path = copy_of(&src, name);
        sql(&path, statements);
        let (code, r) = verify(&path);
        assert_eq!(code, 1, "{name}: {r}");
        assert!(
            failed(&r)
                .iter()
                .any(|c| c["detail"].as_str().unwrap().contains(needle)),
            "{name}: no failed check names {needle}: {r}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

/// Rewrites event `at`'s payload with `edit` (SQL over `payload`) and recomputes the hash
/// chain from there with healstore's own chain code, as a forger who knows it would.
fn forge_with_chain(path: &Path, at: i64, edit: &str) {
    use healstore::store::chain;
    block_on(async {
        let mut c = raw_connection(path).await;
        for s in [
            "DROP TRIGGER events_refuse_update".to_owned(),
            format!("UPDATE events SET payload = {edit} WHERE position = {at}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                .execute(&mut c)
                .await
                .unwrap();
        }
        let prev: Vec<u8> = sqlx::query_scalar("SELECT hash FROM events WHERE position = ?")
            .bind(at - 1)
            .fetch_one(&mut c)
            .await
            .unwrap();
        let mut prev: chain::Hash = prev.try_into().unwrap();
        type Row = (i64, String, String, i64, String, i64, i64, i64, String);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             occurred_at, recorded_at, payload FROM events WHERE position >= ? ORDER BY position",
        )
        .bind(at)
        .fetch_all(&mut c)
        .await
        .unwrap();
        for r in &rows {
            prev = chain::link(
                &prev,
                &chain::Content {
                    position: r.0,
                    event_id: &r.1,
                    stream_id: &r.2,
                    stream_version: r.3,
                    event_type: &r.4,
                    schema_version: r.5,
                    occurred_at: r.6,
                    recorded_at: r.7,
                    payload: &r.8,
                },
            );
            sqlx::query("UPDATE events SET hash = ? WHERE position = ?")
                .bind(prev.to_vec())
                .bind(r.0)
                .execute(&mut c)
                .await
                .unwrap();
        }
        sqlx::raw_sql(REFUSE_UPDATE).execute(&mut c).await.unwrap();
    })
}

#[test]
fn a_payload_edited_with_the_chain_recomputed_is_caught_by_the_expected_head() {
    let (_dir, path) = healed_db();
    let (head, hash) = head_of(&path);
    let at = sql_opt(
        &path,
        &format!(
            "SELECT MIN(position) FROM events WHERE event_type = 'healing_attempted' \
             AND position > {}",
            head / 2
        ),
    )
    .expect("a decision in the second half of the log");
    forge_with_chain(&path, at, "json_set(payload, '$.reason', 'forged')");
    let (code, r) = verify(&path);
    assert_eq!(code, 0, "a recomputed chain is consistent with itself: {r}");
    assert_ne!(r["head_hash"], hash.as_str());
    for expectation in [format!("{head}:{hash}"), hash.clone()] {
        let (code, r) = verify_with(&path, &["--expect-head", &expectation]);
        assert_eq!(code, 1, "{expectation}: {r}");
        let c = check(&r, "head");
        assert_eq!(c["ok"], false, "{r}");
        if expectation.contains(':') {
            assert_eq!(c["position"], head, "{r}");
        }
    }
}

/// The commands that only read the database (they never create it).
fn read_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["events"],
        vec!["--format", "json", "events", "--limit", "1"],
        vec!["export"],
        vec!["audit", "f-1"],
        vec!["audit", "--agent", "agent-1"],
        vec!["audit", "--since", "2026-11-01T00:00:00Z"],
        vec!["stats"],
        vec!["mttr"],
        vec!["effectiveness"],
        vec!["recommendations"],
        vec!["dashboard"],
        vec!["circuit-report"],
        vec!["patterns"],
        vec!["predict"],
        vec!["rebuild"],
        vec!["verify"],
        vec!["--format", "json", "verify", "--skip-read-models"],
    ]
}

/// Every command, with arguments that would succeed on a healstore database.
fn every_command(dir: &Path) -> Vec<Vec<String>> {
    let input = dir.join("input.jsonl");
    std::fs::write(&input, crate::common::test_line("r-1", "s", 1) + "\n").unwrap();
    let input = input.to_str().unwrap().to_owned();
    let archive = dir.join("archive.gz").to_str().unwrap().to_owned();
    let mut all: Vec<Vec<String>> = read_commands()
        .into_iter()
        .map(|v| v.into_iter().map(str::to_owned).collect())
        .collect();
    for v in [
        vec!["init"],
        vec!["import", &input],
        vec!["append", &input],
        vec![
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a-1",
        ],
        vec![
            "record",
            "event",
            "--json",
            r#"{"type":"heartbeat_failed","agent_id":"a-1"}"#,
        ],
        vec!["record", "outcome", "--failure", "f-1", "--success"],
        vec!["record", "success", "--agent", "a-1"],
        vec![
            "record",
            "usage",
            "--resource",
            "tokens",
            "--current",
            "5",
            "--limit",
            "10",
        ],
        vec!["circuits"],
        vec!["circuit", "open", "--agent", "a-1", "--reason", "test"],
        vec!["circuit", "permit", "--agent", "a-1"],
        vec!["tick"],
        vec!["states"],
        vec!["demo", "--ticks", "2"],
        vec![
            "archive",
            "--before",
            "2026-11-01T00:00:00Z",
            "--to",
            &archive,
        ],
    ] {
        all.push(v.into_iter().map(str::to_owned).collect());
    }
    all
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_empty_file_is_refused_by_every_read_command_and_left_empty() {
    let (dir, path) = temp_db();
    std::fs::write(&path, b"").unwrap();
    let entries = dir_entries(dir.path());
    for args in read_commands() {
        let line = expect_error(
            &run(&path, &args),
            "not a healstore database: the file is empty",
        );
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "{args:?}");
        assert_eq!(dir_entries(dir.path()), entries, "{args:?}");
    }
    // An SQLite file that holds nothing at all is no healstore database either.
    let (dir2, blank) = temp_db();
    sqlite_file(&blank, &["CREATE TABLE t (x)", "DROP TABLE t"]);
    assert!(std::fs::metadata(&blank).unwrap().len() > 0);
    let files = db_files(&blank);
    let entries = dir_entries(dir2.path());
    for args in read_commands() {
        expect_error(&run(&blank, &args), "not a healstore database");
        assert_same_files(&files, &db_files(&blank), &format!("{args:?}"));
        assert_eq!(dir_entries(dir2.path()), entries, "{args:?}");
    }
    // Opening one for writing still makes it a healstore database.
    for p in [&path, &blank] {
        expect_success(&run(p, &["init"]));
        let (code, r) = verify(p);
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["events"], 0);
    }
}

/// An SQLite file (rollback journal, as most applications keep them) made by `statements`.
fn sqlite_file(path: &Path, statements: &[&str]) {
    block_on(async {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
            .connect()
            .await
            .unwrap();
        for s in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    })
}

#[test]
fn an_undecodable_payload_is_named_by_position() {
    let (_dir, src) = healed_file();
    let detected = sql_opt(
        &src,
        "SELECT MIN(position) FROM events WHERE event_type = 'failure_detected'",
    )
    .unwrap();
    let strategy = sql_opt(
        &src,
        "SELECT MIN(position) FROM events WHERE stream_id LIKE 'strategy-%'",
    )
    .expect("the demo records strategy events");
    for (name, at, forge) in [
        // Read by the read models' rebuild.
        ("not-json", detected, "substr(payload, 2)"),
        ("not-utf8", detected, "CAST(x'7b22ff223a317d' AS TEXT)"),
        // Read by the strategies' folds.
        ("strategy", strategy, "CAST(x'7bff7d' AS TEXT)"),
    ] {
        let path = copy_of(&src, name);
        sql(
            &path,
            &[
                "DROP TRIGGER events_refuse_update",
                &format!("UPDATE events SET payload = {forge} WHERE position = {at}"),
                REFUSE_UPDATE,
            ],
        );
        let (code, r) = verify(&path);
        assert_eq!(code, 1, "{name}: {r}");
        let payloads = check(&r, "payloads");
        assert_eq!(payloads["position"], at, "{name}: {r}");
        assert!(
            payloads["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("undecodable payload at position {at}")),
            "{name}: {payloads}"
        );
        assert_eq!(first_bad_position(&r), Some(at), "{name}: {r}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn random_byte_flips_in_payloads_are_named_by_position() {
    let (_dir, src) = healed_file();
    let (lo, hi) = (
        sql_scalar(&src, "SELECT MIN(position) FROM events"),
        sql_scalar(&src, "SELECT MAX(position) FROM events"),
    );
    let mut rng = Rng::seeded("payload byte flips");
    for round in 0..12 {
        let path = copy_of(&src, &format!("flip-{round}"));
        let at = rng.between(lo as u64, hi as u64) as i64;
        let what = block_on(async {
            let mut c = raw_connection(&path).await;
            let mut payload: Vec<u8> =
                sqlx::query_scalar("SELECT CAST(payload AS BLOB) FROM events WHERE position = ?")
                    .bind(at)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            let i = rng.between(0, payload.len() as u64 - 1) as usize;
            let mask = rng.between(1, 255) as u8;
            payload[i] ^= mask;
            sqlx::raw_sql("DROP TRIGGER events_refuse_update")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query("UPDATE events SET payload = CAST(? AS TEXT) WHERE position = ?")
                .bind(&payload)
                .bind(at)
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::raw_sql(REFUSE_UPDATE).execute(&mut c).await.unwrap();
            format!("position {at}, byte {i} ^ {mask:#04x}")
        });
        let out = run(&path, &["--format", "json", "verify"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_text(&out)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(first_bad_position(&r), Some(at), "{what}: {r}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn foreign_files_are_refused_by_every_command_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let commands = every_command(dir.path());
    let mut rng = Rng::fixed(11);
    let random: Vec<u8> = (0..2 * 4096).map(|_| rng.next_u64() as u8).collect();
    let kinds: Vec<(&str, Option<&[&str]>, &str)> = vec![
        (
            "view",
            Some(&["CREATE VIEW answer AS SELECT 42 AS n"]),
            "not a healstore database",
        ),
        (
            "application-id",
            Some(&["PRAGMA application_id = 1234"]),
            "not a healstore database",
        ),
        (
            "application-id-and-table",
            Some(&[
                "PRAGMA application_id = 1234",
                "CREATE TABLE notes (body TEXT)",
            ]),
            "not a healstore database",
        ),
        (
            "user-version",
            Some(&["PRAGMA user_version = 7"]),
            "not a healstore database",
        ),
        (
            "table",
            Some(&[
                "CREATE TABLE notes (body TEXT)",
                "INSERT INTO notes VALUES ('milk')",
            ]),
            "not a healstore database",
        ),
        ("random", None, "corrupt or not an SQLite database"),
    ];
    for (kind, statements, needle) in kinds {
        let path = dir.path().join(format!("{kind}.db"));
        match statements {
            Some(s) => sqlite_file(&path, s),
            None => std::fs::write(&path, &random).unwrap(),
        }
        assert!(std::fs::metadata(&path).unwrap().len() > 0, "{kind}");
        let files = db_files(&path);
        let entries = dir_entries(dir.path());
        for args in &commands {
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let line = expect_error(&run(&path, &argv), needle);
            assert!(
                line.contains(&path.display().to_string()),
                "{kind} {args:?}: {line}"
            );
            assert_same_files(&files, &db_files(&path), &format!("{kind} {args:?}"));
            assert_eq!(dir_entries(dir.path()), entries, "{kind} {args:?}");
        }
    }
}

#[test]
fn verify_compares_the_read_models_while_another_process_holds_the_write_lock() {
    let (_dir, path) = healed_db();
    block_on(async {
        let mut writer = raw_connection(&path).await;
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut writer)
            .await
            .unwrap();
        // Another connection holds the write lock for as long as verify runs: verify must
        // neither wait for it nor fail.
        let out = run(
            &path,
            &["--busy-timeout", "2s", "--format", "json", "verify"],
        );
        let text = expect_success(&out);
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rm = check(&r, "read_models");
        assert_eq!(rm["ok"], true, "{r}");
        assert!(
            rm["detail"].as_str().unwrap().contains("equal a rebuild"),
            "{rm}"
        );
        // And the writer's transaction is still its own.
        sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    });
}

#[test]
fn an_expected_head_is_checked_across_an_archive() {
    let (dir, path) = healed_db();
    let (head, hash) = head_of(&path);
    let early = sql_scalar(&path, "SELECT MIN(position) FROM events");
    let early_hash: String = block_on(async {
        let mut c = raw_connection(&path).await;
        sqlx::query_scalar("SELECT lower(hex(hash)) FROM events WHERE position = ?")
            .bind(early)
            .fetch_one(&mut c)
            .await
            .unwrap()
    });
    let archive = dir.path().join("cut.gz");
    expect_success(&run(
        &path,
        &[
            "--now",
            "2026-11-01T13:00:00Z",
            "archive",
            "--before",
            "2026-11-01T12:00:05Z",
            "--to",
            archive.to_str().unwrap(),
        ],
    ));
    let (code, r) = verify(&path);
    assert_eq!(code, 0, "{r}");
    let anchor = r["anchor_position"].as_i64().unwrap();
    assert!(anchor > early && anchor < head, "{r}");
    // A head after the cut is still in the log; so is the anchor itself.
    let anchor_hash: String = block_on(async {
        let mut c = raw_connection(&path).await;
        sqlx::query_scalar("SELECT lower(hex(hash)) FROM chain_anchor")
            .fetch_one(&mut c)
            .await
            .unwrap()
    });
    for expectation in [
        format!("{head}:{hash}"),
        hash.clone(),
        format!("{anchor}:{anchor_hash}"),
        anchor_hash.clone(),
    ] {
        let (code, r) = verify_with(&path, &["--expect-head", &expectation]);
        assert_eq!(code, 0, "{expectation}: {r}");
        assert_eq!(check(&r, "head")["ok"], true, "{r}");
    }
    // A head that was archived cannot be checked in the database: verify says where to look.
    let (code, r) = verify_with(&path, &["--expect-head", &format!("{early}:{early_hash}")]);
    assert_eq!(code, 1, "{r}");
    let c = check(&r, "head");
    assert_eq!(c["position"], early, "{r}");
    assert!(
        c["detail"].as_str().unwrap().contains("verify --archive"),
        "{c}"
    );
}
