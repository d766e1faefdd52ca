//! The test harness for the HTTP service: a real `healstore serve` process on a free loopback
//! port, and a real HTTP client.
//!
//! ```ignore
//! let (_dir, db) = common::temp_db();
//! let server = Server::start(&db, &["--now", "2026-11-01T12:00:00Z"]);
//! let (status, body) = server.post_json("/v1/failures", &json!({"failure_type": "agent_down"})).await;
//! ```
//!
//! `Server::start` spawns the built binary (`healstore --db DB serve --listen 127.0.0.1:0
//! EXTRA...`, isolated from the caller's environment as [`super::common::healstore`] is),
//! waits (bounded) for its `listening on http://HOST:PORT` line, and kills the process when
//! dropped. Its standard error is collected ([`Server::stderr`]).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How long a server may take to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `healstore serve`.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `healstore --db DB serve --listen 127.0.0.1:0 EXTRA...` and waits for its
    /// address (panics after [`START_TIMEOUT`], with what it wrote on standard error).
    pub fn start(db: &Path, extra_args: &[&str]) -> Server {
        Server::start_with_env(db, extra_args, &[])
    }

    /// [`Server::start`] with these environment variables set (`RUST_LOG`, ...).
    pub fn start_with_env(db: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = super::common::healstore(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra_args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn healstore serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = {
            let sink = stderr.clone();
            let mut pipe = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            let first = lines.read_line(&mut line).map(|_| line.clone());
            let _ = tx.send(first);
            // Keep reading, so that the server never blocks on a full pipe.
            let mut rest = Vec::new();
            let _ = lines.read_to_end(&mut rest);
        });
        let mut server = Server {
            child: Some(child),
            base: String::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("HTTP client"),
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the server's address: {e}; {}", server.stderr()),
            Err(_) => panic!(
                "the server printed no address within {START_TIMEOUT:?}; stderr: {}",
                server.stderr()
            ),
        };
        let base = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?} (the server exited?); stderr: {}",
                    server.stderr()
                )
            });
        server.base = base.to_owned();
        server
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `base` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server wrote on standard error so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// GET `path`: the status and the body parsed as JSON (panics when it is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        json_answer(r).await
    }

    /// POST `body` as JSON to `path`: the status and the body parsed as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        json_answer(r).await
    }

    /// Sends `method` to `path` with a raw body and content type: status, headers, body text.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        // A live event stream never ends: its body is not read.
        let live = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = if live {
            String::new()
        } else {
            r.text().await.expect("body")
        };
        (status, headers, text)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit: its exit status and
    /// standard error.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + super::common::CHILD_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit after SIGTERM; {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        (status, self.stderr())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response's status and its body parsed as JSON.
pub async fn json_answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: the body is not JSON ({e}): {text:?}"));
    (status, v)
}

/// Asserts an error answer: the status, `{"error":{"code":CODE,"message":...}}` and nothing
/// else. Returns the message.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) -> String {
    let (s, v) = answer;
    assert_eq!(*s, status, "status of {v}");
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "only `error` in {v}");
    let e = v["error"].as_object().expect("error object");
    assert_eq!(e.len(), 2, "code and message in {v}");
    assert_eq!(v["error"]["code"], code, "code of {v}");
    let message = v["error"]["message"].as_str().expect("message").to_owned();
    assert!(!message.is_empty());
    message
}
