//! Who may call the server, and how much: bearer tokens with a role, and limits on a request's
//! body, its time and the number served at once. One middleware in front of every route
//! ([`Guard::apply`]), in this order:
//!
//! 1. **Tokens** (when the server has any): every request but `/healthz` and `/readyz` carries
//!    `Authorization: Bearer TOKEN`. A missing or unknown token is a `401` with
//!    `WWW-Authenticate: Bearer`; a `read` token on a method other than `GET` or `HEAD` is a
//!    `403`. Tokens are compared as SHA-256 digests in constant time, against every known token
//!    (so neither the length nor the position of a match shows in the time taken), and the
//!    header is marked sensitive and taken off the request before anything else sees it: no
//!    token is ever logged.
//! 2. **Concurrency**: at most [`Limits::max_concurrent`] requests at once. One more is answered
//!    `503` with `Retry-After` at once, never queued. A request holds its slot until its answer
//!    has been sent, a streamed answer (a live event stream, a JSON Lines report) until its end.
//! 3. **Body size**: a body longer than [`Limits::max_body`] is a `413`, told by its
//!    `Content-Length` before a byte of it is read, or by the JSON extractors as it arrives.
//!    JSON Lines bodies ([`is_json_lines`]) are exempt: they are read a line at a time, each
//!    line at most [`MAX_LINE_BYTES`], however long the stream.
//! 4. **Time**: a request whose answer has not begun after [`Limits::request_timeout`] is
//!    answered `503` with `Retry-After`; the handler runs on to its end, as a task of its own
//!    that keeps the slot, so that a heal is never dropped halfway (its record committed:
//!    retried with the same `failure_id`, it is answered once). A JSON Lines upload is not limited in
//!    total, but in idleness: a body that sends nothing for that long ends in an error. A
//!    streamed answer is not limited once it has begun.
//!
//! `/healthz` and `/readyz` are open and unlimited, so that a load balancer or an orchestrator
//! can probe a server that is busy or holds tokens it does not know.

use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tokio::sync::Semaphore;

use crate::input::MAX_LINE_BYTES;
use crate::{Error, Result};

/// The environment variable that holds tokens when no `--token-file` is given: the token
/// file's format, entries separated by newlines or commas.
pub const TOKENS_ENV: &str = "HEALSTORE_TOKENS";

/// The default [`Limits::max_body`]: 2 MiB, twice the longest line the command line accepts,
/// so that every event it would take fits in one request, even pretty-printed.
pub const DEFAULT_MAX_BODY: usize = 2 * MAX_LINE_BYTES;

/// The default [`Limits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The default [`Limits::max_concurrent`]. An open event stream holds one.
pub const DEFAULT_MAX_CONCURRENT: usize = 1024;

/// Seconds a client is told to wait (`Retry-After`) after an overload or a timeout.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Paths served to anyone, without a token and outside the limits: liveness and readiness.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// The fewest characters a token may have.
pub const MIN_TOKEN_LEN: usize = 16;

/// The most bytes a token file (or [`TOKENS_ENV`]) may hold.
const MAX_TOKENS_BYTES: u64 = 1 << 20;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `GET` and `HEAD`: queries, analytics, the dashboard, metrics, event pages and streams.
    Read,
    /// Everything.
    Write,
}

impl Role {
    /// Whether this role may call a route with `method`.
    pub fn allows(self, method: &Method) -> bool {
        match self {
            Role::Write => true,
            Role::Read => method == Method::GET || method == Method::HEAD,
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            _ => None,
        }
    }
}

/// The tokens a server accepts, each with its role; only their SHA-256 digests are kept.
///
/// The format (a token file, or [`TOKENS_ENV`]): one entry per line, `ROLE TOKEN`, where
/// `ROLE` is `read` or `write` and `TOKEN` is at least [`MIN_TOKEN_LEN`] characters of the
/// bearer token alphabet (letters, digits, `-._~+/`, then optional `=` padding); blank lines
/// and lines starting with `#` are ignored, and entries may also be separated by commas. A
/// token appears once. Error messages name the entry by its number, never its text.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tokens({} read, {} write)",
            self.count(Role::Read),
            self.count(Role::Write)
        )
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// RFC 6750's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

