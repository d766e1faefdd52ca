//! The service's guard and its shutdown, through a real `healstore serve` process and a real
//! HTTP client: tokens and roles, refusals at start, malformed requests (each a 4xx JSON error,
//! the database unchanged), overload answered at once with 503, SIGTERM with requests in
//! flight, and SIGKILL under load at durability `full`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, assert_same_files, db_files, temp_db};
use crate::serve_common::{Server, json_answer};

const NOW: &str = "2026-11-01T12:00:00Z";
const READ: &str = "read-4f9c2a7e1b3d5c6a8e0f";
const WRITE: &str = "write-9b8a7c6d5e4f3a2b1c0d";

/// A token file with a read and a write token, with `mode`.
fn token_file(dir: &Path, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("tokens");
    std::fs::write(&path, format!("# role token\nread {READ}\nwrite {WRITE}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn failure(id: &str) -> Value {
    json!({"failure_type": "agent_down", "agent_id": "agent-1", "severity": "high", "failure_id": id})
}

/// Asserts a 4xx JSON error: `{"error":{"code":..,"message":..}}` and nothing else.
#[track_caller]
fn assert_client_error(status: u16, text: &str, what: &str) -> String {
    assert!(
        (400..500).contains(&status),
        "{what}: status {status}, {text}"
    );
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| {
        panic!("{what}: status {status}, the body is not JSON ({e}): {text:?}")
    });
    let obj = v.as_object().unwrap_or_else(|| panic!("{what}: {v}"));
    assert_eq!(obj.len(), 1, "{what}: only `error` in {v}");
    let e = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert_eq!(e.len(), 2, "{what}: code and message in {v}");
    assert!(
        v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: {v}"
    );
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{what}: {v}");
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// Every failure id recorded in the database.
async fn failure_ids(db: &Path) -> BTreeSet<String> {
    common::read_all(db)
        .await
        .into_iter()
        .filter(|e| e.event_type == "failure_detected")
        .filter_map(|e| e.payload["failure_id"].as_str().map(str::to_owned))
        .collect()
}

/// A request body that sends `head` and then waits for the returned sender: the request is
/// in flight, at the server, until the rest is sent (or the sender dropped).
fn held_body(head: &str) -> (reqwest::Body, tokio::sync::mpsc::Sender<Vec<u8>>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    tx.try_send(head.as_bytes().to_vec()).unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    (reqwest::Body::wrap_stream(stream), tx)
}

/// Polls (bounded) until a GET of `path` with `token` is refused 503: every slot is taken.
async fn wait_until_full(server: &Server, token: &str) -> reqwest::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut r = server.client.get(server.url("/openapi.json"));
        if !token.is_empty() {
            r = r.bearer_auth(token);
        }
        let r = r.send().await.expect("probe");
        if r.status() == 503 {
            return r;
        }
        assert_eq!(r.status(), 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the held requests never filled the server"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_roles_and_open_health() {
    let (dir, db) = temp_db();
    let tokens = token_file(dir.path(), 0o600);
    let server = Server::start(
        &db,
        &["--now", NOW, "--token-file", tokens.to_str().unwrap()],
    );
    let c = &server.client;
    let post = |token: Option<&str>, id: &str| {
        let mut r = c.post(server.url("/v1/failures")).json(&failure(id));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };

    // No token, a wrong one, one of another scheme: 401 with a Bearer challenge.
    for (what, r) in [
        ("no token", post(None, "f-0")),
        (
            "a wrong token",
            post(Some("read-4f9c2a7e1b3d5c6a8e0X"), "f-0"),
        ),
        ("a prefix of a token", post(Some(&WRITE[..12]), "f-0")),
        (
            "basic auth",
            c.post(server.url("/v1/failures"))
                .basic_auth("write", Some(WRITE))
                .json(&failure("f-0")),
        ),
        ("a GET without a token", c.get(server.url("/openapi.json"))),
    ] {
        let r = r.send().await.unwrap();
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        let (status, text) = (r.status().as_u16(), r.text().await.unwrap());
        assert_eq!(status, 401, "{what}: {text}");
        assert_eq!(assert_client_error(status, &text, what), "unauthorized");
    }
    // A read token reads, and may not write.
    let r = c
        .get(server.url("/openapi.json"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(Some(READ), "f-0").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let text = r.text().await.unwrap();
    assert_eq!(
        assert_client_error(403, &text, "read token on a write"),
        "forbidden"
    );
    // A write token does everything.
    let (status, v) = json_answer(post(Some(WRITE), "f-1").send().await.unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["failure_id"], "f-1");
    let r = c
        .get(server.url("/openapi.json"))
        .bearer_auth(WRITE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Liveness and readiness are open.
    for path in ["/healthz", "/readyz"] {
        let r = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    let (status, stderr) = server.terminate();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        !stderr.contains(READ) && !stderr.contains(WRITE),
        "a token in the log: {stderr}"
    );
    assert_eq!(
        failure_ids(&db).await,
        BTreeSet::from(["f-1".to_owned()]),
        "only the write token's record is stored"
    );
}

#[test]
fn unsafe_starts_are_refused_with_one_line() {
    let (dir, db) = temp_db();
    let refused = |args: &[&str], needle: &str| {
        let out = common::run(&db, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!db.exists(), "{args:?} created the database");
    };
    // Reachable from other hosts without tokens.
    refused(&["serve", "--listen", "0.0.0.0:0"], "--insecure-no-auth");
    refused(&["serve", "--listen", "[::]:0"], "--insecure-no-auth");
    // A token file others may read or write.
    for mode in [0o640, 0o644, 0o620, 0o606] {
        let tokens = token_file(dir.path(), mode);
        refused(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                tokens.to_str().unwrap(),
            ],
            "chmod 600",
        );
    }
    // A token file that says nothing, or not in the format.
    let tokens = token_file(dir.path(), 0o600);
    std::fs::write(&tokens, "# nothing\n").unwrap();
    refused(
        &["serve", "--token-file", tokens.to_str().unwrap()],
        "holds no token",
    );
    std::fs::write(&tokens, format!("admin {WRITE}\n")).unwrap();
    refused(
        &["serve", "--token-file", tokens.to_str().unwrap()],
        "line 1",
    );
    // Tokens and --insecure-no-auth contradict each other.
    std::fs::write(&tokens, format!("write {WRITE}\n")).unwrap();
    let out = common::run(
        &db,
        &[
            "serve",
            "--token-file",
            tokens.to_str().unwrap(),
            "--insecure-no-auth",
        ],
    );
    assert!(!out.status.success());
    assert!(!db.exists());
}

/// A malformed request: what it is, method, path, content type, body, token, and its status
/// when it is certain.
type Case = (
    String,
    &'static str,
    String,
    Option<&'static str>,
    Vec<u8>,
    &'static str,
    Option<u16>,
);

/// At least forty malformed requests, each answered with a 4xx JSON error, the database
/// unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_json_errors_and_change_nothing() {
    let (dir, db) = temp_db();
    let tokens = token_file(dir.path(), 0o600);
    let server = Server::start(
        &db,
        &[
            "--now",
            NOW,
            "--token-file",
            tokens.to_str().unwrap(),
            "--max-body",
            "64KiB",
        ],
    );
    let (status, v) = json_answer(
        server
            .client
            .post(server.url("/v1/failures"))
            .bearer_auth(WRITE)
            .json(&failure("f-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Restarted, so that the first record's background checkpoint is behind us: from here on
    // nothing may write.
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{status}: {stderr}");
    let server = Server::start(
        &db,
        &[
            "--now",
            NOW,
            "--token-file",
            tokens.to_str().unwrap(),
            "--max-body",
            "64KiB",
        ],
    );
    let before = db_files(&db);

    const JSON: Option<&str> = Some("application/json");
    let nested = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let long_id = "x".repeat(300);
    // (what, method, path, content type, body, token, the status when it is certain)
    let mut cases: Vec<Case> = Vec::new();
    let mut failure_body = |what: &str, body: &[u8], status: Option<u16>| {
        cases.push((
            what.to_owned(),
            "POST",
            "/v1/failures".into(),
            JSON,
            body.to_vec(),
            WRITE,
            status,
        ));
    };
    failure_body("an unclosed object", b"{", Some(400));
    failure_body("not JSON", b"not json", Some(400));
    failure_body("an empty body", b"", Some(400));
    failure_body("an array", b"[]", Some(400));
    failure_body("a string", b"\"agent_down\"", Some(400));
    failure_body("null", b"null", Some(400));
    failure_body("a number", b"42", Some(400));
    failure_body("no failure_type", b"{}", Some(400));
    failure_body("failure_type a number", br#"{"failure_type":1}"#, Some(400));
    failure_body("failure_type null", br#"{"failure_type":null}"#, Some(400));
    failure_body(
        "failure_type an object",
        br#"{"failure_type":{}}"#,
        Some(400),
    );
    failure_body(
        "agent_id a number",
        br#"{"failure_type":"agent_down","agent_id":7}"#,
        Some(400),
    );
    failure_body(
        "agent_id an array",
        br#"{"failure_type":"agent_down","agent_id":["a"]}"#,
        Some(400),
    );
    failure_body(
        "task_id a boolean",
        br#"{"failure_type":"agent_down","task_id":true}"#,
        Some(400),
    );
    failure_body(
        "an unknown severity",
        br#"{"failure_type":"agent_down","severity":"apocalyptic"}"#,
        Some(400),
    );
    failure_body(
        "severity a number",
        br#"{"failure_type":"agent_down","severity":3}"#,
        Some(400),
    );
    failure_body(
        "metadata an array",
        br#"{"failure_type":"agent_down","metadata":[1]}"#,
        Some(400),
    );
    failure_body(
        "metadata a string",
        br#"{"failure_type":"agent_down","metadata":"x"}"#,
        Some(400),
    );
    failure_body(
        "failure_id a number",
        br#"{"failure_type":"agent_down","failure_id":5}"#,
        Some(400),
    );
    failure_body(
        "an unknown field",
        br#"{"failure_type":"agent_down","colour":"red"}"#,
        Some(400),
    );
    failure_body(
        "a field twice",
        br#"{"failure_type":"agent_down","failure_type":"task_timeout"}"#,
        Some(400),
    );
    failure_body(
        "detected_at not a time",
        br#"{"failure_type":"agent_down","detected_at":"yesterday"}"#,
        Some(400),
    );
    failure_body(
        "detected_at a 13th month",
        br#"{"failure_type":"agent_down","detected_at":"2026-13-01T00:00:00Z"}"#,
        Some(400),
    );
    failure_body(
        "detected_at a number",
        br#"{"failure_type":"agent_down","detected_at":1700000000}"#,
        Some(400),
    );
    failure_body(
        "trailing garbage",
        br#"{"failure_type":"agent_down"} x"#,
        Some(400),
    );
    failure_body(
        "two documents",
        br#"{"failure_type":"agent_down"}{"failure_type":"agent_down"}"#,
        Some(400),
    );
    failure_body(
        "bad UTF-8 in a string",
        b"{\"failure_type\":\"agent_\xff\xfe\"}",
        Some(400),
    );
    failure_body(
        "a lone surrogate",
        br#"{"failure_type":"agent_down","agent_id":"\ud800"}"#,
        Some(400),
    );
    failure_body(
        "a byte-order mark",
        "\u{feff}{\"failure_type\":\"agent_down\"}".as_bytes(),
        Some(400),
    );
    failure_body(
        "a number out of range",
        br#"{"failure_type":"agent_down","metadata":{"limit":1e999}}"#,
        Some(400),
    );
    failure_body(
        "nesting past the parser's limit",
        format!(r#"{{"failure_type":"agent_down","metadata":{{"deep":{nested}}}}}"#).as_bytes(),
        Some(400),
    );
    failure_body(
        "an empty failure id",
        br#"{"failure_type":"agent_down","failure_id":""}"#,
        None,
    );
    failure_body(
        "a failure id of 300 bytes",
        format!(r#"{{"failure_type":"agent_down","failure_id":"{long_id}"}}"#).as_bytes(),
        None,
    );
    failure_body(
        "an agent id of 300 bytes",
        format!(r#"{{"failure_type":"agent_down","agent_id":"{long_id}"}}"#).as_bytes(),
        None,
    );
    failure_body(
        "the first failure's id with other facts",
        br#"{"failure_type":"task_timeout","agent_id":"agent-9","failure_id":"f-1"}"#,
        Some(409),
    );
    let huge = format!(
        r#"{{"failure_type":"agent_down","metadata":{{"blob":"{}"}}}}"#,
        "x".repeat(100 << 10)
    );
    failure_body("a body past --max-body", huge.as_bytes(), Some(413));
    let mut other = |what: &str,
                     method: &'static str,
                     path: &str,
                     ct: Option<&'static str>,
                     body: &[u8],
                     token: &'static str,
                     status: Option<u16>| {
        cases.push((
            what.to_owned(),
            method,
            path.to_owned(),
            ct,
            body.to_vec(),
            token,
            status,
        ));
    };
    let ok_body = br#"{"failure_type":"agent_down"}"#;
    other(
        "no content type",
        "POST",
        "/v1/failures",
        None,
        ok_body,
        WRITE,
        Some(415),
    );
    other(
        "text/plain",
        "POST",
        "/v1/failures",
        Some("text/plain"),
        ok_body,
        WRITE,
        Some(415),
    );
    other(
        "XML",
        "POST",
        "/v1/failures",
        Some("application/xml"),
        b"<failure/>",
        WRITE,
        Some(415),
    );
    other(
        "a form",
        "POST",
        "/v1/failures",
        Some("application/x-www-form-urlencoded"),
        b"failure_type=agent_down",
        WRITE,
        Some(415),
    );
    other(
        "multipart",
        "POST",
        "/v1/failures",
        Some("multipart/form-data; boundary=x"),
        b"--x--",
        WRITE,
        Some(415),
    );
    other(
        "PUT on a POST route",
        "PUT",
        "/v1/failures",
        JSON,
        ok_body,
        WRITE,
        Some(405),
    );
    other(
        "DELETE on a POST route",
        "DELETE",
        "/v1/failures",
        None,
        b"",
        WRITE,
        Some(405),
    );
    other(
        "GET on a POST route",
        "GET",
        "/v1/failures",
        None,
        b"",
        WRITE,
        Some(405),
    );
    other(
        "POST on /healthz",
        "POST",
        "/healthz",
        JSON,
        b"{}",
        WRITE,
        Some(405),
    );
    other(
        "an unknown route",
        "GET",
        "/v1/nothing-here",
        None,
        b"",
        WRITE,
        Some(404),
    );
    other(
        "an unknown version",
        "POST",
        "/v2/failures",
        JSON,
        ok_body,
        WRITE,
        Some(404),
    );
    other(
        "a path climbing out",
        "GET",
        "/v1/../../etc/passwd",
        None,
        b"",
        WRITE,
        Some(404),
    );
    other(
        "no token",
        "POST",
        "/v1/failures",
        JSON,
        ok_body,
        "",
        Some(401),
    );
    other(
        "a wrong token",
        "POST",
        "/v1/failures",
        JSON,
        ok_body,
        "not-a-token-at-all-00000",
        Some(401),
    );
    other(
        "a read token on a write",
        "POST",
        "/v1/failures",
        JSON,
        ok_body,
        READ,
        Some(403),
    );
    assert!(cases.len() >= 40, "{} cases", cases.len());

    // A connection of its own for each case: the server closes a connection whose request
    // body it refused unread, and a pooled connection reused at that moment fails to send.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for (what, method, path, ct, body, token, status) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = client.request(method, server.url(&path)).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        if !token.is_empty() {
            r = r.bearer_auth(token);
        }
        let r = r.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let (got, text) = (r.status().as_u16(), r.text().await.unwrap());
        assert_client_error(got, &text, &what);
        if let Some(s) = status {
            assert_eq!(got, s, "{what}: {text}");
        }
        assert_same_files(&before, &db_files(&db), &what);
    }
    // A body past the limit sent without a length is refused as it arrives.
    let (body, tx) = held_body(&huge);
    drop(tx);
    let r = server
        .client
        .post(server.url("/v1/failures"))
        .bearer_auth(WRITE)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (got, text) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!(got, 413, "{text}");
    assert_client_error(got, &text, "a chunked body past --max-body");
    assert_same_files(&before, &db_files(&db), "a chunked body past --max-body");

    let (status, stderr) = server.terminate();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(failure_ids(&db).await, BTreeSet::from(["f-1".to_owned()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_is_answered_with_503_at_once() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW, "--max-concurrent", "2"]);
    // Two records whose bodies are still arriving hold both slots.
    let (answers, held) = hold_records(&server, &["held-0", "held-1"]);
    let r = wait_until_full(&server, "").await;
    assert_eq!(r.headers()["retry-after"], "1");
    let text = r.text().await.unwrap();
    assert_eq!(assert_client_error_5xx(503, &text), "overloaded");
    // A write is refused the same way, at once; liveness still answers.
    let (status, v) = server.post_json("/v1/failures", &failure("refused")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("overloaded")),
        "{v}"
    );
    assert_eq!(server.get_json("/healthz").await.0, 200);
    // Once the held requests end, both are answered and the server serves again.
    for release in held {
        release.send(()).unwrap();
    }
    for a in answers {
        let (status, v) = a.await.unwrap();
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = server.post_json("/v1/failures", &failure("after")).await;
    assert_eq!(status, 200, "{v}");
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{status}: {stderr}");
    let ids = failure_ids(&db).await;
    assert_eq!(
        ids,
        ["after", "held-0", "held-1"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}

/// The JSON error shape of a 5xx answer; its code.
#[track_caller]
fn assert_client_error_5xx(status: u16, text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{status}: {e}: {text}"));
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// Starts records whose bodies are half sent, each held in flight at the server until its
/// release is sent: (the answers, the releases). A held record refused `503 overloaded` (a
/// probe took the slot as it came) is sent again, so that once the server is full, every
/// held record holds a slot.
#[allow(clippy::type_complexity)]
fn hold_records(
    server: &Server,
    ids: &[&str],
) -> (
    Vec<tokio::task::JoinHandle<(u16, Value)>>,
    Vec<tokio::sync::oneshot::Sender<()>>,
) {
    let mut releases = Vec::new();
    let mut answers = Vec::new();
    for id in ids {
        let body = failure(id).to_string();
        // A client of its own with no idle connections kept: each try on a new connection.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let url = server.url("/v1/failures");
        let (release_tx, mut release) = tokio::sync::oneshot::channel::<()>();
        answers.push(tokio::spawn(async move {
            let (half, rest) = body.split_at(body.len() / 2);
            loop {
                let (b, tx) = held_body(half);
                let request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(b)
                    .send();
                tokio::pin!(request);
                tokio::select! {
                    r = &mut request => {
                        // A connection the server closed after answering an earlier 503 may be
                        // reused and fail while the body is written: nothing was taken, so the
                        // request is sent again (a failure id makes a retry harmless).
                        let Ok(r) = r else { continue };
                        let answer = json_answer(r).await;
                        if answer.0 == 503 && answer.1["error"]["code"] == "overloaded" {
                            continue;
                        }
                        return answer;
                    }
                    _ = &mut release => {
                        tx.send(rest.as_bytes().to_vec()).await.unwrap();
                        drop(tx); // the body ends
                        return json_answer(request.await.unwrap()).await;
                    }
                }
            }
        }));
        releases.push(release_tx);
    }
    (answers, releases)
}

/// Sends SIGTERM to the server.
fn sigterm(server: &Server) {
    // SAFETY: kill(2) on the server this test spawned; it is reaped only by `terminate`
    // or its drop, after this.
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGTERM);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_requests_in_flight() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW, "--max-concurrent", "3"]);
    let (status, v) = server.post_json("/v1/failures", &failure("before")).await;
    assert_eq!(status, 200, "{v}");
    // Three records in flight (every slot taken: each is at the server, its body half read).
    let (answers, held) = hold_records(&server, &["held-0", "held-1", "held-2"]);
    wait_until_full(&server, "").await;
    sigterm(&server);
    // It stops accepting: a new connection is refused (polled, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        if fresh.get(server.url("/healthz")).send().await.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        tokio::task::yield_now().await;
    }
    // The requests in flight are served to the end, and committed.
    for release in held {
        release.send(()).unwrap();
    }
    for (i, a) in answers.into_iter().enumerate() {
        let (status, v) = a.await.unwrap();
        assert_eq!(status, 200, "held-{i}: {v}");
        assert_eq!(v["failure_id"], format!("held-{i}"));
    }
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        failure_ids(&db).await,
        ["before", "held-0", "held-1", "held-2"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}

/// Records from many clients until the server goes, then `kill` it: every failure answered
/// 2xx must be in the log afterwards. Returns the acknowledged ids and the server.
async fn load_then(server: &Server, round: usize, kill: impl FnOnce(&Server)) -> BTreeSet<String> {
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut clients = Vec::new();
    for c in 0..16 {
        let client = server.client.clone();
        let url = server.url("/v1/failures");
        let ack_tx = ack_tx.clone();
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("r{round}-c{c}-{i}");
                let Ok(r) = client.post(&url).json(&failure(&id)).send().await else {
                    return;
                };
                let status = r.status().as_u16();
                if status == 200 {
                    let _ = ack_tx.send(id);
                } else {
                    // Refused while closing: never a client error.
                    assert!(status >= 500, "{id}: {status}");
                    return;
                }
            }
        }));
    }
    drop(ack_tx);
    let mut acknowledged = BTreeSet::new();
    // Go once 200 records of this round are acknowledged.
    while acknowledged.len() < 200 {
        let id = ack_rx.recv().await.expect("the clients stopped early");
        acknowledged.insert(id);
    }
    kill(server);
    for c in clients {
        c.await.unwrap();
    }
    while let Some(id) = ack_rx.recv().await {
        acknowledged.insert(id);
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &["--now", NOW]);
    let acknowledged = load_then(&server, 0, sigterm).await;
    let (status, stderr) = server.terminate();
    assert!(status.success(), "{status}: {stderr}");
    let stored = failure_ids(&db).await;
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_acknowledged_failure() {
    let (_dir, db) = temp_db();
    let mut acknowledged = BTreeSet::new();
    for round in 0..3 {
        let server = Server::start(&db, &["--now", NOW, "--durability", "full"]);
        acknowledged.extend(
            load_then(&server, round, |s| {
                // SAFETY: kill(2) on the server this test spawned, still running.
                unsafe {
                    libc::kill(s.pid() as i32, libc::SIGKILL);
                }
            })
            .await,
        );
        drop(server);
        let stored = failure_ids(&db).await;
        let lost: Vec<_> = acknowledged.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
    }
}

/// A request still in flight past `--shutdown-timeout` after SIGTERM is abandoned: the server
/// exits (status 2, saying so) rather than waiting for it, with what it had accepted
/// committed. The request is held by its body, never finished; the deadline is the server's.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_abandons_requests_past_the_shutdown_timeout() {
    let (_dir, db) = temp_db();
    let server = Server::start(
        &db,
        &[
            "--now",
            NOW,
            "--max-concurrent",
            "1",
            "--request-timeout",
            "1h",
            "--shutdown-timeout",
            "1s",
        ],
    );
    let (status, v) = server.post_json("/v1/failures", &failure("before")).await;
    assert_eq!(status, 200, "{v}");
    // One record held at the server (its body half sent), taking the only slot (sent again
    // if a probe took the slot as it came); never released.
    let (mut answers, _releases) = hold_records(&server, &["held"]);
    wait_until_full(&server, "").await;
    sigterm(&server);
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("abandoned") && stderr.contains("--shutdown-timeout"),
        "{stderr}"
    );
    // The held request got no answer (its client tries again, in vain: stopped here); what
    // was answered before is in the log.
    let held = answers.pop().unwrap();
    assert!(!held.is_finished(), "the held request was answered");
    held.abort();
    assert_eq!(
        failure_ids(&db).await,
        ["before".to_owned()].into_iter().collect()
    );
}

/// The server's healer checkpoints while it serves (`--checkpoint-every N` events), not only
/// at shutdown: after many heals and a SIGKILL (no shutdown checkpoint), the store holds a
/// recent checkpoint, a restarted server says it opens from it (replaying the events after
/// it only), and its states are those the killed server answered.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_checkpoints_periodically_and_a_restart_loads_from_it() {
    let (_dir, db) = temp_db();
    let args = ["--now", NOW, "--checkpoint-every", "100"];
    let server = Server::start(&db, &args);
    for i in 0..120 {
        let f = json!({"failure_type": "agent_down", "agent_id": format!("agent-{}", i % 30),
                       "failure_id": format!("cp-{i}")});
        let (status, v) = server.post_json("/v1/failures", &f).await;
        assert_eq!(status, 200, "{v}");
    }
    let (_, before) = server.get_json("/v1/circuits").await;
    let (_, ready) = server.get_json("/readyz").await;
    let head = ready["head_position"].as_i64().unwrap();
    assert!(head > 300, "{ready}");
    // The checkpoint follows the appends in a task of its own: wait for it (bounded).
    let checkpoint = |db: &Path| {
        let db = db.to_owned();
        async move {
            use sqlx::Connection as _;
            let mut conn = common::raw_connection(&db).await;
            let p: Option<i64> =
                sqlx::query_scalar("SELECT max(position) FROM strategy_checkpoints")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            let _ = conn.close().await;
            p.unwrap_or(0)
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut at = checkpoint(&db).await;
    while at < head - 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint near {head}: {at}"
        );
        tokio::task::yield_now().await;
        at = checkpoint(&db).await;
    }
    // SAFETY: kill(2) on the server this test spawned, still running.
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGKILL);
    }
    drop(server);
    assert!(
        checkpoint(&db).await >= at,
        "the checkpoint survives the kill"
    );

    let again = Server::start_with_env(&db, &args, &[("RUST_LOG", "healstore=info")]);
    let (_, after) = again.get_json("/v1/circuits").await;
    assert_eq!(
        after, before,
        "the states after a restart from the checkpoint"
    );
    let (status, stderr) = again.terminate();
    assert!(status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("opening the healer"))
        .unwrap_or_else(|| panic!("no line on opening the healer: {stderr}"));
    let field = |name: &str| -> i64 {
        let v = line
            .split(|c: char| c.is_whitespace() || "(),".contains(c))
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        v.parse().unwrap()
    };
    assert!(field("checkpoint_position") >= at, "{line}");
    assert!(field("events_to_replay") <= head - at, "{line}");
}
