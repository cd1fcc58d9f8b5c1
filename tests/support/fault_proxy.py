"""A fault-injecting HTTP proxy in front of an S3 server, run as its own process on loopback.

Clients point AWS_ENDPOINT_URL at it. It forwards each request to the upstream server (moto)
unless it picks the request for a fault:

  slowdown  answer 503 with S3's SlowDown XML error body (the store never sees the request)
  internal  answer 500 with S3's InternalError XML error body
  cut       a PUT: pass its headers and part of its body upstream, then close both
            connections, as a network or a client dying mid-upload would
  stall     a GET of an object: answer nothing until the client gives up (its read timeout)
            and closes the connection

Picks depend on the seed and on the request: its method, object key and query (not the
bucket, which tests name at random) and how many times that same request came before; never
on thread timing, so the same requests meet the same faults in every run. No request fails
more than `max_in_a_row` times in a row, so a client that tries more often always gets
through. `limit` caps some kinds; when a cap binds, arrival order decides which requests
get a fault of that kind.

What it did (faults by kind, forwarded requests by method, how stalls ended):
GET /__fault_proxy__/counts returns it as JSON. PUT /__fault_proxy__/answer-all with an S3
error as JSON (status, code, message; optionally only requests of one `method` whose path
holds `path_contains`) answers every such request after it with that error, as a store
does once the client's temporary credentials expired; `null` ends that.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import select
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from tests.support.moto_process import free_port, request_body
from tests.support.paths import REPO
from tests.support.proxy_process import CONTROL, ProxyProcess

ANSWER_ALL = "/__fault_proxy__/answer-all"

KINDS = ("slowdown", "internal", "cut", "stall")
STALL_CAP = 300.0  # seconds: a stalled request whose client never gives up is let go then
_ERRORS = {  # kind -> (status, reason phrase, S3 error code, message), as S3 answers them
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal": (500, "Internal Server Error", "InternalError",
                 "We encountered an internal error. Please try again."),
}


@dataclass(frozen=True)
class Faults:
    """Shares of requests to break, by kind; `cut` of PUTs, `stall` of object GETs."""

    seed: int = 0
    slowdown: float = 0.0
    internal: float = 0.0
    cut: float = 0.0
    stall: float = 0.0
    limit: dict[str, int] = field(default_factory=dict)  # kind -> most faults of that kind
    max_in_a_row: int = 2
    cut_fraction: float = 0.5  # of a cut PUT's body, the part that is passed on


class Injector:
    """Picks the fault of each request and counts what happened (thread-safe)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.in_a_row: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.answer_all: dict[str, Any] | None = None  # the error, and which requests

    def pick(self, method: str, target: str) -> str | None:
        url = urlsplit(target)
        key = url.path.lstrip("/").partition("/")[2]
        query = sorted((k, v) for k, v in parse_qsl(url.query, keep_blank_values=True)
                       if k != "uploadId")  # upload ids are random
        request = f"{method} {key} {query}"
        with self.lock:
            nth = self.seen[request]
            self.seen[request] += 1
            draw = random.Random(f"{self.faults.seed}|{request}|{nth}").random()
            kind = self._kind(draw, method, key, dict(query))
            if kind and (self.in_a_row[request] >= self.faults.max_in_a_row
                         or self.counts[kind] >= self.faults.limit.get(kind, 1 << 30)):
                kind = None
            self.in_a_row[request] = self.in_a_row[request] + 1 if kind else 0
            self.counts[kind or f"forwarded {method}"] += 1
        return kind

    def _kind(self, draw: float, method: str, key: str, query: dict[str, str]) -> str | None:
        shares = [("slowdown", self.faults.slowdown), ("internal", self.faults.internal)]
        if method == "PUT":
            shares.append(("cut", self.faults.cut))
        if method == "GET" and key and not query.keys() & {"list-type", "uploads"}:
            shares.append(("stall", self.faults.stall))
        edge = 0.0
        for kind, share in shares:
            edge += share
            if draw < edge:
                return kind
        return None

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def _handler(injector: Injector, upstream: tuple[str, int]) -> type[BaseHTTPRequestHandler]:
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

        def log_message(self, *args: object) -> None:
            pass

        def handle_request(self) -> None:
            if self.path == CONTROL:
                with injector.lock:
                    self._answer(200, "OK", json.dumps(injector.counts).encode(),
                                 "application/json")
                return
            if self.path == ANSWER_ALL:
                with injector.lock:
                    injector.answer_all = json.loads(self._body() or b"null")
                self._answer(200, "OK", b"{}", "application/json")
                return
            with injector.lock:
                error = injector.answer_all
            if error is not None and self.command == error.get("method", self.command) \
                    and error.get("path_contains", "") in self.path:
                self._body()
                injector.count(f"answered {error['code']}")
                self._s3_error(int(error["status"]), str(error["code"]), str(error["message"]))
                return
            kind = injector.pick(self.command, self.path)
            if kind == "stall":
                self._stall()
            elif kind == "cut":
                self._cut()
            else:
                body = self._body()
                if kind:
                    self._error(kind)
                else:
                    self._forward(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_request

        def _body(self) -> bytes | None:
            return request_body(self)

        def _headers(self) -> list[tuple[str, str]]:
            return [(k, v) for k, v in self.headers.items()
                    if k.lower() not in ("transfer-encoding", "connection", "expect")]

        def _answer(self, status: int, reason: str, body: bytes, content_type: str) -> None:
            self.send_response_only(status, reason)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amz-request-id", f"FAULT{random.getrandbits(48):012X}")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, kind: str) -> None:
            status, reason, code, message = _ERRORS[kind]
            self._s3_error(status, code, message, reason)

        def _s3_error(self, status: int, code: str, message: str,
                      reason: str | None = None) -> None:
            reason = reason or http.client.responses.get(status, "Error")
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message>"
                    f"<Resource>{escape(urlsplit(self.path).path)}</Resource>"
                    f"<RequestId>FAULT{random.getrandbits(48):012X}</RequestId></Error>")
            self._answer(status, reason, body.encode(), "application/xml")

        def _cut(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            part = self.rfile.read(int(length * injector.faults.cut_fraction))
            # The store sees an upload begin and break off, as it would from a dying client.
            conn = http.client.HTTPConnection(*upstream, timeout=30)
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for key, value in self._headers():
                    conn.putheader(key, value)
                conn.endheaders()
                conn.send(part)
            except OSError:
                pass
            finally:
                conn.close()
            self.close_connection = True  # no answer: the client's connection just ends

        def _stall(self) -> None:
            # Readable means the client closed its end (its read timeout fired).
            ready, _, _ = select.select([self.connection], [], [], STALL_CAP)
            injector.count("stall ended by client" if ready else "stall ended by cap")
            self.close_connection = True

        def _forward(self, body: bytes | None) -> None:
            headers = dict(self._headers())
            if body is not None:
                headers["Content-Length"] = str(len(body))
            for fresh in (False, True):  # a stale keep-alive connection: one fresh try
                if fresh or getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPConnection(*upstream, timeout=300)
                try:
                    local.conn.request(self.command, self.path, body=body, headers=headers)
                    response = local.conn.getresponse()
                    data = response.read()
                    break
                except (OSError, http.client.HTTPException):
                    local.conn.close()
                    if fresh:
                        raise
            self.send_response_only(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def serve(upstream: str, port: int, faults: Faults) -> None:
    url = urlsplit(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", port),
                                 _handler(Injector(faults), (url.hostname or "", url.port or 80)))
    server.daemon_threads = True
    server.serve_forever()


# --- the test side: start, read, stop -----------------------------------------------------
@dataclass
class FaultProxy(ProxyProcess):
    """A running proxy process; `stop` it to make the store vanish for its clients."""

    upstream: str
    faults: Faults
    port: int
    process: subprocess.Popen[bytes] | None = None
    last: Counter[str] = field(default_factory=Counter)  # counts when it was stopped

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base_url(self) -> str:
        return self.endpoint

    def answer_all(self, status: int, code: str, message: str, *, method: str | None = None,
                   path_contains: str = "") -> None:
        """Answer every request (of `method`, whose path holds `path_contains`) from now on
        with this S3 error (see the module's doc)."""
        error = {"status": status, "code": code, "message": message,
                 "path_contains": path_contains, **({"method": method} if method else {})}
        self._control(json.dumps(error))

    def forward_again(self) -> None:
        """End `answer_all`: requests go to the store again (faults as before)."""
        self._control("null")

    def _control(self, body: str) -> None:
        request = urllib.request.Request(self.endpoint + ANSWER_ALL, data=body.encode(),
                                         method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def start(self, timeout: float = 30.0) -> FaultProxy:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fault_proxy", "--upstream", self.upstream,
             "--port", str(self.port), "--faults", json.dumps(asdict(self.faults))], cwd=REPO)
        self.wait_until_answering(timeout, "fault proxy")
        return self


def start_proxy(upstream: str, faults: Faults = Faults(), port: int | None = None) -> FaultProxy:
    """A proxy process in front of `upstream` (on `port`, else a free one), answering."""
    return FaultProxy(upstream, faults, port or free_port()).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="http://host:port of the S3 server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--faults", default="{}", help="JSON of Faults")
    args = parser.parse_args()
    serve(args.upstream, args.port, Faults(**json.loads(args.faults)))


if __name__ == "__main__":
    main()