impl Tokens {
    /// Parses entries (see [`Tokens`]); `origin` names where they come from in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens> {
        let bad =
            |line: usize, what: &str| Error::InvalidInput(format!("{origin}, line {line}: {what}"));
        let mut entries: Vec<([u8; 32], Role)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for entry in line.split(',') {
                let mut words = entry.split_whitespace();
                let (Some(role), Some(token)) = (words.next(), words.next()) else {
                    if entry.trim().is_empty() {
                        continue;
                    }
                    return Err(bad(
                        n,
                        "an entry is `ROLE TOKEN`, with ROLE `read` or `write`",
                    ));
                };
                if words.next().is_some() {
                    return Err(bad(n, "an entry is `ROLE TOKEN`: two words, no more"));
                }
                let Some(role) = Role::parse(role) else {
                    return Err(bad(n, "the role is `read` or `write`"));
                };
                if !is_b64token(token) {
                    return Err(bad(
                        n,
                        "a token is made of letters, digits and -._~+/ (then optional = padding)",
                    ));
                }
                if token.len() < MIN_TOKEN_LEN {
                    return Err(bad(
                        n,
                        &format!("a token has at least {MIN_TOKEN_LEN} characters"),
                    ));
                }
                let d = digest(token.as_bytes());
                if entries.iter().any(|(e, _)| *e == d) {
                    return Err(bad(n, "this token appears earlier: a token has one role"));
                }
                entries.push((d, role));
            }
        }
        if entries.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{origin} holds no token (entries are `ROLE TOKEN` lines, ROLE `read` or `write`)"
            )));
        }
        Ok(Tokens { entries })
    }

    /// Reads a token file. Like ssh with a private key, it refuses a file that its group or
    /// other users may read or write (`chmod 600 FILE`), and anything but a regular file.
    pub fn read_file(path: &Path) -> Result<Tokens> {
        let shown = path.display();
        let mut file = std::fs::File::open(path)
            .map_err(|e| Error::from_io(format_args!("cannot open token file {shown}"), &e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::from_io(format_args!("cannot read token file {shown}"), &e))?;
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "token file {shown} is not a regular file"
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::InvalidInput(format!(
                    "token file {shown} has permissions {mode:04o}: it must be readable by its \
                     owner only (chmod 600 {shown})"
                )));
            }
        }
        let mut text = String::new();
        (&mut file)
            .take(MAX_TOKENS_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::from_io(format_args!("cannot read token file {shown}"), &e))?;
        if text.len() as u64 > MAX_TOKENS_BYTES {
            return Err(Error::InvalidInput(format!(
                "token file {shown} is longer than {MAX_TOKENS_BYTES} bytes"
            )));
        }
        Tokens::parse(&text, &format!("token file {shown}"))
    }

    /// The tokens of [`TOKENS_ENV`], if it is set (set but empty is an error, not "no tokens").
    pub fn from_env() -> Result<Option<Tokens>> {
        match std::env::var(TOKENS_ENV) {
            Ok(v) => Tokens::parse(&v, TOKENS_ENV).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::InvalidInput(format!("{TOKENS_ENV} is not UTF-8")))
            }
        }
    }

    /// The role of `token`, if it is one of these. The time taken depends on the number of
    /// tokens only: every digest is compared, in constant time, whatever matches.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let d = digest(token);
        let mut found = Choice::from(0);
        let mut write = Choice::from(0);
        for (e, role) in &self.entries {
            let eq = e.ct_eq(&d);
            found |= eq;
            write |= eq & Choice::from(u8::from(*role == Role::Write));
        }
        if bool::from(found) {
            Some(if bool::from(write) {
                Role::Write
            } else {
                Role::Read
            })
        } else {
            None
        }
    }

    /// How many tokens have `role`.
    pub fn count(&self, role: Role) -> usize {
        self.entries.iter().filter(|(_, r)| *r == role).count()
    }
}

/// Refuses to serve on an address other hosts can reach without tokens, unless told so
/// (`--insecure-no-auth`).
pub fn check_exposure(listen: SocketAddr, has_tokens: bool, insecure_no_auth: bool) -> Result<()> {
    if has_tokens || insecure_no_auth || listen.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "refusing to serve on {listen} without tokens, where other hosts can reach it: give \
         --token-file FILE (or {TOKENS_ENV}), listen on a loopback address, or pass \
         --insecure-no-auth"
    )))
}

