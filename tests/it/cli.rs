//! The command line contract: what each command prints, which exit code it ends with, and that
//! a refused input or a refused file changes nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use healstore::EventLine;

use crate::common::{
    self, Rng, assert_same_files, block_on, db_files, expect_error, expect_success, healstore, run,
    run_with_input, stdout_text, test_line,
};

/// A fixed `--now`, so that `demo` writes the same times on every run.
const NOW: &str = "2026-01-01T00:00:00Z";

/// A database written by `healstore --now NOW demo` (with its default settings).
fn demo_db(dir: &Path, name: &str) -> PathBuf {
    let db = dir.join(name);
    expect_success(&run(&db, &["--now", NOW, "demo"]));
    db
}

/// A database holding `n` imported events, over ten streams and three event types.
fn sample_db(dir: &Path, n: u64) -> PathBuf {
    let db = dir.join("sample.db");
    let text: String = (0..n)
        .map(|i| {
            let event_type = ["probe_sent", "probe_answered", "note_taken"][(i % 3) as usize];
            serde_json::json!({
                "event_id": format!("sample-{i}"),
                "stream_id": format!("stream-{}", i % 10),
                "event_type": event_type,
                "occurred_at": format!("2026-11-01T12:{:02}:{:02}Z", (i / 60) % 60, i % 60),
                "payload": {"i": i, "text": "some words to give the rows a little weight"},
            })
            .to_string()
                + "\n"
        })
        .collect();
    let report = json(&expect_success(&run_with_input(
        &db,
        &["--format", "json", "import", "-"],
        text.as_bytes(),
    )));
    assert_eq!(report["imported"], n);
    db
}

