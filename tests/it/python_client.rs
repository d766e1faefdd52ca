//! The Python client (`clients/python/`) against a real `healstore serve`: its unit checks,
//! the example orchestrator end to end (its output, and the store afterwards), and its errors
//! and tokens (given to the server through `HEALSTORE_TOKENS`).
//!
//! These tests need `python3` (3.8 or later; the standard library only). Where it is missing
//! they fail, saying so: a machine that runs the suite is expected to have it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{CHILD_TIMEOUT, expect_success, run, temp_db, wait_with_deadline};
use crate::serve_common::Server;

const NOW: &str = "2026-11-01T12:00:00Z";
const READ: &str = "read-token-python-0123456789";
const WRITE: &str = "write-token-python-0123456789";

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// `python3` (or `$HEALSTORE_PYTHON`), checked to run: a test fails, clearly, without it.
fn python() -> Command {
    let exe = std::env::var("HEALSTORE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    match Command::new(&exe).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`{exe} --version` failed ({}): the Python client's tests need python3 \
             (set HEALSTORE_PYTHON to its path)",
            o.status
        ),
        Err(e) => panic!(
            "cannot run `{exe}` ({e}): the Python client's tests need python3 on the PATH \
             (or HEALSTORE_PYTHON set to its path); install it rather than skipping them"
        ),
    }
    let mut c = Command::new(exe);
    c.current_dir(clients_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("HEALSTORE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs a Python command to its end (bounded): its output.
fn run_python(mut c: Command) -> Output {
    let child = c.spawn().expect("spawn python3");
    wait_with_deadline(child, CHILD_TIMEOUT)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn python_client_unit_checks_pass() {
    let mut c = python();
    c.args(["-m", "unittest", "-v", "test_healstore_client"]);
    let out = run_python(c);
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "the Python unit checks failed:\n{err}"
    );
    assert!(err.contains("Ran 10 tests"), "{err}");
    assert!(err.trim_end().ends_with("OK"), "{err}");
}

/// `healstore --now NOW --format json ARGS` on `db`: its document.
fn cli_json(db: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--now", NOW, "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&expect_success(&run(db, &all))).expect("a JSON document")
}

/// Every event of the log, read with the command line (one JSON Lines record each).
fn events(db: &Path) -> Vec<Value> {
    expect_success(&run(db, &["events", "--format", "json"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_orchestrator_runs_against_a_real_server() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let mut c = python();
    c.args([
        "example_orchestrator.py",
        "--url",
        &server.base,
        "--run",
        "e2e",
    ]);
    let out = run_python(c);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed ({}):\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(!stdout.contains("UNEXPECTED"), "{stdout}");
    let summary: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary "))
        .map(|s| serde_json::from_str(s).expect("the summary is JSON"))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert_eq!(summary["problems"], serde_json::json!([]));
    let failures: Vec<String> = summary["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    // Five calls to the broken agent open its circuit (the default threshold), then the task
    // timeout.
    assert_eq!(failures.len(), 6, "{summary}");
    let refused = summary["refused"].as_array().expect("refused");
    assert!(!refused.is_empty(), "{summary}");
    assert!(refused.iter().all(|r| r["agent"] == "agent-2"), "{summary}");
    let (status, _) = server.get_json("/v1/circuits").await;
    assert_eq!(status, 200);
    let (code, stderr) = server.terminate();
    assert!(code.success(), "{stderr}");

    // The store afterwards, read by the command line.
    let log = events(&db);
    let of_type =
        |t: &str| -> Vec<&Value> { log.iter().filter(|e| e["event_type"] == t).collect() };
    let detected: Vec<&str> = of_type("failure_detected")
        .iter()
        .map(|e| e["payload"]["failure_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        detected, failures,
        "each failure reported once (the retry wrote nothing)"
    );
    let completed: Vec<&str> = of_type("healing_completed")
        .iter()
        .map(|e| e["payload"]["failure_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        completed.len() as u64,
        summary["outcomes"].as_u64().unwrap(),
        "one completion per outcome reported: {completed:?}"
    );
    for id in &completed {
        assert!(failures.iter().any(|f| f == id), "{id}");
    }
    // The broken agent's circuit opened with its fifth failure (in the same append), before
    // the first permit refused.
    let opened = log
        .iter()
        .position(|e| {
            e["event_type"] == "circuit_transitioned"
                && e["stream_id"] == "strategy-CircuitBreaker-agent-2"
                && e["payload"]["to"] == "open"
        })
        .unwrap_or_else(|| panic!("no transition to open for agent-2"));
    let detected_at = |id: &str| {
        log.iter()
            .position(|e| e["event_type"] == "failure_detected" && e["payload"]["failure_id"] == id)
            .unwrap()
    };
    assert!(
        opened > detected_at(&failures[3]) && opened < detected_at(&failures[5]),
        "the circuit opened with the fifth failure"
    );
    let first_refused: u64 = refused[0]["task"]
        .as_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let fifth_task: u64 = failures[4].rsplit('-').next().unwrap().parse().unwrap();
    assert!(first_refused > fifth_task, "{summary}");
    let circuits = cli_json(&db, &["circuits", "--agent", "agent-2"]);
    assert_eq!(circuits["circuits"][0]["state"], "open", "{circuits}");
    // agent-3 was forced open and closed by the example, with its reasons.
    let reasons: Vec<&str> = log
        .iter()
        .filter(|e| e["stream_id"] == "strategy-CircuitBreaker-agent-3")
        .filter_map(|e| e["payload"]["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("e2e: maintenance")),
        "{reasons:?}"
    );
}

/// Errors through the client from a real server (a 404, a 409, a 401 and a 403 with their
/// codes and request ids), with tokens given to the server by `HEALSTORE_TOKENS`.
#[tokio::test(flavor = "multi_thread")]
async fn client_errors_and_tokens_from_the_environment() {
    let (_dir, db) = temp_db();
    let tokens = format!("read {READ}, write {WRITE}");
    let server = Server::start_with_env(&db, &["--now", NOW], &[("HEALSTORE_TOKENS", &tokens)]);
    // The server holds the tokens: without one, a request is refused.
    let (status, _, _) = server.send_raw("GET", "/v1/circuits", None, "").await;
    assert_eq!(status, 401);
    let script = format!(
        r#"
import json
from healstore_client import Client, HealstoreError
url = {url:?}
out = {{}}
def err(f):
    try:
        f()
        return None
    except HealstoreError as e:
        return [e.status, e.code, bool(e.request_id)]
w = Client(url, token={write:?})
r = Client(url, token={read:?})
anon = Client(url)
bad = Client(url, token="not-a-token-0123456789")
first = w.record_failure("agent_down", agent_id="a-1", failure_id="py-1")
out["first"] = first["duplicate"]
out["again"] = w.record_failure("agent_down", agent_id="a-1", failure_id="py-1")["duplicate"]
out["conflict"] = err(lambda: w.record_failure("task_timeout", agent_id="a-1", failure_id="py-1"))
out["not_found"] = err(lambda: w.record_outcome("nope", True))
out["anonymous"] = err(lambda: anon.circuits())
out["bad_token"] = err(lambda: bad.circuits())
out["read_write"] = err(lambda: r.record_failure("agent_down", agent_id="a-2"))
out["read_reads"] = [c["agent_id"] for c in r.circuits()]
out["retried"] = w.retried + r.retried + anon.retried + bad.retried
print(json.dumps(out))
"#,
        url = server.base,
        write = WRITE,
        read = READ,
    );
    let mut c = python();
    c.args(["-c", &script]);
    let out = run_python(c);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({
            "first": false,
            "again": true,
            "conflict": [409, "conflict", true],
            "not_found": [404, "not_found", true],
            "anonymous": [401, "unauthorized", true],
            "bad_token": [401, "unauthorized", true],
            "read_write": [403, "forbidden", true],
            "read_reads": ["a-1"],
            "retried": 0,
        })
    );
    let (_, stderr) = server.terminate();
    assert!(
        !stderr.contains(WRITE) && !stderr.contains(READ),
        "a token in the log"
    );
    // Only the write token's failure is recorded.
    let log = events(&db);
    let ids: Vec<&str> = log
        .iter()
        .filter(|e| e["event_type"] == "failure_detected")
        .map(|e| e["payload"]["failure_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["py-1"]);
}
