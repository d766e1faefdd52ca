//! `verify`: the hash chain, the triggers, the position counter, the read models and the
//! snapshots, against alterations made behind healstore's back with plain SQL (as with the
//! sqlite3 shell after dropping a trigger), and the chain computed for a database upgraded
//! from before it existed.

use std::path::Path;

use crate::common::{
    Rng, assert_same_files, block_on, db_files, expect_error, expect_success, raw_connection, run,
    temp_db,
};

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

// Files that are not healstore's.

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
