//! `healstore audit --since T --until T`: every automated action in a window, checked against
//! the events the real healer wrote (a demo run, `record failure` + `record outcome`, and a
//! hand-written log for the rarer results).

use std::collections::HashMap;
use std::path::Path;

use healstore::RecordedEvent;
use healstore::audit::{AuditQuery, AuditRecord};
use serde_json::{Value, json};

use crate::common::{
    assert_same_files, block_on, db_files, expect_error, expect_success, read_all, run,
    run_with_input, temp_db,
};

/// The JSON Lines record's fields, in order: the documented contract.
const FIELDS: &[&str] = &[
    "time",
    "source",
    "position",
    "event_id",
    "failure_id",
    "failure_type",
    "agent_id",
    "severity",
    "detected_at",
    "strategy",
    "decision",
    "reason",
    "action",
    "target",
    "planned",
    "result",
    "error",
    "duration_ms",
    "remediated",
    "remediated_at",
    "remediated_by",
    "recovered",
    "recovered_at",
    "recovered_how",
];

const DAY_START: &str = "2026-11-01T00:00:00Z";
const DAY_END: &str = "2026-11-02T00:00:00Z";

/// `audit --format json` with `args`, parsed; every line must have exactly the documented
/// fields, in order.
fn report(db: &Path, args: &[&str]) -> Vec<AuditRecord> {
    let mut all = vec!["--format", "json", "audit"];
    all.extend_from_slice(args);
    let out = expect_success(&run(db, &all));
    out.lines()
        .map(|l| {
            let v: serde_json::Map<String, Value> =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let keys: Vec<&str> = v.keys().map(String::as_str).collect();
            let mut sorted = FIELDS.to_vec();
            sorted.sort_unstable();
            assert_eq!(keys, sorted, "fields of {l}");
            let pos: Vec<usize> = FIELDS
                .iter()
                .map(|f| l.find(&format!("\"{f}\":")).unwrap())
                .collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "field order of {l}");
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .collect()
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn time(e: &RecordedEvent) -> String {
    healstore::time::format_time(e.occurred_at)
}

/// The report the events call for, computed here from the log in position order (an
/// independent model of the documented rules), for actions in `[since, until)`.
fn expected(events: &[RecordedEvent], since: &str, until: &str) -> Vec<AuditRecord> {
    let (since, until) = (
        healstore::time::parse_time(since).unwrap(),
        healstore::time::parse_time(until).unwrap(),
    );
    let mut detected: HashMap<String, &RecordedEvent> = HashMap::new();
    let mut resolved: HashMap<String, &RecordedEvent> = HashMap::new();
    let mut recovered: HashMap<String, &RecordedEvent> = HashMap::new();
    for e in events {
        let fid = text(&e.payload, "failure_id").unwrap_or_default();
        match e.event_type.as_str() {
            "failure_detected" => {
                detected.entry(fid).or_insert(e);
            }
            "failure_resolved" => {
                resolved.entry(fid).or_insert(e);
            }
            "failure_recovered" => {
                recovered.entry(fid).or_insert(e);
            }
            _ => {}
        }
    }
    let mut out: Vec<(String, i64, usize, AuditRecord)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if !["action_executed", "healing_attempted"].contains(&e.event_type.as_str())
            || e.occurred_at < since
            || e.occurred_at >= until
        {
            continue;
        }
        let p = &e.payload;
        let fid = text(p, "failure_id");
        let strategy = text(p, "strategy").unwrap();
        let d = fid.as_ref().and_then(|f| detected.get(f));
        let r = fid.as_ref().and_then(|f| resolved.get(f));
        let rec = fid.as_ref().and_then(|f| recovered.get(f));
        let same = |x: &RecordedEvent, ty: &str| {
            x.event_type == ty
                && text(&x.payload, "failure_id") == fid
                && text(&x.payload, "strategy").as_deref() == Some(&strategy)
        };
        let base = AuditRecord {
            time: time(e),
            source: e.event_type.clone(),
            position: e.position,
            event_id: e.event_id.clone(),
            failure_id: fid.clone(),
            failure_type: d.and_then(|d| text(&d.payload, "failure_type")),
            agent_id: text(p, "agent_id"),
            severity: d.and_then(|d| text(&d.payload, "severity")),
            detected_at: d.map(|d| time(d)),
            strategy: strategy.clone(),
            decision: None,
            reason: None,
            action: None,
            target: None,
            planned: None,
            result: String::new(),
            error: None,
            duration_ms: None,
            remediated: r.is_some(),
            remediated_at: r.map(|r| time(r)),
            remediated_by: r.and_then(|r| text(&r.payload, "strategy")),
            recovered: rec.is_some(),
            recovered_at: rec.map(|r| time(r)),
            recovered_how: rec.and_then(|r| text(&r.payload, "how")),
        };
        if e.event_type == "action_executed" {
            let decision = fid.as_ref().and_then(|_| {
                events[..i]
                    .iter()
                    .rev()
                    .find(|x| same(x, "healing_attempted"))
            });
            let ok = p["success"].as_bool().unwrap();
            out.push((
                time(e),
                e.position,
                0,
                AuditRecord {
                    decision: decision.and_then(|d| text(&d.payload, "decision")),
                    reason: decision.and_then(|d| text(&d.payload, "reason")),
                    action: text(p, "action"),
                    target: text(p, "target"),
                    result: if ok { "success" } else { "error" }.into(),
                    error: text(p, "error"),
                    duration_ms: p["duration_ms"].as_i64(),
                    ..base
                },
            ));
            continue;
        }
        let decision = text(p, "decision").unwrap();
        if !["act", "delegated", "shadow", "suggest_only", "withheld"].contains(&decision.as_str())
        {
            continue;
        }
        let later = &events[i + 1..];
        let completion = later.iter().position(|x| same(x, "healing_completed"));
        let planned = p["actions"].as_array().cloned().unwrap_or_default();
        let (skip, result, ms) = match (decision.as_str(), completion) {
            ("act", None) => (0, "unrecorded", None),
            ("act", Some(c)) => (
                later[..c]
                    .iter()
                    .filter(|x| same(x, "action_executed"))
                    .count(),
                "skipped",
                None,
            ),
            ("delegated", None) => (0, "pending", None),
            ("delegated", Some(c)) => (
                0,
                if later[c].payload["success"] == json!(true) {
                    "success"
                } else {
                    "error"
                },
                later[c].payload["duration_ms"].as_i64(),
            ),
            _ => (0, "not_executed", None),
        };
        for (k, a) in planned.iter().enumerate().skip(skip) {
            out.push((
                time(e),
                e.position,
                k,
                AuditRecord {
                    decision: Some(decision.clone()),
                    reason: text(p, "reason"),
                    action: text(a, "action"),
                    target: text(a, "task_id").or_else(|| text(a, "agent_id")),
                    planned: Some(a.clone()),
                    result: result.into(),
                    error: (result == "error")
                        .then(|| "the caller reported a failed outcome".to_owned()),
                    duration_ms: ms,
                    ..base.clone()
                },
            ));
        }
        if planned.is_empty() && decision != "act" {
            out.push((
                time(e),
                e.position,
                0,
                AuditRecord {
                    decision: Some(decision.clone()),
                    reason: text(p, "reason"),
                    result: result.into(),
                    duration_ms: ms,
                    ..base
                },
            ));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    out.into_iter().map(|(_, _, _, r)| r).collect()
}

fn demo_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = temp_db();
    // The demo's 40 ticks of 5 s end at `--now`: they start at DAY_START.
    let end = healstore::time::parse_time(DAY_START).unwrap() + chrono::Duration::seconds(200);
    let end = healstore::time::format_time(end);
    expect_success(&run(
        &db,
        &[
            "--now", &end, "--format", "json", "demo", "--ticks", "40", "--seed", "3",
        ],
    ));
    (dir, db)
}

#[test]
fn the_report_lists_every_action_the_healer_took_with_its_failure_decision_and_resolution() {
    // Given a log written by the healer over a simulated fleet,
    let (_dir, db) = demo_db();
    let events = block_on(read_all(&db));
    let executed = events
        .iter()
        .filter(|e| e.event_type == "action_executed")
        .count();
    assert!(executed >= 10, "the demo acted only {executed} times");

    // when the day's report is asked for,
    let got = report(&db, &["--since", DAY_START, "--until", DAY_END]);

    // then it has a record for every action_executed event, and exactly the records the events
    // call for, in time order,
    let want = expected(&events, DAY_START, DAY_END);
    assert_eq!(
        got.iter().filter(|r| r.source == "action_executed").count(),
        executed
    );
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // with the failure's facts filled in for actions on failures, failed actions carrying
    // their error, and remediations and recoveries recorded,
    for r in got.iter().filter(|r| r.failure_id.is_some()) {
        assert!(r.failure_type.is_some() && r.severity.is_some() && r.detected_at.is_some());
        assert!(r.decision.is_some() && r.reason.is_some(), "{r:?}");
        assert_eq!(r.remediated, r.remediated_at.is_some());
        assert_eq!(r.recovered, r.recovered_at.is_some());
        assert_eq!(r.recovered, r.recovered_how.is_some());
    }
    assert!(got.iter().any(|r| r.result == "error" && r.error.is_some()));
    assert!(got.iter().any(|r| r.remediated));
    assert!(got.iter().any(|r| r.recovered));

    // and a table for people says the same, a line per record.
    let table = expect_success(&run(
        &db,
        &["audit", "--since", DAY_START, "--until", DAY_END],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME")
            && lines[0].contains("REMEDIATED")
            && lines[0].contains("RECOVERED")
    );
    assert_eq!(lines.len(), got.len() + 1);
    for (line, r) in lines[1..].iter().zip(&got) {
        assert!(line.starts_with(&r.time), "{line}");
        assert!(line.contains(r.action.as_deref().unwrap()), "{line}");
    }
}

#[test]
fn window_edges_agent_filter_and_paging() {
    let (_dir, db) = demo_db();
    let all = report(&db, &["--since", DAY_START, "--until", DAY_END]);
    assert!(all.len() >= 10);
    // A moment at which an action happened, in the middle of the day's records.
    let edge = all[all.len() / 2].time.clone();
    let before = report(&db, &["--since", DAY_START, "--until", &edge]);
    let after = report(&db, &["--since", &edge, "--until", DAY_END]);
    // The start is inclusive, the end exclusive: the action at the edge is in `after` only,
    // and the two halves make up the whole.
    assert!(before.iter().all(|r| r.time < edge));
    assert_eq!(after[0].time, edge);
    assert_eq!([before.clone(), after].concat(), all);
    // `--until` defaults to `--now`.
    let by_now = {
        let out = expect_success(&run(
            &db,
            &[
                "--now", &edge, "--format", "json", "audit", "--since", DAY_START,
            ],
        ));
        out.lines()
            .map(|l| serde_json::from_str::<AuditRecord>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(by_now, before);

    // `--agent` keeps the records naming that agent, and only those.
    let agent = all
        .iter()
        .find_map(|r| r.agent_id.clone())
        .expect("an action on an agent");
    let mine = report(
        &db,
        &["--since", DAY_START, "--until", DAY_END, "--agent", &agent],
    );
    let want: Vec<AuditRecord> = all
        .iter()
        .filter(|r| r.agent_id.as_deref() == Some(&agent))
        .cloned()
        .collect();
    assert!(!mine.is_empty());
    assert_eq!(mine, want);
    let none = report(
        &db,
        &[
            "--since", DAY_START, "--until", DAY_END, "--agent", "nobody",
        ],
    );
    assert!(none.is_empty());

    // Pages of two events give the same report as the command's pages (ties on time are
    // common: actions of one tick share an instant).
    let paged: Vec<AuditRecord> = block_on(async {
        use futures_util::StreamExt;
        let store = healstore::Store::open(
            &db,
            healstore::StoreOptions {
                page_size: 2,
                create: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let window = healstore::Window::new(
            healstore::time::parse_time(DAY_START).unwrap(),
            healstore::time::parse_time(DAY_END).unwrap(),
        )
        .unwrap();
        let records: Vec<AuditRecord> = healstore::audit::records(
            &store,
            AuditQuery {
                window,
                agent_id: None,
            },
        )
        .map(|r| r.unwrap())
        .collect()
        .await;
        store.close().await.unwrap();
        records
    });
    assert_eq!(paged, all);
}

#[test]
fn delegated_shadow_suggest_only_and_withheld_decisions_are_listed_with_their_outcome() {
    let (dir, db) = temp_db();
    let cfg = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let shadow = cfg("shadow.toml", "mode = \"shadow\"\n");
    let suggest = cfg("suggest.toml", "mode = \"suggest_only\"\n");
    let limited = cfg(
        "limited.toml",
        "[limits]\nmax_actions_per_agent_per_hour = 1\n",
    );
    let rec = |now: &str, extra: &[&str]| {
        let mut args = vec!["--now", now, "record"];
        args.extend_from_slice(extra);
        expect_success(&run(&db, &args));
    };
    // Decision mode (no coordinator): the decisions are delegated to the caller, who reports
    // a success, a failure, or nothing yet.
    rec(
        "2026-11-01T10:00:00Z",
        &[
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a-1",
            "--id",
            "f-1",
        ],
    );
    rec(
        "2026-11-01T10:05:00Z",
        &[
            "outcome",
            "--failure",
            "f-1",
            "--success",
            "--duration-ms",
            "1500",
        ],
    );
    rec(
        "2026-11-01T10:10:00Z",
        &[
            "failure",
            "--type",
            "resource_exhaustion",
            "--id",
            "f-2",
            "--meta",
            r#"{"resource_type":"tokens","current_usage":95,"limit":100}"#,
        ],
    );
    rec(
        "2026-11-01T10:11:00Z",
        &[
            "outcome",
            "--failure",
            "f-2",
            "--failed",
            "--duration-ms",
            "700",
        ],
    );
    rec(
        "2026-11-01T10:20:00Z",
        &[
            "failure",
            "--type",
            "task_timeout",
            "--agent",
            "a-2",
            "--task",
            "t-1",
            "--id",
            "f-3",
        ],
    );
    // Shadow and suggest-only modes decide and record, and do nothing.
    rec(
        "2026-11-01T10:30:00Z",
        &[
            "--config",
            &shadow,
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a-3",
            "--id",
            "f-4",
        ],
    );
    rec(
        "2026-11-01T10:40:00Z",
        &[
            "--config",
            &suggest,
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a-4",
            "--id",
            "f-5",
        ],
    );
    // Over the healer's limit, an action is withheld.
    for (now, id, task) in [
        ("2026-11-01T10:50:00Z", "f-6", "t-6"),
        ("2026-11-01T10:51:00Z", "f-7", "t-7"),
    ] {
        rec(
            now,
            &[
                "--config",
                &limited,
                "failure",
                "--type",
                "task_timeout",
                "--agent",
                "a-9",
                "--task",
                task,
                "--id",
                id,
            ],
        );
    }

    let got = report(&db, &["--since", DAY_START, "--until", DAY_END]);
    let events = block_on(read_all(&db));
    assert_eq!(got, expected(&events, DAY_START, DAY_END));
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, Option<i64>, bool);
    let summary: Vec<Row> = got
        .iter()
        .map(|r| {
            (
                r.failure_id.as_deref().unwrap(),
                r.decision.as_deref().unwrap(),
                r.action.as_deref().unwrap(),
                r.result.as_str(),
                r.duration_ms,
                r.remediated,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "f-1",
                "delegated",
                "restart_agent",
                "success",
                Some(1500),
                true
            ),
            ("f-2", "delegated", "pause_tasks", "error", Some(700), false),
            (
                "f-2",
                "delegated",
                "set_concurrency",
                "error",
                Some(700),
                false
            ),
            ("f-2", "delegated", "set_caching", "error", Some(700), false),
            (
                "f-2",
                "delegated",
                "set_prompt_simplification",
                "error",
                Some(700),
                false
            ),
            ("f-3", "delegated", "retry_task", "pending", None, false),
            (
                "f-4",
                "shadow",
                "restart_agent",
                "not_executed",
                None,
                false
            ),
            (
                "f-5",
                "suggest_only",
                "restart_agent",
                "not_executed",
                None,
                false
            ),
            ("f-6", "delegated", "retry_task", "pending", None, false),
            ("f-7", "withheld", "retry_task", "not_executed", None, false),
        ]
    );
    let f1 = &got[0];
    assert_eq!(f1.time, "2026-11-01T10:00:00.000000Z");
    assert_eq!(
        f1.remediated_at.as_deref(),
        Some("2026-11-01T10:05:00.000000Z")
    );
    assert_eq!(f1.remediated_by.as_deref(), Some("AgentRestart"));
    assert_eq!(f1.agent_id.as_deref(), Some("a-1"));
    assert_eq!(f1.severity.as_deref(), Some("high"));
    assert_eq!(f1.target.as_deref(), Some("a-1"));
    assert_eq!(got[5].target.as_deref(), Some("t-1"));
    assert!(got[9].reason.as_deref().unwrap().contains("withheld"));
}

/// A hand-written failure story for `import`.
fn line(id: &str, stream: &str, ty: &str, at: &str, payload: Value) -> String {
    json!({"event_id": id, "stream_id": stream, "event_type": ty, "occurred_at": at,
           "payload": payload})
    .to_string()
}

#[test]
fn actions_never_executed_and_actions_on_signals_are_reported() {
    let (_dir, db) = temp_db();
    let detected = |id: &str, at: &str| {
        line(
            &format!("{id}-d"),
            &format!("failure-{id}"),
            "failure_detected",
            at,
            json!({"failure_id": id, "failure_type": "resource_exhaustion", "severity": "critical"}),
        )
    };
    let actions = json!([
        {"action": "pause_tasks", "priorities": ["LOW"]},
        {"action": "set_concurrency", "max_per_agent": 2},
        {"action": "set_caching", "enabled": true},
    ]);
    let attempted = |id: &str, at: &str| {
        line(
            &format!("{id}-a"),
            &format!("failure-{id}"),
            "healing_attempted",
            at,
            json!({"failure_id": id, "strategy": "GradualDegradation", "decision": "act",
                   "reason": "degrade", "actions": actions}),
        )
    };
    let input = [
        // g-1: the second of three actions fails; the third is never executed.
        detected("g-1", "2026-11-01T08:00:00Z"),
        attempted("g-1", "2026-11-01T08:00:00Z"),
        line(
            "g-1-x1",
            "failure-g-1",
            "action_executed",
            "2026-11-01T08:00:01Z",
            json!({"failure_id": "g-1", "strategy": "GradualDegradation",
                    "action": "pause_tasks", "success": true, "duration_ms": 12}),
        ),
        line(
            "g-1-x2",
            "failure-g-1",
            "action_executed",
            "2026-11-01T08:00:02Z",
            json!({"failure_id": "g-1", "strategy": "GradualDegradation",
                    "action": "set_concurrency", "success": false, "error": "refused",
                    "duration_ms": 30}),
        ),
        line(
            "g-1-c",
            "failure-g-1",
            "healing_completed",
            "2026-11-01T08:00:02Z",
            json!({"failure_id": "g-1", "strategy": "GradualDegradation", "success": false,
                    "duration_ms": 42}),
        ),
        // g-2: decided to act, and no result was ever recorded (the process stopped).
        detected("g-2", "2026-11-01T09:00:00Z"),
        attempted("g-2", "2026-11-01T09:00:00Z"),
        // An action on a signal (a circuit's trial): no failure, no decision.
        line(
            "s-1",
            "actions-CircuitBreaker-a-5",
            "action_executed",
            "2026-11-01T09:30:00Z",
            json!({"strategy": "CircuitBreaker", "agent_id": "a-5", "action": "register_agent",
                    "target": "a-5", "success": true, "duration_ms": 3}),
        ),
    ]
    .join("\n");
    expect_success(&run_with_input(&db, &["import", "-"], input.as_bytes()));

    let got = report(&db, &["--since", DAY_START, "--until", DAY_END]);
    assert_eq!(got, expected(&block_on(read_all(&db)), DAY_START, DAY_END));
    let summary: Vec<(&str, &str, &str, Option<&str>)> = got
        .iter()
        .map(|r| {
            (
                r.time.as_str(),
                r.action.as_deref().unwrap(),
                r.result.as_str(),
                r.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "2026-11-01T08:00:00.000000Z",
                "set_caching",
                "skipped",
                None
            ),
            (
                "2026-11-01T08:00:01.000000Z",
                "pause_tasks",
                "success",
                None
            ),
            (
                "2026-11-01T08:00:02.000000Z",
                "set_concurrency",
                "error",
                Some("refused")
            ),
            (
                "2026-11-01T09:00:00.000000Z",
                "pause_tasks",
                "unrecorded",
                None
            ),
            (
                "2026-11-01T09:00:00.000000Z",
                "set_concurrency",
                "unrecorded",
                None
            ),
            (
                "2026-11-01T09:00:00.000000Z",
                "set_caching",
                "unrecorded",
                None
            ),
            (
                "2026-11-01T09:30:00.000000Z",
                "register_agent",
                "success",
                None
            ),
        ]
    );
    assert_eq!(got[1].decision.as_deref(), Some("act"));
    assert_eq!(got[1].severity.as_deref(), Some("critical"));
    assert_eq!(got[2].duration_ms, Some(30));
    let signal = &got[6];
    assert_eq!(signal.failure_id, None);
    assert_eq!(signal.decision, None);
    assert_eq!(signal.agent_id.as_deref(), Some("a-5"));
    assert!(!signal.remediated && !signal.recovered);
}

#[test]
fn bad_report_arguments_get_one_line_errors_and_change_nothing() {
    let (_dir, db) = demo_db();
    let before = db_files(&db);
    for (args, needle) in [
        (
            vec!["audit", "--since", DAY_END, "--until", DAY_START],
            "is not before",
        ),
        (
            vec!["audit", "--since", DAY_START, "--until", DAY_START],
            "is not before",
        ),
        (vec!["audit", "--since", "yesterday"], "RFC 3339"),
        (
            vec![
                "audit",
                "--since",
                DAY_START,
                "--until",
                "2026-13-01T00:00:00Z",
            ],
            "RFC 3339",
        ),
        (vec!["audit", "--until", DAY_END], "--since"),
        (
            vec!["audit", "f-1", "--since", DAY_START],
            "cannot be used with",
        ),
        (
            vec![
                "--now",
                "2026-10-01T00:00:00Z",
                "audit",
                "--since",
                DAY_START,
            ],
            "is not before",
        ),
    ] {
        expect_error(&run(&db, &args), needle);
    }
    assert_same_files(&before, &db_files(&db), "bad audit arguments");
    // A database that does not exist is not created by a report.
    let missing = db.with_file_name("missing.db");
    let out = run(&missing, &["audit", "--since", DAY_START]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
}
