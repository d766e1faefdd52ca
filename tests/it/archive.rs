//! Retention: `archive` moves the oldest events into a compressed file; analytics for the
//! archived periods, the chain across the cut and strategy state all survive; the file verifies
//! on its own and imports; a SIGKILL at any moment leaves either the old log or the cut one.

use std::io::{Read, Write};
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{
    Rng, assert_same_files, block_on, db_files, expect_error, expect_success, healstore,
    raw_connection, run, temp_db,
};

const NOW: &str = "2026-11-01T12:00:00Z";
const CUT: &str = "2026-11-01T12:02:30Z";

/// A demo run whose simulated period starts at `start` (the demo's period ends at `--now`).
fn demo(path: &Path, start: &str, ticks: &str) {
    let end = healstore::time::parse_time(start).unwrap()
        + chrono::Duration::seconds(5 * ticks.parse::<i64>().unwrap());
    let end = healstore::time::format_time(end);
    expect_success(&run(
        path,
        &["--now", &end, "demo", "--ticks", ticks, "--seed", "9"],
    ));
}

fn json(path: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = run(path, &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text} / {}", String::from_utf8_lossy(&out.stderr)))
}

fn scalar(path: &Path, q: &str) -> i64 {
    block_on(async {
        let mut c = raw_connection(path).await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(q.to_string()))
            .fetch_one(&mut c)
            .await
            .unwrap()
    })
}

#[test]
fn archiving_keeps_analytics_the_chain_and_strategy_state() {
    let (dir, path) = temp_db();
    demo(&path, NOW, "60");
    let stats_before = json(&path, &["--now", NOW, "stats", "--window", "1h"]);
    let circuits_before = json(
        &path,
        &[
            "circuit-report",
            "--since",
            NOW,
            "--until",
            "2026-11-01T13:00:00Z",
        ],
    );
    assert!(
        circuits_before["total_opens"].as_i64().unwrap() > 0,
        "the demo opens circuits: {circuits_before}"
    );
    let states_before = json(&path, &["states"]);
    let events_before = scalar(&path, "SELECT COUNT(*) FROM events");
    let head_before = scalar(&path, "SELECT MAX(position) FROM events");
    let file = dir.path().join("old.jsonl.gz");

    let r = json(
        &path,
        &[
            "--now",
            "2026-11-01T13:00:00Z",
            "archive",
            "--before",
            CUT,
            "--to",
            file.to_str().unwrap(),
        ],
    );
    let archived = r["events"].as_i64().unwrap();
    assert!(archived > 0 && archived < events_before, "{r}");
    assert_eq!(r["from_position"], 1);
    #[cfg(unix)]
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "the archive is readable by its owner only"
    );
    // The archived events left the log, every event after the cut stayed.
    let to = r["to_position"].as_i64().unwrap();
    assert_eq!(
        scalar(
            &path,
            &format!("SELECT COUNT(*) FROM events WHERE position <= {to}")
        ),
        0
    );
    // (The demo ran under its own preventions policy: the archive, a writing command, records
    // the configuration in effect again.)
    let configs = scalar(
        &path,
        &format!(
            "SELECT COUNT(*) FROM events WHERE position > {head_before} \
             AND event_type = 'configuration_changed'"
        ),
    );
    assert!(configs <= 1, "{configs}");
    assert_eq!(
        scalar(&path, "SELECT COUNT(*) FROM events"),
        events_before - archived + 1 + configs,
        "plus the events_archived record"
    );
    // Analytics over the archived period are unchanged (the read models keep it).
    assert_eq!(
        json(&path, &["--now", NOW, "stats", "--window", "1h"]),
        stats_before
    );
    // So is the circuits' history.
    assert_eq!(
        json(
            &path,
            &[
                "circuit-report",
                "--since",
                NOW,
                "--until",
                "2026-11-01T13:00:00Z"
            ]
        ),
        circuits_before
    );
    // Strategy state is unchanged.
    assert_eq!(json(&path, &["states"]), states_before);
    // The log and the archive verify, and the archive's end is the log's anchor.
    let v = json(&path, &["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["anchor_position"], to);
    let a = json(&path, &["verify", "--archive", file.to_str().unwrap()]);
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["recorded_in_database"], true);
    assert_eq!(a["events"], archived);
    // Healing goes on after the cut: stream versions continue, the chain continues.
    demo(&path, "2026-11-01T13:00:00Z", "20");
    assert_eq!(json(&path, &["verify"])["ok"], true);
    // The archive imports into a new database, where it verifies with the same end hash.
    let copy = dir.path().join("copy.db");
    expect_success(&run(&copy, &["import", file.to_str().unwrap()]));
    let vc = json(&copy, &["verify"]);
    assert_eq!(vc["ok"], true, "{vc}");
    assert_eq!(vc["events"], archived);
    assert_eq!(vc["head_hash"], a["header"]["end_hash"]);
    // A rebuild would lose the archived periods: refused, nothing changed.
    let before = db_files(&path);
    expect_error(&run(&path, &["rebuild"]), "archived");
    assert_same_files(&before, &db_files(&path), "a refused rebuild");
}

