"""A client for `healstore serve`, using only the Python standard library.

    from healstore_client import Client, HealstoreError

    hs = Client("http://127.0.0.1:7878", token=None)
    report = hs.record_failure("agent_down", agent_id="worker-7")
    for action in report["delegated_actions"]:
        ...                                   # carry the action out
    hs.record_outcome(report["failure_id"], success=True, duration_ms=120)
    if hs.permit("worker-7")["permitted"]:
        ...                                   # call the agent

Every method returns the JSON document the server answers (the one
`healstore ... --format json` prints); routes that answer JSON Lines return a
list of documents. An error answer raises `HealstoreError` with its status,
code, message and the request id.

Retries: a `503` (the server is overloaded, the database busy, the server
stopping) is retried after its `Retry-After`, and a connection that fails is
retried with exponential backoff. Recording a failure is always safe to retry:
the client gives every failure a `failure_id` (the server's idempotency key)
before the first try, so a retry is answered with the first answer and writes
nothing. Calls that are not idempotent (a permit, a success or usage signal)
are retried only when the server cannot have acted: a `503` other than
`timeout`, or a connection that was refused.
"""

import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

__all__ = ["Client", "HealstoreError"]

# Codes of a 503 after which the request may still complete on the server.
_MAY_HAVE_ACTED = frozenset(["timeout"])