fn export(db: &Path) -> String {
    expect_success(&run(db, &["export"]))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Writes `lines` as a JSON Lines file next to the database.
fn jsonl_file(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("write input file");
    path
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

// ----- init ------------------------------------------------------------------------------------

#[test]
fn init_creates_a_database_then_recognises_it_without_changing_it() {
    // Given no database,
    let (_dir, db) = common::temp_db();
    // when `init` runs, it reports creating one at the current schema;
    let first = json(&expect_success(&run(&db, &["--format", "json", "init"])));
    assert_eq!(first["created"], true);
    assert_eq!(first["schema_version"], healstore::SCHEMA_VERSION);
    assert_eq!(first["head_position"], 0);

    // given some events in it,
    let lines: Vec<String> = (0..3)
        .map(|n| test_line(&format!("i-{n}"), "s", n))
        .collect();
    expect_success(&run_with_input(
        &db,
        &["import", "-"],
        (lines.join("\n") + "\n").as_bytes(),
    ));
    let files = db_files(&db);
    let exported = export(&db);

    // when `init` runs again, it reports the existing database, in both formats,
    let again = json(&expect_success(&run(&db, &["--format", "json", "init"])));
    assert_eq!(again["created"], false);
    assert_eq!(again["schema_version"], healstore::SCHEMA_VERSION);
    assert_eq!(again["head_position"], 3);
    let table = expect_success(&run(&db, &["init"]));
    assert!(
        table.contains("is a healstore database") && table.contains("3 events"),
        "unexpected report: {table}"
    );
    // and changes nothing.
    assert_same_files(&files, &db_files(&db), "init on an existing database");
    assert_eq!(export(&db), exported);
}

// ----- import / export -------------------------------------------------------------------------

#[test]
fn export_imported_into_a_fresh_database_exports_byte_identical_and_reimport_is_a_no_op() {
    // Given a database written by `demo` and its export,
    let dir = tempfile::tempdir().unwrap();
    let source = demo_db(dir.path(), "demo.db");
    let original = export(&source);
    let count = original.lines().count() as u64;
    assert!(count >= 10, "the demo wrote only {count} events");
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &original).unwrap();

    // when the export is imported into a fresh database,
    let copy = dir.path().join("copy.db");
    let report = json(&expect_success(&run(
        &copy,
        &["--format", "json", "import", path_arg(&file)],
    )));
    // then every event is imported
    assert_eq!(report["imported"], count);
    assert_eq!(report["duplicates"], 0);
    // and exporting the copy gives the very same bytes (positions, versions, times, payloads).
    assert_eq!(export(&copy), original);

    // When the same file is imported again,
    let files = db_files(&copy);
    let again = json(&expect_success(&run(
        &copy,
        &["--format", "json", "import", path_arg(&file)],
    )));
    // then every event is reported as already present and nothing changes.
    assert_eq!(again["imported"], 0);
    assert_eq!(again["duplicates"], count);
    let table = expect_success(&run(&copy, &["import", path_arg(&file)]));
    assert_eq!(
        table.trim_end(),
        format!("imported 0 events ({count} already present)")
    );
    assert_same_files(&files, &db_files(&copy), "re-import");
    assert_eq!(export(&copy), original);
}

#[test]
fn import_with_a_bad_third_line_imports_nothing_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path(), 5);
    let existing_id = json(export(&db).lines().next().unwrap())["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let good = |n: u64| test_line(&format!("new-{n}"), "imported", n);
    let bad_third_lines = [
        // refused while parsing,
        ("malformed JSON", r#"{"stream_id": "s", "#.to_owned(), "EOF"),
        // and refused by the writer, inside the import's transaction (an id already stored
        // for a different event).
        (
            "a reused event id",
            test_line(&existing_id, "elsewhere", 1),
            "different content",
        ),
    ];
    for (what, third, reason) in bad_third_lines {
        // Given a database and a file whose third line is bad,
        let file = jsonl_file(dir.path(), "bad.jsonl", &[good(1), good(2), third, good(4)]);
        let files = db_files(&db);
        let exported = export(&db);
        // when it is imported,
        let out = run(&db, &["import", path_arg(&file)]);
        // then the import fails with exit code 2 and a one-line error naming line 3,
        let line = expect_error(&out, "line 3");
        assert!(line.contains(reason), "{what}: {line}");
        assert!(line.contains("nothing was imported"), "{what}: {line}");
        // and the database is unchanged: not even lines 1 and 2 were kept.
        assert_same_files(&files, &db_files(&db), what);
        assert_eq!(export(&db), exported, "{what}");
    }
}

// ----- append ----------------------------------------------------------------------------------

#[test]
fn append_commits_each_line_on_its_own_and_stops_at_the_first_bad_one() {
    // Given an input whose third line is bad,
    let (_dir, db) = common::temp_db();
    let input = [
        test_line("ap-1", "s", 1),
        test_line("ap-2", "t", 2),
        r#"{"event_id":"ap-3","stream_id":"s""#.to_owned(),
        test_line("ap-4", "s", 4),
    ]
    .join("\n")
        + "\n";
    // when it is appended (unlike `import`, each line stands alone),
    let out = run_with_input(&db, &["--format", "json", "append", "-"], input.as_bytes());
    // then the command fails with a one-line error naming line 3,
    let stderr = common::stderr_text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("healstore: error: line 3"), "{stderr}");
    // the lines before it were committed and acknowledged,
    let acks = common::parse_acks(&stdout_text(&out));
    let acked: Vec<(u64, &str, i64, u64, bool)> = acks
        .iter()
        .map(|a| {
            (
                a.line,
                a.event_id.as_str(),
                a.position,
                a.stream_version,
                a.duplicate,
            )
        })
        .collect();
    assert_eq!(acked, [(1, "ap-1", 1, 1, false), (2, "ap-2", 2, 1, false)]);
    // and nothing after it was appended.
    let stored: Vec<String> = export(&db)
        .lines()
        .map(|l| json(l)["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, ["ap-1", "ap-2"]);

    // When the corrected input is appended again, the first two are acknowledged as
    // duplicates at their positions and the rest are appended after them.
    let fixed = input.replace(
        r#"{"event_id":"ap-3","stream_id":"s""#,
        &test_line("ap-3", "s", 3),
    );
    let acks = common::parse_acks(&expect_success(&run_with_input(
        &db,
        &["--format", "json", "append", "-"],
        fixed.as_bytes(),
    )));
    let acked: Vec<(&str, i64, u64, bool)> = acks
        .iter()
        .map(|a| {
            (
                a.event_id.as_str(),
                a.position,
                a.stream_version,
                a.duplicate,
            )
        })
        .collect();
    assert_eq!(
        acked,
        [
            ("ap-1", 1, 1, true),
            ("ap-2", 2, 1, true),
            ("ap-3", 3, 2, false),
            ("ap-4", 4, 3, false)
        ]
    );
}

// ----- refused input ---------------------------------------------------------------------------

#[test]
fn each_bad_event_line_is_refused_with_a_one_line_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path(), 5);
    let line = |fields: &str| {
        let payload = if fields.contains(r#""payload":"#) {
            ""
        } else {
            r#","payload":{}"#
        };
        format!(
            r#"{{"stream_id":"s","event_type":"test_happened","occurred_at":"2026-11-01T12:00:00Z",{fields}{payload}}}"#
        )
    };
    let known = |ty: &str, payload: &str| {
        format!(
            r#"{{"event_id":"k","stream_id":"s","event_type":"{ty}","occurred_at":"2026-11-01T12:00:00Z","payload":{payload}}}"#
        )
    };
    let long_agent = "a".repeat(healstore::event::MAX_ID_LEN + 1);
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", r#"{"event_id":"x","#.to_owned(), "EOF while parsing"),
        ("an unknown field", line(r#""event_id":"x","color":"red""#), "unknown field `color`"),
        (
            "a time that is not RFC 3339",
            r#"{"event_id":"x","stream_id":"s","event_type":"t","occurred_at":"last tuesday"}"#
                .to_owned(),
            "RFC 3339",
        ),
        (
            "a known type whose payload does not fit",
            r#"{"event_id":"x","stream_id":"s","event_type":"failure_detected","occurred_at":"2026-11-01T12:00:00Z","payload":{"failure_type":"agent_down","severity":"high"}}"#
                .to_owned(),
            "missing field `failure_id`",
        ),
        ("an empty event id", line(r#""event_id":"""#), "event_id must not be empty"),
        ("an empty stream id", r#"{"event_id":"x","stream_id":"","event_type":"t","occurred_at":"2026-11-01T12:00:00Z","payload":{}}"#.to_owned(), "stream_id must not be empty"),
        ("a payload that is not an object", line(r#""event_id":"x","payload":[1,2]"#), "must be a JSON object"),
        ("a missing payload", r#"{"event_id":"x","stream_id":"s","event_type":"t","occurred_at":"2026-11-01T12:00:00Z"}"#.to_owned(), "missing field `payload`"),
        ("a healing duration that overflows the read models", known("healing_completed", r#"{"failure_id":"f","strategy":"AgentRestart","success":true,"duration_ms":6000000000000000000}"#), "duration_ms is 6000000000000000000"),
        ("the largest healing duration", known("healing_completed", r#"{"failure_id":"f","strategy":"AgentRestart","success":true,"duration_ms":9223372036854775807}"#), "between 0 and 31536000000"),
        ("an agent id over 256 bytes", known("agent_succeeded", &format!(r#"{{"agent_id":"{long_agent}"}}"#)), "agent_id is 257 bytes long"),
        ("an agent id over 256 bytes in a custom type", line(&format!(r#""event_id":"x","payload":{{"agent_id":"{long_agent}"}}"#)), "agent_id is 257 bytes long"),
        ("an unknown field in a known payload", known("agent_succeeded", r#"{"agent_id":"a-1","colour":"red"}"#), "unknown field `colour`"),
        ("a time after the year 9999", r#"{"event_id":"x","stream_id":"s","event_type":"t","occurred_at":"+10000-01-01T00:00:00Z","payload":{}}"#.to_owned(), "RFC 3339"),
    ];
    let files = db_files(&db);
    let exported = export(&db);
    for (what, bad, reason) in cases {
        let input = format!("{bad}\n");
        let file = jsonl_file(dir.path(), "bad.jsonl", &[bad]);
        // `import` refuses the file, `append` refuses the line (it is the first one, so nothing
        // was appended before it),
        for out in [
            run(&db, &["import", path_arg(&file)]),
            run_with_input(&db, &["append", "-"], input.as_bytes()),
        ] {
            let msg = expect_error(&out, reason);
            assert!(msg.contains("line 1"), "{what}: {msg}");
        }
        // and nothing changed.
        assert_same_files(&files, &db_files(&db), what);
        assert_eq!(export(&db), exported, "{what}");
    }
}

#[test]
fn a_time_option_that_is_not_rfc3339_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path(), 5);
    let files = db_files(&db);
    for args in [
        &["events", "--since", "yesterday"][..],
        &["events", "--until", "2026-11-28"][..],
        &["export", "--since", "1700000000"][..],
        &["--now", "noon", "demo"][..],
    ] {
        let out = run(&db, args);
        // Argument errors come from the argument parser, whose message names the option and
        // the value; they still exit with 2 and print nothing on stdout.
        let stderr = common::stderr_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let option = args.iter().find(|a| a.starts_with("--")).unwrap();
        let value = args[args.iter().position(|a| a == option).unwrap() + 1];
        assert!(
            stderr.contains(option) && stderr.contains(value) && stderr.contains("RFC 3339"),
            "{args:?}: the error does not name the option, the value and the format:\n{stderr}"
        );
    }
    assert_same_files(&files, &db_files(&db), "bad time options");
}

// ----- refused files ---------------------------------------------------------------------------

/// Every command, as it would be run against a file that must be refused. `input` is a valid
/// event file for the commands that read one.
fn every_command(input: &Path) -> Vec<Vec<String>> {
    let input = path_arg(input).to_owned();
    [
        vec!["init"],
        vec!["events"],
        vec!["--format", "json", "events", "--limit", "1"],
        vec!["export"],
        vec!["import", input.as_str()],
        vec!["append", input.as_str()],
        vec!["demo"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect()
}

/// Asserts that every command refuses `db` with a one-line error containing `reason`, exits
/// with 2 and leaves the file's bytes as they were.
#[track_caller]
fn assert_refused_by_every_command(dir: &Path, db: &Path, reason: &str) {
    let input = jsonl_file(dir, "input.jsonl", &[test_line("r-1", "s", 1)]);
    let files = db_files(db);
    for args in every_command(&input) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(db, &args);
        let line = expect_error(&out, reason);
        assert!(
            line.contains(&db.display().to_string()),
            "{args:?}: the error does not name the file: {line}"
        );
        assert_same_files(&files, &db_files(db), &format!("{args:?}"));
    }
}

#[test]
fn a_file_that_is_not_a_database_is_refused_by_every_command_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded("random-bytes database");
    let random: Vec<u8> = (0..3 * 4096).map(|_| rng.next_u64() as u8).collect();
    let contents: [(&str, Vec<u8>); 2] = [
        ("random.db", random),
        (
            "notes.db",
            b"these are my notes, not a database\nline two\n".to_vec(),
        ),
    ];
    for (name, bytes) in contents {
        // Given a file that is not an SQLite database,
        let db = dir.path().join(name);
        std::fs::write(&db, &bytes).unwrap();
        // every command refuses it, and it keeps its exact bytes.
        assert_refused_by_every_command(dir.path(), &db, "corrupt or not an SQLite database");
        assert_eq!(std::fs::read(&db).unwrap(), bytes);
    }
}

#[test]
fn a_truncated_database_is_refused_by_every_command_without_panicking() {
    // Given a real healstore database cut to half its size (a copy interrupted midway),
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path(), 500);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let full = std::fs::metadata(&db).unwrap().len();
    assert!(
        full >= 8 * 4096,
        "the sample database is too small ({full} bytes)"
    );
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(full / 2).unwrap();
    drop(file);
    // every command refuses it with a one-line error (no panic), and leaves it as it is.
    assert_refused_by_every_command(dir.path(), &db, "corrupt");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), full / 2);
}

#[test]
fn a_directory_given_as_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a-directory");
    std::fs::create_dir(&db).unwrap();
    assert_refused_by_every_command(dir.path(), &db, "it is a directory");
    assert_eq!(std::fs::read_dir(&db).unwrap().count(), 0);
}

#[test]
fn a_read_command_on_a_missing_database_fails_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("missing.db");
    for args in [
        &["events"][..],
        &["--format", "json", "events", "--follow"][..],
        &["export"][..],
    ] {
        let out = run(&db, args);
        let line = expect_error(&out, "no such file");
        assert!(line.contains("healstore init"), "no hint: {line}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

/// An ordinary SQLite database of some other application (rollback journal, as most are).
fn foreign_sqlite_db(path: &Path) {
    block_on(async {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL); \
             INSERT INTO notes (body) VALUES ('buy milk'), ('call home');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn another_applications_sqlite_database_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.db");
    foreign_sqlite_db(&db);
    let input = jsonl_file(dir.path(), "input.jsonl", &[test_line("r-1", "s", 1)]);
    for args in every_command(&input) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(
            &run(&db, &args),
            "is an SQLite database but not a healstore database",
        );
    }
    // Its data is still there, and no healstore table was added.
    let tables: Vec<String> = block_on(async {
        let mut conn = common::raw_connection(&db).await;
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    });
    assert_eq!(tables, ["notes"]);
}

#[test]
fn refusing_another_applications_sqlite_database_leaves_it_byte_identical() {
    // Given another application's SQLite database,
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.db");
    foreign_sqlite_db(&db);
    // when every healstore command refuses it,
    // then not one byte of it changes (healstore must not, e.g., switch it to WAL mode).
    assert_refused_by_every_command(
        dir.path(),
        &db,
        "is an SQLite database but not a healstore database",
    );
}

#[test]
fn a_database_with_a_newer_schema_is_refused_by_every_command_and_left_unchanged() {
    // Given a healstore database that a newer healstore has migrated to version 999,
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path(), 5);
    block_on(async {
        use sqlx::Connection;
        let mut conn = common::raw_connection(&db).await;
        sqlx::query(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    // every command refuses it, says why, and changes nothing.
    let input = jsonl_file(dir.path(), "input.jsonl", &[test_line("r-1", "s", 1)]);
    let files = db_files(&db);
    for args in every_command(&input) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = expect_error(&run(&db, &args), "schema version 999 is newer");
        assert!(line.contains("upgrade healstore"), "{line}");
        assert_same_files(&files, &db_files(&db), &format!("{args:?}"));
    }
}

// ----- the log is append-only ------------------------------------------------------------------

#[test]
fn the_database_itself_refuses_updates_and_deletes_of_events() {
    // Given a healstore database,
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path(), 5);
    let exported = export(&db);
    // when any SQLite client tries to rewrite or erase history,
    let errors: Vec<String> = block_on(async {
        use sqlx::Connection;
        let mut conn = common::raw_connection(&db).await;
        let mut errors = Vec::new();
        for sql in [
            "UPDATE events SET event_type = 'tampered' WHERE position = 1",
            "UPDATE events SET payload = '{}'",
            "DELETE FROM events WHERE position = 1",
            "DELETE FROM events",
        ] {
            match sqlx::query(sql).execute(&mut conn).await {
                Ok(r) => panic!("{sql} succeeded ({} rows)", r.rows_affected()),
                Err(e) => errors.push(format!("{sql}: {e}")),
            }
        }
        conn.close().await.unwrap();
        errors
    });
    // then each statement fails, saying the log is append-only,
    for e in &errors {
        assert!(e.contains("append-only"), "{e}");
    }
    assert!(errors[0].contains("UPDATE refused") && errors[2].contains("DELETE refused"));
    // and nothing changed.
    assert_eq!(export(&db), exported);
}

// ----- events ----------------------------------------------------------------------------------

#[test]
fn events_filters_select_by_stream_type_time_position_and_limit() {
    // Given six events, imported in this order (so at positions 1..=6):
    let (_dir, db) = common::temp_db();
    let ev = |id: &str, stream: &str, ty: &str, at: &str| {
        format!(
            r#"{{"event_id":"{id}","stream_id":"{stream}","event_type":"{ty}","occurred_at":"{at}","payload":{{"id":"{id}"}}}}"#
        )
    };
    let lines = [
        ev("e1", "a", "x", "2026-11-01T12:00:00Z"),
        ev("e2", "b", "y", "2026-11-01T12:01:00Z"),
        ev("e3", "a", "y", "2026-11-01T12:02:00Z"),
        ev("e4", "b", "x", "2026-11-01T12:03:00Z"),
        ev("e5", "a", "x", "2026-11-01T12:04:00Z"),
        // late-arriving: occurred before all the others
        ev("e6", "c", "z", "2026-11-01T11:59:00Z"),
    ];
    expect_success(&run_with_input(
        &db,
        &["import", "-"],
        (lines.join("\n") + "\n").as_bytes(),
    ));
    // The export's line of each event: `events --format json` must print exactly these.
    let exported: Vec<String> = export(&db).lines().map(str::to_owned).collect();
    assert_eq!(exported.len(), 6);
    let line_of =
        |id: &str| -> &str { exported.iter().find(|l| json(l)["event_id"] == id).unwrap() };

    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["e1", "e2", "e3", "e4", "e5", "e6"]),
        (&["--stream", "a"], &["e1", "e3", "e5"]),
        (&["--stream", "nope"], &[]),
        (&["--type", "x"], &["e1", "e4", "e5"]),
        (&["--type", "x", "--type", "z"], &["e1", "e4", "e5", "e6"]),
        // start inclusive, end exclusive, in time order
        (
            &[
                "--since",
                "2026-11-01T12:01:00Z",
                "--until",
                "2026-11-01T12:03:00Z",
            ],
            &["e2", "e3"],
        ),
        (
            &["--since", "2026-11-01T12:00:00Z"],
            &["e1", "e2", "e3", "e4", "e5"],
        ),
        (&["--until", "2026-11-01T12:00:00Z"], &["e6"]),
        (&["--until", "2026-11-01T12:02:00Z"], &["e6", "e1", "e2"]),
        // the same instant written with an offset
        (&["--since", "2026-11-01T13:04:00+01:00"], &["e5"]),
        (&["--after", "3"], &["e4", "e5", "e6"]),
        (&["--after", "6"], &[]),
        (&["--limit", "2"], &["e1", "e2"]),
        (&["--type", "x", "--limit", "2"], &["e1", "e4"]),
        (&["--stream", "a", "--after", "1"], &["e3", "e5"]),
        (
            &[
                "--stream",
                "a",
                "--type",
                "x",
                "--since",
                "2026-11-01T12:01:00Z",
            ],
            &["e5"],
        ),
    ];
    for (filter, expected) in cases {
        let mut args = vec!["--format", "json", "events"];
        args.extend_from_slice(filter);
        let out = expect_success(&run(&db, &args));
        let got: Vec<&str> = out.lines().collect();
        // Each line is a full EventLine, as `export` writes it,
        for l in &got {
            let parsed = EventLine::parse(l).unwrap_or_else(|e| panic!("{filter:?}: {e}: {l}"));
            assert!(parsed.position.is_some() && parsed.stream_version.is_some());
            assert!(parsed.event_id.is_some() && parsed.recorded_at.is_some());
        }
        // and the filter selects exactly the expected events, in the expected order.
        let want: Vec<&str> = expected.iter().map(|id| line_of(id)).collect();
        assert_eq!(got, want, "events {filter:?}");
    }

    // The table format lists the same events under a header.
    let table = expect_success(&run(&db, &["events", "--stream", "a"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].starts_with("POSITION"), "{table}");
    for (row, position) in rows[1..].iter().zip(["1", "3", "5"]) {
        assert_eq!(row.split_whitespace().next(), Some(position), "{table}");
    }
}

#[test]
fn a_reader_that_closes_the_pipe_early_ends_events_quietly_with_success() {
    // Given a database with 5,000 events (more than any pipe buffers),
    let (dir, db) = common::temp_db();
    let lines: Vec<String> = (0..5000)
        .map(|n| test_line(&format!("p-{n}"), &format!("s-{}", n % 10), n))
        .collect();
    let file = jsonl_file(dir.path(), "many.jsonl", &lines);
    let report = json(&expect_success(&run(
        &db,
        &["--format", "json", "import", path_arg(&file)],
    )));
    assert_eq!(report["imported"], 5000);

    for (format, command) in [("json", "events"), ("table", "events"), ("json", "export")] {
        // when `healstore events` (or `export`) writes into a pipe whose reader takes one
        // line and leaves (`healstore events | head -1`),
        let mut child = healstore(&db)
            .args(["--format", format, command])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        drop(reader);
        let out = common::wait_with_deadline(child, common::CHILD_TIMEOUT);

        // then it printed a real first line,
        if format == "json" {
            assert_eq!(json(&first)["event_id"], "p-0", "{command}");
        } else {
            assert!(first.starts_with("POSITION"), "{first}");
        }
        // and ends with success and says nothing on stderr.
        assert!(
            out.status.success(),
            "{command} ({format}): {} after a closed pipe",
            out.status
        );
        assert_eq!(common::stderr_text(&out), "", "{command} ({format})");
    }
}

// ----- --now -----------------------------------------------------------------------------------

#[test]
fn now_option_stamps_recorded_at_instead_of_the_wall_clock() {
    // Given `--now`, when events without a `recorded_at` are imported or appended,
    let (_dir, db) = common::temp_db();
    let kept = r#"{"event_id":"now-3","stream_id":"n","event_type":"test_happened","occurred_at":"2026-11-01T12:00:00Z","recorded_at":"2026-06-01T08:00:00Z","payload":{}}"#;
    let input = format!("{}\n{kept}\n", test_line("now-1", "n", 1));
    expect_success(&run_with_input(
        &db,
        &["--now", "2027-03-04T05:06:07.5+01:00", "import", "-"],
        input.as_bytes(),
    ));
    let appended = format!("{}\n", test_line("now-2", "n", 2));
    expect_success(&run_with_input(
        &db,
        &["--now", NOW, "append", "-"],
        appended.as_bytes(),
    ));
    // then they are recorded at exactly that instant (in UTC, to the microsecond), while a
    // line that carries its own `recorded_at` keeps it.
    let recorded: Vec<(String, String)> = export(&db)
        .lines()
        .map(|l| {
            let v = json(l);
            (
                v["event_id"].as_str().unwrap().to_owned(),
                v["recorded_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("now-1", "2027-03-04T04:06:07.500000Z"),
        ("now-3", "2026-06-01T08:00:00.000000Z"),
        ("now-2", "2026-01-01T00:00:00.000000Z"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(recorded, expected);
}

#[test]
fn now_option_makes_the_demos_recorded_at_deterministic() {
    // Given two fresh databases, when the demo runs on each with the same `--now`,
    let dir = tempfile::tempdir().unwrap();
    let recorded = |name: &str| -> Vec<chrono::DateTime<chrono::Utc>> {
        export(&demo_db(dir.path(), name))
            .lines()
            .map(|l| healstore::time::parse_time(json(l)["recorded_at"].as_str().unwrap()).unwrap())
            .collect()
    };
    let first = recorded("one.db");
    let second = recorded("two.db");
    // then both record their events at the very same instants,
    assert!(!first.is_empty());
    assert_eq!(first, second, "recorded_at differs between identical runs");
    // and those instants come from `--now` (the demo's simulated period of 120 ticks of 5 s
    // ends there), not from the wall clock.
    let now = healstore::time::parse_time(NOW).unwrap();
    for t in &first {
        assert!(
            *t >= now - chrono::Duration::minutes(10) && *t < now + chrono::Duration::minutes(1),
            "recorded_at {t} is not derived from --now {NOW}"
        );
    }
    assert!(first.windows(2).all(|w| w[0] <= w[1]));
}

// ----- append: events the read models do not know, and a line the database refuses -----------

/// A `pattern_learned` event of `version` whose support is text (a shape only a newer
/// producer would write), as a JSON line.
fn textual_pattern(id: &str, version: u32) -> String {
    serde_json::json!({
        "event_id": id,
        "stream_id": "patterns",
        "event_type": "pattern_learned",
        "schema_version": version,
        "occurred_at": "2026-11-01T12:00:00Z",
        "payload": {"pattern_id": "p-1", "kind": "sequence", "scope": "fleet",
                    "failure_types": ["a", "b"], "support": "many", "confidence": 0.9,
                    "description": "d"},
    })
    .to_string()
}

fn acked(out: &std::process::Output) -> Vec<(u64, String, bool)> {
    common::parse_acks(&stdout_text(out))
        .into_iter()
        .map(|a| (a.line, a.event_id, a.duplicate))
        .collect()
}

fn stored_ids(db: &Path) -> Vec<String> {
    export(db)
        .lines()
        .map(|l| json(l)["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn append_stores_a_pattern_of_another_version_between_good_lines_and_refuses_a_malformed_one() {
    // Given a good event, a pattern_learned of schema version 2 whose support is text, and
    // another good event,
    let (_dir, db) = common::temp_db();
    let input = [
        test_line("good-1", "s", 1),
        textual_pattern("pattern-v2", 2),
        test_line("good-3", "s", 3),
    ]
    .join("\n")
        + "\n";
    // when they are appended,
    let out = run_with_input(&db, &["--format", "json", "append", "-"], input.as_bytes());
    // then all three are stored and acknowledged, in order (a version this binary does not
    // know is data: kept, and skipped by the read models),
    expect_success(&out);
    assert_eq!(
        acked(&out),
        [
            (1, "good-1".to_owned(), false),
            (2, "pattern-v2".to_owned(), false),
            (3, "good-3".to_owned(), false)
        ]
    );
    assert_eq!(stored_ids(&db), ["good-1", "pattern-v2", "good-3"]);
    let patterns: i64 = block_on(async {
        let mut c = common::raw_connection(&db).await;
        sqlx::query_scalar("SELECT COUNT(*) FROM patterns")
            .fetch_one(&mut c)
            .await
            .unwrap()
    });
    assert_eq!(patterns, 0, "the read model skipped the unknown version");
    let shown = expect_success(&run(
        &db,
        &["--format", "json", "events", "--type", "pattern_learned"],
    ));
    let shown = json(shown.trim());
    assert_eq!(
        (
            shown["schema_version"].as_u64(),
            shown["payload"]["support"].as_str()
        ),
        (Some(2), Some("many"))
    );

    // When the same pattern claims version 1 (whose support is a number), it is refused:
    // exit code 2, one line naming line 2 and the field, the line before it committed and
    // acknowledged, and nothing after it read (append stops at the first bad line).
    let (_dir, db) = common::temp_db();
    let input = [
        test_line("good-1", "s", 1),
        textual_pattern("pattern-v1", 1),
        test_line("good-3", "s", 3),
    ]
    .join("\n")
        + "\n";
    let out = run_with_input(&db, &["--format", "json", "append", "-"], input.as_bytes());
    let stderr = common::stderr_text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "healstore: error: line 2: invalid event: payload does not fit pattern_learned v1"
        ) && stderr.contains(r#"invalid type: string "many""#),
        "{stderr}"
    );
    assert_eq!(acked(&out), [(1, "good-1".to_owned(), false)]);
    assert_eq!(stored_ids(&db), ["good-1"]);
}

#[test]
fn append_of_a_line_the_database_refuses_fails_that_line_alone_and_acknowledges_what_it_stored() {
    // Given a database that refuses one event id when it is inserted (as a trigger or a
    // constraint refuses an event it cannot take),
    let (_dir, db) = common::temp_db();
    expect_success(&run(&db, &["init"]));
    block_on(crate::store::refuse_event_id(&db, "middle"));
    // when three lines arrive at once, the refused one between two good ones (they share a
    // group commit),
    let input = [
        test_line("good-1", "s", 1),
        test_line("middle", "s", 2),
        test_line("good-3", "t", 3),
    ]
    .join("\n")
        + "\n";
    let out = run_with_input(&db, &["--format", "json", "append", "-"], input.as_bytes());
    // then the command fails with exit code 2 and one line naming line 2 and the database's
    // reason,
    let stderr = common::stderr_text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("healstore: error: line 2: ") && stderr.contains("refused by the test"),
        "{stderr}"
    );
    // line 1 was committed and acknowledged; line 3 was too if it had been read before the
    // refusal came back (it is never lost to the refusal of another line),
    let acks = acked(&out);
    assert_eq!(acks[0], (1, "good-1".to_owned(), false), "{acks:?}");
    assert!(
        acks.iter()
            .all(|(line, _, duplicate)| [1, 3].contains(line) && !duplicate),
        "{acks:?}"
    );
    // and exactly what was acknowledged is stored: not the refused line.
    let acked_ids: Vec<String> = acks.into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(stored_ids(&db), acked_ids);
}

#[test]
fn the_commands_after_a_demo_see_its_period_in_their_default_window() {
    let dir = tempfile::tempdir().unwrap();
    // With the wall clock: the demo's period ends at the present, so the default window of
    // the next commands (the last 24 h, at a later instant) holds all of it.
    let db = dir.path().join("wall.db");
    let demo = json(&expect_success(&run(
        &db,
        &["--format", "json", "demo", "--ticks", "40"],
    )));
    let failures = demo["failures"]["failures"].as_u64().unwrap();
    assert!(failures > 0, "{demo}");
    let stats = json(&expect_success(&run(&db, &["--format", "json", "stats"])));
    assert_eq!(stats["total_failures"].as_u64(), Some(failures), "{stats}");
    let dashboard = json(&expect_success(&run(
        &db,
        &["--format", "json", "dashboard"],
    )));
    assert_eq!(
        dashboard["overall"]["total_failures"].as_u64(),
        Some(failures)
    );

    // With `--now`: the period is the ticks before it.
    let db = dir.path().join("now.db");
    let demo = json(&expect_success(&run(
        &db,
        &["--now", NOW, "--format", "json", "demo", "--ticks", "40"],
    )));
    assert_eq!(demo["simulated_until"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(demo["simulated_from"], "2025-12-31T23:56:40.000000Z");
    let stats = json(&expect_success(&run(
        &db,
        &["--now", NOW, "--format", "json", "stats"],
    )));
    assert_eq!(
        stats["total_failures"], demo["failures"]["failures"],
        "{stats}"
    );
    // A second run at the same instant has nothing left to simulate: refused, nothing written.
    let head = sql_head(&db);
    let err = expect_error(
        &run(&db, &["--now", NOW, "demo", "--ticks", "40"]),
        "nothing to simulate yet",
    );
    assert!(err.contains("--now"), "{err}");
    assert_eq!(sql_head(&db), head);
    // A later one continues after the first with the ticks that fit.
    let later = json(&expect_success(&run(
        &db,
        &[
            "--now",
            "2026-01-01T00:01:00Z",
            "--format",
            "json",
            "demo",
            "--ticks",
            "40",
        ],
    )));
    assert_eq!(later["ticks"], 11, "{later}");
    assert_eq!(later["simulated_until"], "2026-01-01T00:01:00.000000Z");
}

fn sql_head(db: &Path) -> i64 {
    let out = expect_success(&run(db, &["--format", "json", "verify"]));
    json(&out)["head_position"].as_i64().unwrap()
}

#[test]
fn reading_state_does_not_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    for command in ["circuits", "states", "tick"] {
        expect_error(&run(&missing, &[command]), "does not exist");
        assert!(!missing.exists(), "`{command}` created the database");
    }
    std::fs::write(&missing, b"").unwrap();
    for command in ["circuits", "states", "tick"] {
        expect_error(&run(&missing, &[command]), "the file is empty");
        assert_eq!(std::fs::read(&missing).unwrap(), b"");
    }
}

/// Removes, at any depth, the figures measured on the wall clock (how long the simulated
/// coordinator's calls took in real time: `avg_healing_time_ms`) and the database's name.
fn without_wall_clock(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("avg_healing_time_ms");
            m.remove("database");
            m.values_mut().for_each(without_wall_clock);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_wall_clock),
        _ => {}
    }
}

/// The failure ids of a database's `failure_detected` events, in log order.
fn failure_ids(db: &Path) -> Vec<String> {
    export(db)
        .lines()
        .map(json)
        .filter(|e| e["event_type"] == "failure_detected")
        .map(|e| e["payload"]["failure_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_demo_with_its_preventions_and_a_continued_run_new_ids() {
    // Given two fresh databases, when the demo runs on each with the same seed and `--now`,
    let dir = tempfile::tempdir().unwrap();
    let demo = |name: &str| {
        let db = dir.path().join(name);
        let out = expect_success(&run(
            &db,
            &["--now", NOW, "--format", "json", "demo", "--seed", "7"],
        ));
        (db, json(&out))
    };
    let (one, mut first) = demo("one.db");
    let (two, mut second) = demo("two.db");
    // then prevention was at work: proposals approved by the policy and carried out, others
    // held back, and the dashboard compares them;
    let p = &first["dashboard"]["preventions"];
    assert!(p["proposed"].as_i64().unwrap() >= 5, "{p}");
    assert!(p["executed"].as_i64().unwrap() >= 1, "{p}");
    assert!(p["held_back"].as_i64().unwrap() >= 1, "{p}");
    assert!(!p["effects"].as_array().unwrap().is_empty(), "{p}");
    assert!(first["preventions"]["auto_approved"].as_u64().unwrap() >= 1);
    // and both runs are the same: the summary and the dashboard (but for the healing times
    // measured on the wall clock), the failure ids, and every prevention with its holdout.
    without_wall_clock(&mut first);
    without_wall_clock(&mut second);
    assert_eq!(first, second);
    let ids = failure_ids(&one);
    assert_eq!(ids, failure_ids(&two));
    let list = |db: &Path| {
        json(&expect_success(&run(
            db,
            &["--format", "json", "prevent", "list"],
        )))
    };
    assert_eq!(list(&one), list(&two));
    assert_eq!(
        ids.len() as u64,
        first["failures"]["failures"].as_u64().unwrap()
    );

    // A run continuing the log with the same seed heals new failures under new ids.
    let later = json(&expect_success(&run(
        &one,
        &[
            "--now",
            "2026-01-01T00:02:00Z",
            "--format",
            "json",
            "demo",
            "--seed",
            "7",
        ],
    )));
    let all = failure_ids(&one);
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a failure id was reused");
    assert_eq!(
        (all.len() - ids.len()) as u64,
        later["failures"]["failures"].as_u64().unwrap()
    );
    assert!(
        later["failures"]["failures"].as_u64().unwrap() > 0,
        "{later}"
    );
}