#[test]
fn a_second_archive_continues_the_first_and_nothing_to_archive_changes_nothing() {
    let (dir, path) = temp_db();
    demo(&path, NOW, "60");
    let first = dir.path().join("a1.gz");
    let second = dir.path().join("a2.gz");
    let r1 = json(
        &path,
        &[
            "archive",
            "--before",
            "2026-11-01T12:01:30Z",
            "--to",
            first.to_str().unwrap(),
        ],
    );
    let r2 = json(
        &path,
        &[
            "archive",
            "--before",
            "2026-11-01T12:03:30Z",
            "--to",
            second.to_str().unwrap(),
        ],
    );
    assert_eq!(
        r2["from_position"].as_i64().unwrap(),
        r1["to_position"].as_i64().unwrap() + 1
    );
    let a2 = json(&path, &["verify", "--archive", second.to_str().unwrap()]);
    assert_eq!(a2["ok"], true, "{a2}");
    assert_eq!(
        a2["header"]["anchor_hash"], r1["end_hash"],
        "the chain runs across both files"
    );
    assert_eq!(
        json(&path, &["verify", "--archive", first.to_str().unwrap()])["ok"],
        true
    );
    assert_eq!(json(&path, &["verify"])["ok"], true);
    // An earlier cut than the log's start: nothing to do, nothing written.
    let events = scalar(&path, "SELECT COUNT(*) FROM events");
    let anchor = scalar(&path, "SELECT position FROM chain_anchor");
    let none = dir.path().join("none.gz");
    let r = json(
        &path,
        &[
            "archive",
            "--before",
            "2026-11-01T12:00:00Z",
            "--to",
            none.to_str().unwrap(),
        ],
    );
    assert_eq!(r["archived"], 0);
    assert!(!none.exists());
    assert_eq!(scalar(&path, "SELECT COUNT(*) FROM events"), events);
    assert_eq!(scalar(&path, "SELECT position FROM chain_anchor"), anchor);
}

