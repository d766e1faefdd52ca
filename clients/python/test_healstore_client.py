"""Unit checks of healstore_client against a stub HTTP server (standard library only):
error mapping, retries after 503 (honouring Retry-After) and after failed connections,
idempotency keys kept across retries, bearer tokens.

    python3 -m unittest test_healstore_client      (from clients/python)
"""

import http.server
import json
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from healstore_client import Client, HealstoreError  # noqa: E402


class Stub:
    """A server answering from a script: a list of (status, headers, body) per request,
    recording every request (method, path, headers, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                stub.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, payload = stub.answers.pop(0)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def error(code, message):
    return {"error": {"code": code, "message": message}}


class ClientTests(unittest.TestCase):
    def setUp(self):
        self.slept = []
        self.stub = None

    def tearDown(self):
        if self.stub:
            self.stub.close()

    def client(self, answers, **kw):
        self.stub = Stub(answers)
        return Client(self.stub.url, sleep=self.slept.append, **kw)

    def test_error_body_mapped(self):
        hs = self.client([(409, {"X-Request-Id": "req-42"}, error("conflict", "other facts"))])
        with self.assertRaises(HealstoreError) as cm:
            hs.record_failure("agent_down", agent_id="a", failure_id="f1")
        e = cm.exception
        self.assertEqual((e.status, e.code, e.message, e.request_id),
                         (409, "conflict", "other facts", "req-42"))
        self.assertEqual(self.slept, [], "a 409 is not retried")

    def test_non_json_error(self):
        hs = self.client([(502, {}, b"bad gateway")])
        with self.assertRaises(HealstoreError) as cm:
            hs.stats()
        self.assertEqual((cm.exception.status, cm.exception.code), (502, "http_502"))
        self.assertIn("bad gateway", cm.exception.message)

    def test_503_retried_after_retry_after_same_failure_id(self):
        ok = {"failure_id": "x", "duplicate": False, "delegated_actions": []}
        hs = self.client([
            (503, {"Retry-After": "2"}, error("retry_later", "busy")),
            (503, {"Retry-After": "1"}, error("overloaded", "full")),
            (200, {}, ok),
        ])
        self.assertEqual(hs.record_failure("agent_down", agent_id="a"), ok)
        self.assertEqual(self.slept, [2.0, 1.0])
        self.assertEqual(hs.retried, 2)
        ids = {json.loads(r[3])["failure_id"] for r in self.stub.requests}
        self.assertEqual(len(ids), 1, "every try carries the same failure id: %r" % ids)
        self.assertEqual(len(self.stub.requests), 3)

    def test_503_gives_up_after_retries(self):
        hs = self.client([(503, {"Retry-After": "1"}, error("closed", "stopping"))] * 3,
                         retries=2)
        with self.assertRaises(HealstoreError) as cm:
            hs.circuits()
        self.assertEqual((cm.exception.status, cm.exception.code, cm.exception.retry_after),
                         (503, "closed", 1.0))
        self.assertEqual(len(self.stub.requests), 3)

    def test_retry_after_capped(self):
        hs = self.client([(503, {"Retry-After": "3600"}, error("retry_later", "busy")),
                          (200, {}, {"circuits": []})], max_backoff=0.5)
        self.assertEqual(hs.circuits(), [])
        self.assertEqual(self.slept, [0.5])

    def test_permit_not_retried_after_timeout(self):
        # A 503 `timeout`: the server may still take the trial; a permit is not retried.
        hs = self.client([(503, {"Retry-After": "1"}, error("timeout", "slow"))])
        with self.assertRaises(HealstoreError) as cm:
            hs.permit("a")
        self.assertEqual(cm.exception.code, "timeout")
        self.assertEqual(self.slept, [])

    def test_permit_retried_when_overloaded(self):
        hs = self.client([(503, {"Retry-After": "1"}, error("overloaded", "full")),
                          (200, {}, {"permitted": True, "reactions": [], "recovered": []})])
        self.assertTrue(hs.permit("agent/1")["permitted"])
        self.assertEqual(self.stub.requests[1][1], "/v1/circuits/agent%2F1/permit")

    def test_bearer_token_and_query(self):
        hs = self.client([(200, {}, {"window": {}})], token="write-token-0123456789")
        hs.stats(window="1h")
        method, path, headers, _ = self.stub.requests[0]
        self.assertEqual((method, path), ("GET", "/v1/stats?window=1h"))
        self.assertEqual(headers.get("Authorization"), "Bearer write-token-0123456789")

    def test_json_lines(self):
        body = b'{"position":1}\n{"position":2}\n'
        hs = self.client([(200, {"Content-Type": "application/x-ndjson"}, body)])
        self.assertEqual(hs.events(after=0, types=["a", "b"]), [{"position": 1}, {"position": 2}])
        self.assertEqual(self.stub.requests[0][1], "/v1/events?after=0&type=a%2Cb")

    def test_connection_refused_retried_then_raised(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        hs = Client("http://127.0.0.1:%d" % port, retries=3, backoff=0.1,
                    sleep=self.slept.append)
        with self.assertRaises(HealstoreError) as cm:
            hs.permit("a")
        self.assertEqual((cm.exception.status, cm.exception.code), (0, "connection"))
        self.assertEqual(len(self.slept), 3)
        self.assertTrue(all(0 < w <= 5.0 for w in self.slept), self.slept)
        self.assertLess(self.slept[0], self.slept[2], "the backoff grows: %r" % self.slept)


if __name__ == "__main__":
    unittest.main()