class HealstoreError(Exception):
    """An error answer (`{"error": {"code", "message"}}`), or no answer at all.

    status: the HTTP status (0: no answer, the connection failed);
    code: the error's code (`bad_request`, `invalid_input`, `not_found`,
    `conflict`, `unauthorized`, `forbidden`, `payload_too_large`,
    `overloaded`, `retry_later`, `timeout`, `closed`, ...; `connection` when
    there was no answer); message: one line; request_id: the server's
    `X-Request-Id` for the request (for its logs); retry_after: seconds, from
    a `503`'s `Retry-After`.
    """

    def __init__(self, status, code, message, request_id=None, retry_after=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


def _retry_after(headers):
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_from_http(e):
    """A HealstoreError from a urllib HTTPError (its JSON error body if any)."""
    body = e.read() if e.fp is not None else b""
    code, message = "http_%d" % e.code, str(e.reason or "")
    try:
        detail = json.loads(body)["error"]
        code, message = detail["code"], detail["message"]
    except (ValueError, KeyError, TypeError):
        if body:
            message = body.decode("utf-8", "replace").strip()[:200]
    return HealstoreError(
        e.code,
        code,
        message,
        request_id=e.headers.get("X-Request-Id") if e.headers is not None else None,
        retry_after=_retry_after(e.headers),
    )


class Client:
    """A healstore server at `base_url` (`http://host:port`).

    token: a bearer token (`read` or `write` role) when the server has tokens.
    timeout: seconds for one HTTP exchange.
    retries: how many times a request is tried again after a 503 or a failed
    connection (0: never). backoff: the first wait after a failed connection,
    doubled each time (with jitter) up to max_backoff; a 503 waits its
    Retry-After (at most max_backoff).
    """

    def __init__(self, base_url, token=None, timeout=10.0, retries=4, backoff=0.1,
                 max_backoff=5.0, sleep=time.sleep):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        # How many times a request was tried again (for callers that report it).
        self.retried = 0

    # ----- transport -------------------------------------------------------------------

    def _url(self, path, query):
        url = self.base_url + path
        if query:
            items = [(k, v) for k, v in query.items() if v is not None]
            if items:
                url += "?" + urllib.parse.urlencode(items)
        return url

    def _once(self, method, url, data, headers):
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return resp.read(), resp.headers

    def request(self, method, path, body=None, query=None, idempotent=True, lines=False):
        """Sends one request (retried as the class says) and returns the answer parsed:
        a JSON document, or a list of them when `lines` (a JSON Lines answer)."""
        headers = {"Accept": "application/x-ndjson" if lines else "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        url = self._url(path, query)
        attempt = 0
        while True:
            try:
                raw, _ = self._once(method, url, data, headers)
                break
            except urllib.error.HTTPError as e:
                err = _error_from_http(e)
                retry = err.status == 503 and (idempotent or err.code not in _MAY_HAVE_ACTED)
                if not retry or attempt >= self.retries:
                    raise err from None
                wait = err.retry_after if err.retry_after is not None else self._backoff(attempt)
                wait = min(wait, self.max_backoff)
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as e:
                reason = getattr(e, "reason", e)
                refused = isinstance(reason, ConnectionRefusedError)
                if (not idempotent and not refused) or attempt >= self.retries:
                    raise HealstoreError(0, "connection", f"{method} {url}: {reason}") from None
                wait = self._backoff(attempt)
            attempt += 1
            self.retried += 1
            self._sleep(wait)
        text = raw.decode("utf-8")
        if lines:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text) if text.strip() else None

    def _backoff(self, attempt):
        base = min(self.max_backoff, self.backoff * (2 ** attempt))
        return base * (0.5 + random.random() / 2)

    def _get(self, path, **query):
        return self.request("GET", path, query=query)

    @staticmethod
    def _seg(s):
        return urllib.parse.quote(s, safe="")

    # ----- recording -------------------------------------------------------------------

    def record_failure(self, failure_type, agent_id=None, task_id=None, severity=None,
                       metadata=None, failure_id=None, detected_at=None):
        """POST /v1/failures: records a failure and heals it. The answer's
        `delegated_actions` are the actions to carry out; report how they went with
        record_outcome. Safe to retry: a failure_id is made here when none is given."""
        body = {"failure_type": failure_type, "failure_id": failure_id or str(uuid.uuid4())}
        for k, v in (("agent_id", agent_id), ("task_id", task_id), ("severity", severity),
                     ("metadata", metadata), ("detected_at", detected_at)):
            if v is not None:
                body[k] = v
        return self.request("POST", "/v1/failures", body)

    def heal_event(self, event):
        """POST /v1/raw-events: a raw monitoring event (`{"type": "heartbeat_failed",
        "agent_id": ...}`), detected and healed; `{"detected": false}` when it is no
        failure. A failure_id is added when the event has none (safe retries)."""
        event = dict(event)
        event.setdefault("failure_id", str(uuid.uuid4()))
        return self.request("POST", "/v1/raw-events", event)

    def record_outcome(self, failure_id, success, duration_ms=None, at=None):
        """POST /v1/outcomes: how a delegated decision's actions went (recorded once;
        the same outcome again is answered `duplicate: true`)."""
        body = {"failure_id": failure_id, "success": bool(success)}
        if duration_ms is not None:
            body["duration_ms"] = int(duration_ms)
        if at is not None:
            body["at"] = at
        return self.request("POST", "/v1/outcomes", body)

    def record_recovered(self, failure_id, at=None):
        """POST /v1/recoveries: a failure's recovery, confirmed."""
        body = {"failure_id": failure_id}
        if at is not None:
            body["at"] = at
        return self.request("POST", "/v1/recoveries", body)

    def record_success(self, agent_id, task_id=None, at=None):
        """POST /v1/successes: an agent completed work."""
        body = {"agent_id": agent_id}
        if task_id is not None:
            body["task_id"] = task_id
        if at is not None:
            body["at"] = at
        return self.request("POST", "/v1/successes", body, idempotent=False)

    def record_usage(self, resource_type, current, limit, at=None):
        """POST /v1/usage: a resource's usage."""
        body = {"resource_type": resource_type, "current": current, "limit": limit}
        if at is not None:
            body["at"] = at
        return self.request("POST", "/v1/usage", body, idempotent=False)

    # ----- circuits --------------------------------------------------------------------

    def circuits(self):
        """GET /v1/circuits: every circuit (a list of states)."""
        return self._get("/v1/circuits")["circuits"]

    def circuit(self, agent_id):
        """GET /v1/circuits/{agent}: the agent's circuit state, or None when it has none."""
        try:
            rows = self._get("/v1/circuits/" + self._seg(agent_id))["circuits"]
        except HealstoreError as e:
            if e.status == 404:
                return None
            raise
        return rows[0] if rows else None

    def permit(self, agent_id):
        """POST /v1/circuits/{agent}/permit: whether a call may go to the agent
        (`permitted`). Not retried once the server may have taken a trial."""
        return self.request("POST", "/v1/circuits/%s/permit" % self._seg(agent_id), None,
                            idempotent=False)

    def open_circuit(self, agent_id, reason):
        return self.request("POST", "/v1/circuits/%s/open" % self._seg(agent_id),
                            {"reason": reason})

    def close_circuit(self, agent_id, reason):
        return self.request("POST", "/v1/circuits/%s/close" % self._seg(agent_id),
                            {"reason": reason})

    def reset_circuit(self, agent_id, reason):
        return self.request("POST", "/v1/circuits/%s/reset" % self._seg(agent_id),
                            {"reason": reason})

    # ----- analytics, events, audit ----------------------------------------------------

    def dashboard(self, window=None, since=None, until=None):
        """GET /v1/dashboard (`healstore dashboard --format json`)."""
        return self._get("/v1/dashboard", window=window, since=since, until=until)

    def stats(self, window=None, since=None, until=None):
        """GET /v1/stats (`healstore stats --format json`)."""
        return self._get("/v1/stats", window=window, since=since, until=until)

    def mttr(self, window=None, since=None, until=None, to=None, by=None, bucket=None):
        """GET /v1/mttr (`healstore mttr --format json`)."""
        return self._get("/v1/mttr", window=window, since=since, until=until, to=to, by=by,
                         bucket=bucket)

    def events(self, after=None, limit=None, stream=None, types=None, since=None, until=None):
        """GET /v1/events: a page of events (a list), after position `after`."""
        if isinstance(types, (list, tuple)):
            types = ",".join(types)
        query = {"after": after, "limit": limit, "stream": stream, "type": types,
                 "since": since, "until": until}
        return self.request("GET", "/v1/events", query=query, lines=True)

    def audit_failure(self, failure_id):
        """GET /v1/audit/failures/{id}: the failure's decision trail (its events)."""
        return self.request("GET", "/v1/audit/failures/" + self._seg(failure_id), lines=True)

    def healthy(self):
        """GET /healthz: whether the server answers."""
        try:
            self.request("GET", "/healthz")
            return True
        except HealstoreError:
            return False