#[test]
fn an_altered_archive_is_named_by_position() {
    let (dir, path) = temp_db();
    demo(&path, NOW, "40");
    let file = dir.path().join("a.gz");
    json(
        &path,
        &["archive", "--before", CUT, "--to", file.to_str().unwrap()],
    );
    // Decompress, change one event's payload, compress again.
    let mut text = String::new();
    flate2_read(&file, &mut text);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut e: serde_json::Value = serde_json::from_str(&lines[10]).unwrap();
    let position = e["position"].as_i64().unwrap();
    e["payload"]["forged"] = serde_json::json!(true);
    lines[10] = e.to_string();
    let forged = dir.path().join("forged.gz");
    flate2_write(&forged, &(lines.join("\n") + "\n"));
    let out = run(
        &path,
        &[
            "--format",
            "json",
            "verify",
            "--archive",
            forged.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["position"], position);
    assert!(r["detail"].as_str().unwrap().contains("altered"), "{r}");
    // A truncated archive (its last event gone) is caught too.
    lines.truncate(lines.len() - 1);
    let mut original = String::new();
    flate2_read(&file, &mut original);
    let mut ol: Vec<&str> = original.lines().collect();
    ol.pop();
    let cut = dir.path().join("cut.gz");
    flate2_write(&cut, &(ol.join("\n") + "\n"));
    let out = run(&path, &["verify", "--archive", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_archive_arguments_change_nothing() {
    let (dir, path) = temp_db();
    demo(&path, NOW, "10");
    let before = db_files(&path);
    expect_error(
        &run(&path, &["archive", "--before", "soon", "--to", "x.gz"]),
        "RFC 3339",
    );
    expect_error(
        &run(
            &path,
            &[
                "archive",
                "--before",
                CUT,
                "--to",
                dir.path().to_str().unwrap(),
            ],
        ),
        "directory",
    );
    expect_error(&run(&path, &["archive", "--to", "x.gz"]), "--before");
    let not_archive = dir.path().join("plain.txt");
    std::fs::write(&not_archive, "hello\n").unwrap();
    expect_error(
        &run(
            &path,
            &["verify", "--archive", not_archive.to_str().unwrap()],
        ),
        "",
    );
    assert_same_files(&before, &db_files(&path), "bad archive arguments");
}

#[test]
fn sigkill_during_archive_leaves_the_old_log_or_the_cut_one() {
    let (dir, path) = temp_db();
    demo(&path, NOW, "400");
    let stats = json(&path, &["--now", NOW, "stats", "--window", "2h"]);
    let events = scalar(&path, "SELECT COUNT(*) FROM events");
    let original = dir.path().join("original.db");
    block_on(async {
        let mut c = raw_connection(&path).await;
        sqlx::query("VACUUM INTO ?")
            .bind(original.to_str().unwrap())
            .execute(&mut c)
            .await
            .unwrap();
    });
    let mut rng = Rng::seeded("sigkill during archive");
    let (mut cut, mut whole) = (0, 0);
    for round in 0..6 {
        let db = dir.path().join(format!("round-{round}.db"));
        std::fs::copy(&original, &db).unwrap();
        let file = dir.path().join(format!("round-{round}.gz"));
        let mut child = healstore(&db)
            .args([
                "--now",
                "2026-11-01T14:00:00Z",
                "archive",
                "--before",
                "2026-11-01T12:20:00Z",
                "--to",
            ])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.between(5, 400));
        let started = Instant::now();
        while started.elapsed() < wait {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        let killed = status.signal() == Some(9);
        // Whatever happened: the log verifies, analytics are unchanged, no event is lost.
        let v = json(&db, &["verify"]);
        assert_eq!(v["ok"], true, "round {round}: {v}");
        assert_eq!(
            json(&db, &["--now", NOW, "stats", "--window", "2h"]),
            stats,
            "round {round}"
        );
        let anchor = v["anchor_position"].as_i64().unwrap();
        let live = scalar(&db, "SELECT COUNT(*) FROM events");
        if anchor == 0 {
            whole += 1;
            assert!(live >= events, "round {round}: nothing may be lost");
        } else {
            cut += 1;
            // The archive file is complete and is the one the log records.
            let a = json(&db, &["verify", "--archive", file.to_str().unwrap()]);
            assert_eq!(a["ok"], true, "round {round} (killed: {killed}): {a}");
            assert_eq!(a["events"].as_i64().unwrap(), anchor);
        }
        // And archiving again completes.
        let again = dir.path().join(format!("again-{round}.gz"));
        expect_success(&run(
            &db,
            &[
                "--now",
                "2026-11-01T14:00:00Z",
                "archive",
                "--before",
                "2026-11-01T12:20:00Z",
                "--to",
                again.to_str().unwrap(),
            ],
        ));
        assert_eq!(json(&db, &["verify"])["ok"], true);
    }
    eprintln!("{whole} rounds left the whole log, {cut} the cut one");
}

fn flate2_read(file: &Path, out: &mut String) {
    let bytes = std::fs::read(file).unwrap();
    let mut d = flate2::read::GzDecoder::new(&bytes[..]);
    d.read_to_string(out).unwrap();
}

fn flate2_write(file: &Path, text: &str) {
    let f = std::fs::File::create(file).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

#[test]
fn an_archive_is_refused_by_the_log_it_was_cut_from_and_imports_into_a_new_database() {
    let (dir, path) = temp_db();
    demo(&path, NOW, "60");
    let first = dir.path().join("first.gz");
    let r1 = json(
        &path,
        &[
            "--now",
            "2026-11-01T12:10:00Z",
            "archive",
            "--before",
            "2026-11-01T12:01:30Z",
            "--to",
            first.to_str().unwrap(),
        ],
    );
    assert!(r1["events"].as_i64().unwrap() > 0, "{r1}");
    let window = ["--now", NOW, "stats", "--window", "1h"];
    let stats = json(&path, &window);
    let before = db_files(&path);
    let refused = |file: &Path| {
        expect_error(
            &run(&path, &["import", file.to_str().unwrap()]),
            "was cut from this database",
        );
    };
    refused(&first);
    assert_same_files(
        &before,
        &db_files(&path),
        "a refused import of its own archive",
    );
    assert_eq!(json(&path, &window), stats, "nothing counted twice");
    // A second archive sweeps up the first cut's record: both stay refused.
    let second = dir.path().join("second.gz");
    let r2 = json(
        &path,
        &[
            "--now",
            "2026-11-02T00:00:00Z",
            "archive",
            "--before",
            "2026-11-01T23:00:00Z",
            "--to",
            second.to_str().unwrap(),
        ],
    );
    assert!(
        r2["to_position"].as_i64().unwrap() >= r1["recorded_at_position"].as_i64().unwrap(),
        "the second cut holds the first cut's record: {r1} {r2}"
    );
    let before = db_files(&path);
    refused(&first);
    refused(&second);
    assert_same_files(&before, &db_files(&path), "refused imports after two cuts");
    assert_eq!(json(&path, &window), stats);
    // Into a new database, both archives import, in order.
    let copy = dir.path().join("copy.db");
    expect_success(&run(&copy, &["import", first.to_str().unwrap()]));
    expect_success(&run(&copy, &["import", second.to_str().unwrap()]));
    assert_eq!(json(&copy, &["verify"])["ok"], true);
    assert_eq!(json(&copy, &window), stats);
}

#[test]
fn an_older_archive_verifies_after_a_later_archive_swept_up_its_record() {
    let (dir, path) = temp_db();
    demo(&path, NOW, "60");
    let files: Vec<_> = (1..=3)
        .map(|i| dir.path().join(format!("a{i}.gz")))
        .collect();
    // Each cut's events_archived record falls inside the next cut.
    for (i, (now, before)) in [
        ("2026-11-01T12:10:00Z", "2026-11-01T12:01:00Z"),
        ("2026-11-01T12:20:00Z", "2026-11-01T12:15:00Z"),
        ("2026-11-02T00:00:00Z", "2026-11-01T23:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = json(
            &path,
            &[
                "--now",
                now,
                "archive",
                "--before",
                before,
                "--to",
                files[i].to_str().unwrap(),
            ],
        );
        assert!(r["events"].as_i64().unwrap() > 0, "{r}");
    }
    assert_eq!(
        scalar(
            &path,
            "SELECT COUNT(*) FROM events WHERE event_type = 'events_archived'"
        ),
        1,
        "the earlier records were swept up"
    );
    for f in &files {
        let a = json(&path, &["verify", "--archive", f.to_str().unwrap()]);
        assert_eq!(a["ok"], true, "{}: {a}", f.display());
        assert_eq!(a["recorded_in_database"], true);
    }
    assert_eq!(json(&path, &["verify"])["ok"], true);
}

/// Every analytics answer over `windows`, as JSON, at a fixed `now`.
fn answers(path: &Path, now: &str, windows: &[(&str, &str)]) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (since, until) in windows {
        for command in [
            &["stats"][..],
            &["effectiveness"],
            &["recommendations"],
            &["dashboard"],
            &["mttr", "--bucket", "1m"],
            &["circuit-report"],
            &["predict", "--no-record"],
        ] {
            let mut args = vec!["--now", now];
            args.extend_from_slice(command);
            args.extend_from_slice(&["--since", since, "--until", until]);
            out.push((args.join(" "), json(path, &args)));
        }
    }
    out
}

#[test]
fn windows_cut_through_archived_hours_answer_as_before_the_archive() {
    // Given a fleet healed across two hours (11:57 to 12:05, 12:58 to 13:03),
    let (dir, path) = temp_db();
    demo(&path, "2026-11-01T11:57:00Z", "100");
    demo(&path, "2026-11-01T12:58:00Z", "60");
    // and windows that cut through hours at the edges, on either side of a cut at 13:01 and
    // across it, with and without whole hours between their edges,
    let now = "2026-11-01T13:10:00Z";
    let windows = [
        ("2026-11-01T12:59:00Z", "2026-11-01T13:00:30Z"),
        ("2026-11-01T11:58:00Z", "2026-11-01T12:02:00Z"),
        ("2026-11-01T13:00:00Z", "2026-11-01T13:02:00Z"),
        ("2026-11-01T12:58:30Z", "2026-11-01T13:05:00Z"),
        ("2026-11-01T11:58:00Z", "2026-11-01T13:01:30Z"),
        ("2026-11-01T12:00:45Z", "2026-11-01T13:00:45Z"),
        ("2026-11-01T11:00:00Z", "2026-11-01T14:00:00Z"),
        ("2026-11-01T12:03:35Z", "2026-11-01T12:03:45Z"),
    ];
    let before = answers(&path, now, &windows);
    // (each window holds healing results, and some in the hour the cut goes through)
    for (args, answer) in before.iter().filter(|(a, _)| a.contains(" stats ")) {
        assert!(
            answer["total_healings"].as_i64().unwrap() > 0,
            "{args}: {answer}"
        );
    }
    // when the events before 13:01 are archived,
    let file = dir.path().join("old.jsonl.gz");
    let r = json(
        &path,
        &[
            "--now",
            now,
            "archive",
            "--before",
            "2026-11-01T13:01:00Z",
            "--to",
            file.to_str().unwrap(),
        ],
    );
    let archived = r["events"].as_i64().unwrap();
    assert!(archived > 0, "{r}");
    assert!(
        scalar(
            &path,
            "SELECT COUNT(*) FROM events WHERE event_type = 'healing_completed'"
        ) > 0,
        "healing results remain in the log too"
    );
    // then every answer over every window is the same as before.
    let after = answers(&path, now, &windows);
    for ((args, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{args}");
    }
    // (the archive kept what those answers read of its events)
    assert!(scalar(&path, "SELECT COUNT(*) FROM archived_facts") > 0);
    // A second cut (a later archive) keeps them so too.
    let second = dir.path().join("later.jsonl.gz");
    let r = json(
        &path,
        &[
            "--now",
            now,
            "archive",
            "--before",
            "2026-11-01T13:02:00Z",
            "--to",
            second.to_str().unwrap(),
        ],
    );
    assert!(r["events"].as_i64().unwrap() > 0, "{r}");
    let again = answers(&path, now, &windows);
    for ((args, b), (_, a)) in before.iter().zip(&again) {
        assert_eq!(a, b, "after a second cut: {args}");
    }
    // The archives and the log imported into a new database answer the same as well.
    let copy = dir.path().join("copy.db");
    for f in [&file, &second] {
        expect_success(&run(&copy, &["import", f.to_str().unwrap()]));
    }
    let log = dir.path().join("log.jsonl");
    std::fs::write(&log, expect_success(&run(&path, &["export"]))).unwrap();
    expect_success(&run(&copy, &["import", log.to_str().unwrap()]));
    let restored = answers(&copy, now, &windows);
    for ((args, b), (_, a)) in before.iter().zip(&restored) {
        assert_eq!(a, b, "restored: {args}");
    }
}