/// The limits of [`Guard`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest request body, in bytes, but for JSON Lines bodies (`--max-body`).
    pub max_body: usize,
    /// How long a request may take until its answer begins, and how long a JSON Lines upload
    /// may stay silent (`--request-timeout`).
    pub request_timeout: Duration,
    /// How many requests are served at once (`--max-concurrent`).
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: DEFAULT_MAX_BODY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
}

/// Tokens and limits, as a middleware for a [`Router`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Guard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tokens: Option<Tokens>,
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Set when the server shuts down: live event streams end.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Guard {
    /// A guard with `tokens` (`None`: no authentication) and `limits`. A limit of zero
    /// concurrent requests is taken as one.
    pub fn new(tokens: Option<Tokens>, limits: Limits) -> Guard {
        let slots = Arc::new(Semaphore::new(
            limits.max_concurrent.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Guard {
            inner: Arc::new(Inner {
                tokens,
                limits,
                slots,
                closing: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// Ends every live event stream (`text/event-stream` answers) at once, and those that
    /// begin from now on: a server shutting down waits for the requests in flight, and a
    /// subscriber's stream would never end by itself (a client resumes it elsewhere with
    /// `Last-Event-ID`). Other streamed answers (a JSON Lines upload's acknowledgements) go on
    /// to their end, so that everything accepted is answered.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Puts the guard in front of every route of `router` (its fallbacks included).
    pub fn apply<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router
            .layer(DefaultBodyLimit::max(self.inner.limits.max_body))
            .layer(axum::middleware::from_fn_with_state(self.clone(), guard))
    }
}

/// The answer of every refusal here: `{"error":{"code":..,"message":..}}`.
fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn retry_later(code: &str, message: String) -> Response {
    let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, code, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let mut r = refuse(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// The token of an `Authorization: Bearer TOKEN` header, if there is exactly one such header.
fn bearer(headers: &HeaderMap) -> std::result::Result<Option<&[u8]>, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let bytes = value.as_bytes();
    let Some(space) = bytes.iter().position(|b| *b == b' ') else {
        return Err(());
    };
    let (scheme, rest) = bytes.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(());
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(());
    }
    Ok(Some(token))
}

/// Whether a request's body is JSON Lines, read a line at a time: `application/x-ndjson`,
/// `application/jsonl` (or `jsonlines`, `json-lines`, `x-jsonlines`).
pub fn is_json_lines(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    [
        "application/x-ndjson",
        "application/jsonl",
        "application/jsonlines",
        "application/json-lines",
        "application/x-jsonlines",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
}

const CHALLENGE: &str = "Bearer realm=\"healstore\"";
const CHALLENGE_INVALID: &str = "Bearer realm=\"healstore\", error=\"invalid_token\"";
const CHALLENGE_SCOPE: &str =
    "Bearer realm=\"healstore\", error=\"insufficient_scope\", scope=\"write\"";

async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    if let Some(value) = req.headers_mut().get_mut(header::AUTHORIZATION) {
        value.set_sensitive(true);
    }
    if OPEN_PATHS.contains(&req.uri().path()) {
        req.headers_mut().remove(header::AUTHORIZATION);
        return next.run(req).await;
    }
    if let Some(tokens) = &g.inner.tokens {
        let role = match bearer(req.headers()) {
            Ok(None) => {
                return unauthorized(
                    "this server needs a token: send `Authorization: Bearer TOKEN`",
                    CHALLENGE,
                );
            }
            Err(()) => {
                return unauthorized(
                    "the Authorization header is not one `Bearer TOKEN`",
                    CHALLENGE_INVALID,
                );
            }
            Ok(Some(token)) => tokens.role_of(token),
        };
        match role {
            None => return unauthorized("the token is not valid here", CHALLENGE_INVALID),
            Some(role) if !role.allows(req.method()) => {
                let mut r = refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "a read token may only GET; {} needs a write token",
                        req.method()
                    ),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE_SCOPE),
                );
                return r;
            }
            Some(_) => {}
        }
    }
    req.headers_mut().remove(header::AUTHORIZATION);

    let limits = &g.inner.limits;
    let Ok(slot) = g.inner.slots.clone().try_acquire_owned() else {
        return retry_later(
            "overloaded",
            format!(
                "the server is answering as many requests as it serves at once ({}): retry later",
                limits.max_concurrent
            ),
        );
    };

    let json_lines = is_json_lines(req.headers());
    if !json_lines {
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|n| n > limits.max_body as u64) {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is longer than {} bytes, the most this server takes (JSON Lines \
                     bodies are read a line at a time and not limited)",
                    limits.max_body
                ),
            );
        }
    }

    let (response, slot) = if json_lines {
        let (parts, body) = req.into_parts();
        let body = idle_limited(body, limits.request_timeout);
        (next.run(Request::from_parts(parts, body)).await, slot)
    } else {
        // The handler runs as a task of its own, holding the slot: past the timeout the
        // client is answered, and the handler still runs to its end rather than being
        // dropped halfway through a heal (its append committed, as a retry will find).
        let mut work = tokio::spawn(async move { (next.run(req).await, slot) });
        match tokio::time::timeout(limits.request_timeout, &mut work).await {
            Ok(Ok(done)) => done,
            Ok(Err(_)) => {
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the request's handler failed".to_owned(),
                );
            }
            Err(_) => {
                return retry_later(
                    "timeout",
                    format!(
                        "the request took longer than {:?}, the most this server gives one (it may still \
                         complete: a record retried with the same id is answered once)",
                        limits.request_timeout
                    ),
                );
            }
        }
    };

    // An answer already in memory is sent in one go: the slot is free now. A streamed one
    // keeps its slot until its last byte (or until the client goes away).
    if response.body().size_hint().exact().is_some() {
        drop(slot);
        return response;
    }
    let live = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |item| {
        let _held = &slot;
        item
    });
    if !live {
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let mut closing = g.inner.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    Response::from_parts(parts, Body::from_stream(stream.take_until(closed)))
}

/// A body that ends in an error once no data has come for `idle`.
fn idle_limited(body: Body, idle: Duration) -> Body {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let stream =
        futures_util::stream::unfold(Some(body.into_data_stream()), move |state| async move {
            let mut stream = state?;
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok::<Bytes, BoxError>(bytes), Some(stream))),
                Ok(Some(Err(e))) => Some((Err(Box::new(e) as BoxError), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the body sent nothing for {idle:?}"),
                    )) as BoxError),
                    None,
                )),
            }
        });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt as _;

    const READ: &str = "read-token-0123456789abcdef";
    const WRITE: &str = "write-token-0123456789abcdef";

    fn tokens() -> Tokens {
        Tokens::parse(&format!("# tokens\nread {READ}\n\nwrite {WRITE}\n"), "test").unwrap()
    }

    fn app(tokens: Option<Tokens>, limits: Limits) -> Router {
        guarded(tokens, limits).0
    }

    fn guarded(tokens: Option<Tokens>, limits: Limits) -> (Router, Guard) {
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/v1/things", get(|| async { "things" }))
            .route(
                "/v1/things",
                post(|axum::Json(v): axum::Json<serde_json::Value>| async move { axum::Json(v) }),
            )
            .route(
                "/v1/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            )
            .route(
                "/v1/lines",
                post(|body: Body| async move {
                    let mut n = 0usize;
                    let mut s = body.into_data_stream();
                    while let Some(chunk) = s.next().await {
                        match chunk {
                            Ok(b) => n += b.len(),
                            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
                        }
                    }
                    (StatusCode::OK, n.to_string())
                }),
            );
        let g = Guard::new(tokens, limits);
        (g.apply(router), g)
    }

    fn req(method: Method, path: &str, token: Option<&str>) -> axum::http::request::Builder {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b
    }

    async fn send(app: &Router, r: Request) -> (StatusCode, HeaderMap, serde_json::Value) {
        let resp = app.clone().oneshot(r).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, v)
    }

    fn code(v: &serde_json::Value) -> &str {
        v["error"]["code"].as_str().unwrap_or("")
    }

    #[test]
    fn token_format() {
        let t = tokens();
        assert_eq!(t.role_of(READ.as_bytes()), Some(Role::Read));
        assert_eq!(t.role_of(WRITE.as_bytes()), Some(Role::Write));
        assert_eq!(t.role_of(b"read-token-0123456789abcdeX"), None);
        assert_eq!(t.role_of(b""), None);
        let t = Tokens::parse(&format!("read {READ}, write {WRITE},"), "env").unwrap();
        assert_eq!(t.count(Role::Read), 1);
        assert_eq!(t.count(Role::Write), 1);
        for (text, needle) in [
            ("", "holds no token"),
            ("# only a comment\n", "holds no token"),
            ("admin abcdefghijklmnopqrstuvwxyz", "line 1: the role"),
            ("read short", "at least 16"),
            ("read abcdefghijklmnop qrs", "two words"),
            ("read", "ROLE TOKEN"),
            ("read abc\"defghijklmnopqrstuvwxyz", "letters, digits"),
            (
                "read abcdefghijklmnopq\nwrite abcdefghijklmnopq",
                "line 2: this token appears",
            ),
        ] {
            let e = Tokens::parse(text, "origin").unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("origin"), "{e}");
            assert!(
                !e.contains("abcdefghijklmnop"),
                "an error shows a token: {e}"
            );
        }
        assert!(!format!("{:?}", tokens()).contains("token-0123"));
    }

    #[cfg(unix)]
    #[test]
    fn token_file_must_be_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("write {WRITE}\n")).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o622] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Tokens::read_file(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{mode:04o}")) && e.contains("chmod 600"),
                "{e}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let t = Tokens::read_file(&path).unwrap();
            assert_eq!(t.role_of(WRITE.as_bytes()), Some(Role::Write));
        }
        let e = Tokens::read_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = Tokens::read_file(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    }

    #[test]
    fn exposure() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(check_exposure(at("127.0.0.1:7878"), false, false).is_ok());
        assert!(check_exposure(at("127.1.2.3:0"), false, false).is_ok());
        assert!(check_exposure(at("[::1]:7878"), false, false).is_ok());
        assert!(check_exposure(at("[::ffff:127.0.0.1]:7878"), false, false).is_ok());
        for a in [
            "0.0.0.0:7878",
            "[::]:7878",
            "10.0.0.5:80",
            "[::ffff:10.0.0.5]:80",
        ] {
            let e = check_exposure(at(a), false, false).unwrap_err().to_string();
            assert!(e.contains("--insecure-no-auth") && !e.contains('\n'), "{e}");
            assert!(check_exposure(at(a), true, false).is_ok());
            assert!(check_exposure(at(a), false, true).is_ok());
        }
    }

    #[tokio::test]
    async fn tokens_and_roles() {
        let app = app(Some(tokens()), Limits::default());
        let body = || Body::from(r#"{"a":1}"#);
        let json = |b: axum::http::request::Builder| {
            b.header(header::CONTENT_TYPE, "application/json")
                .body(body())
                .unwrap()
        };
        // No token, a wrong one, a malformed header: 401 with a Bearer challenge.
        for r in [
            req(Method::GET, "/v1/things", None)
                .body(Body::empty())
                .unwrap(),
            req(
                Method::GET,
                "/v1/things",
                Some("read-token-0123456789abcdeX"),
            )
            .body(Body::empty())
            .unwrap(),
            req(Method::GET, "/v1/things", Some(&READ[..10]))
                .body(Body::empty())
                .unwrap(),
            Request::get("/v1/things")
                .header(header::AUTHORIZATION, format!("Basic {READ}"))
                .body(Body::empty())
                .unwrap(),
            Request::get("/v1/things")
                .header(header::AUTHORIZATION, "Bearer ")
                .body(Body::empty())
                .unwrap(),
            Request::get("/v1/things")
                .header(header::AUTHORIZATION, format!("Bearer {READ}"))
                .header(header::AUTHORIZATION, format!("Bearer {WRITE}"))
                .body(Body::empty())
                .unwrap(),
            json(req(Method::POST, "/v1/things", None)),
            req(Method::GET, "/v1/unknown", None)
                .body(Body::empty())
                .unwrap(),
        ] {
            let (status, headers, v) = send(&app, r).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
            assert_eq!(code(&v), "unauthorized");
            let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            assert!(!v.to_string().contains("token-0123"), "{v}");
        }
        // A read token may GET, not POST.
        let (s, _, _) = send(
            &app,
            req(Method::GET, "/v1/things", Some(READ))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, h, v) = send(&app, json(req(Method::POST, "/v1/things", Some(READ)))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(code(&v), "forbidden");
        assert!(
            h[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("insufficient_scope")
        );
        // A write token may do everything; the scheme is case-insensitive.
        let (s, _, v) = send(&app, json(req(Method::POST, "/v1/things", Some(WRITE)))).await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!({"a": 1})));
        let r = Request::get("/v1/things")
            .header(header::AUTHORIZATION, format!("bearer  {WRITE}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, r).await.0, StatusCode::OK);
        // Health is open.
        let (s, _, v) = send(
            &app,
            req(Method::GET, "/healthz", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!("ok")));
    }

    #[tokio::test]
    async fn handlers_never_see_the_token() {
        let router = Router::new().route(
            "/v1/echo",
            get(|headers: HeaderMap| async move {
                format!("{}", headers.contains_key(header::AUTHORIZATION))
            }),
        );
        let app = Guard::new(Some(tokens()), Limits::default()).apply(router);
        let (s, _, v) = send(
            &app,
            req(Method::GET, "/v1/echo", Some(READ))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!(false)));
    }

    #[tokio::test]
    async fn body_limit() {
        let limits = Limits {
            max_body: 64,
            ..Limits::default()
        };
        let app = app(None, limits);
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(100));
        // Told by Content-Length.
        let r = Request::post("/v1/things")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, big.len())
            .body(Body::from(big.clone()))
            .unwrap();
        let (s, _, v) = send(&app, r).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
        // Without a length: the extractor refuses it as it arrives.
        let chunks = futures_util::stream::iter(
            big.clone()
                .into_bytes()
                .chunks(10)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let r = Request::post("/v1/things")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(chunks))
            .unwrap();
        let resp = app.clone().oneshot(r).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A small body passes; a JSON Lines body is not limited in total.
        let r = Request::post("/v1/things")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"a":1}"#))
            .unwrap();
        assert_eq!(send(&app, r).await.0, StatusCode::OK);
        let lines = "{\"a\":1}\n".repeat(100);
        let r = Request::post("/v1/lines")
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header(header::CONTENT_LENGTH, lines.len())
            .body(Body::from(lines.clone()))
            .unwrap();
        let (s, _, v) = send(&app, r).await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!(lines.len())));
    }

    #[tokio::test]
    async fn timeouts() {
        let limits = Limits {
            request_timeout: Duration::from_millis(100),
            ..Limits::default()
        };
        let app = app(None, limits);
        let (s, h, v) = send(&app, Request::get("/v1/slow").body(Body::empty()).unwrap()).await;
        assert_eq!((s, code(&v)), (StatusCode::SERVICE_UNAVAILABLE, "timeout"));
        assert_eq!(h[header::RETRY_AFTER], "1");
        // A JSON Lines upload is not cut at the request timeout but when it falls silent.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(1);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            );
        let r = Request::post("/v1/lines")
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from_stream(stream))
            .unwrap();
        tx.send(Ok(Bytes::from_static(b"{}\n"))).await.unwrap();
        let (s, _, v) = send(&app, r).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(v.as_str().unwrap().contains("sent nothing"), "{v}");
        drop(tx);
    }

    #[tokio::test]
    async fn overload_is_answered_at_once() {
        let limits = Limits {
            max_concurrent: 2,
            ..Limits::default()
        };
        let (app, g) = guarded(Some(tokens()), limits);
        // Two uploads held open fill the server.
        let mut held = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (tx, rx) =
                tokio::sync::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(1);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            });
            let r = req(Method::POST, "/v1/lines", Some(WRITE))
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(Body::from_stream(stream))
                .unwrap();
            tx.send(Ok(Bytes::from_static(b"{}\n"))).await.unwrap();
            answers.push(tokio::spawn(app.clone().oneshot(r)));
            held.push(tx);
        }
        // Wait (bounded) until both hold their slot.
        for _ in 0..10_000 {
            if g.inner.slots.available_permits() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let g_probe = || {
            req(Method::GET, "/v1/things", Some(READ))
                .body(Body::empty())
                .unwrap()
        };
        let mut refused = None;
        for _ in 0..1000 {
            let (s, h, v) = send(&app, g_probe()).await;
            if s == StatusCode::SERVICE_UNAVAILABLE {
                refused = Some((h, v));
                break;
            }
            tokio::task::yield_now().await;
        }
        let (h, v) = refused.expect("a third request is refused");
        assert_eq!(code(&v), "overloaded");
        assert_eq!(h[header::RETRY_AFTER], "1");
        // Unauthenticated requests are refused before they take a slot; health is open.
        assert_eq!(
            send(
                &app,
                req(Method::GET, "/v1/things", None)
                    .body(Body::empty())
                    .unwrap()
            )
            .await
            .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Request::get("/healthz").body(Body::empty()).unwrap())
                .await
                .0,
            StatusCode::OK
        );
        // Once they end, requests are served again.
        drop(held);
        for a in answers {
            assert_eq!(a.await.unwrap().unwrap().status(), StatusCode::OK);
        }
        assert_eq!(send(&app, g_probe()).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_streamed_answer_holds_its_slot_to_the_end() {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(1);
        let rx = std::sync::Mutex::new(Some(rx));
        let rx = Arc::new(rx);
        let router = Router::new()
            .route(
                "/v1/stream",
                get(move || {
                    let rx = rx.lock().unwrap().take();
                    async move {
                        let rx = rx.expect("one stream");
                        let s = futures_util::stream::unfold(rx, |mut rx| async move {
                            rx.recv().await.map(|x| (x, rx))
                        });
                        Body::from_stream(s)
                    }
                }),
            )
            .route("/v1/things", get(|| async { "things" }));
        let limits = Limits {
            max_concurrent: 1,
            ..Limits::default()
        };
        let app = Guard::new(None, limits).apply(router);
        let resp = app
            .clone()
            .oneshot(Request::get("/v1/stream").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (s, _, v) = send(
            &app,
            Request::get("/v1/things").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        tx.send(Ok(Bytes::from_static(b"data\n"))).await.unwrap();
        drop(tx);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&body[..], b"data\n");
        assert_eq!(
            send(
                &app,
                Request::get("/v1/things").body(Body::empty()).unwrap()
            )
            .await
            .0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn live_streams_end_at_shutdown_and_others_go_on() {
        type Tx = tokio::sync::mpsc::Sender<std::result::Result<Bytes, std::io::Error>>;
        let senders: Arc<std::sync::Mutex<Vec<Tx>>> = Arc::default();
        let streamed = |content_type: &'static str, senders: Arc<std::sync::Mutex<Vec<Tx>>>| {
            get(move || {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                senders.lock().unwrap().push(tx);
                async move {
                    let s = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|x| (x, rx))
                    });
                    ([(header::CONTENT_TYPE, content_type)], Body::from_stream(s))
                }
            })
        };
        let router = Router::new()
            .route("/v1/live", streamed("text/event-stream", senders.clone()))
            .route(
                "/v1/report",
                streamed("application/x-ndjson", senders.clone()),
            );
        let g = Guard::new(None, Limits::default());
        let app = g.apply(router);
        let live = app
            .clone()
            .oneshot(Request::get("/v1/live").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let report = app
            .clone()
            .oneshot(Request::get("/v1/report").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let txs: Vec<Tx> = senders.lock().unwrap().clone();
        txs[0]
            .send(Ok(Bytes::from_static(b"id: 1\n\n")))
            .await
            .unwrap();
        txs[1]
            .send(Ok(Bytes::from_static(b"{\"line\":1}\n")))
            .await
            .unwrap();
        let mut live = live.into_body().into_data_stream();
        assert_eq!(&live.next().await.unwrap().unwrap()[..], b"id: 1\n\n");
        g.close_streams();
        // The live stream ends though its source goes on; the report ends when its source does.
        assert!(live.next().await.is_none());
        txs[1]
            .send(Ok(Bytes::from_static(b"{\"line\":2}\n")))
            .await
            .unwrap();
        drop(txs);
        senders.lock().unwrap().clear();
        let report = axum::body::to_bytes(report.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&report[..], b"{\"line\":1}\n{\"line\":2}\n");
    }

    #[tokio::test]
    async fn a_timed_out_handler_runs_to_its_end_holding_its_slot() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let router = {
            let gate = gate.clone();
            Router::new()
                .route(
                    "/v1/gated",
                    post(move || {
                        let gate = gate.clone();
                        let done_tx = done_tx.clone();
                        async move {
                            gate.notified().await;
                            let _ = done_tx.send(());
                            "done"
                        }
                    }),
                )
                .route("/v1/things", get(|| async { "things" }))
        };
        let limits = Limits {
            request_timeout: Duration::from_millis(50),
            max_concurrent: 1,
            ..Limits::default()
        };
        let g = Guard::new(None, limits);
        let app = g.apply(router);
        let (s, _, v) = send(
            &app,
            Request::post("/v1/gated").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::SERVICE_UNAVAILABLE, "timeout"));
        // The handler goes on, and keeps its slot until it ends.
        let (s, _, v) = send(
            &app,
            Request::get("/v1/things").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        gate.notify_one();
        done_rx.recv().await.expect("the handler ran to its end");
        for _ in 0..10_000 {
            if g.inner.slots.available_permits() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let (s, _, _) = send(
            &app,
            Request::get("/v1/things").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
}
