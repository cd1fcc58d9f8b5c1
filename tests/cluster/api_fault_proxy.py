"""A fault-injecting HTTPS proxy in front of kube-apiserver, run as its own process on loopback.

A client's kubeconfig names the proxy as its server. The proxy terminates TLS with the API
server's own serving certificate (tests/cluster/pki.py: valid for 127.0.0.1, signed by the
cluster CA every kubeconfig here trusts), and forwards each request over TLS to the API
server with the client's headers as sent — its bearer token included, so the API server
authenticates and authorizes the client itself. Watch responses are passed on event by
event (chunked), never buffered.

Rules pick requests by method (a regex), a regex searched in the path (the query is not
matched), and optionally a regex searched in the request body. A rule's fault:

  conflict  409 Conflict with a Kubernetes Status (reason Conflict), as the API server
            answers a write that raced another ("the object has been modified")
  500       500 InternalError
  503       503 ServiceUnavailable with `Retry-After: 1`
  429       429 TooManyRequests with `Retry-After: 1` (and details.retryAfterSeconds), as
            API Priority and Fairness answers when it sheds load
  gone      on a watch: the stream is forwarded until an event matching `match` comes;
            in its place the client gets an ERROR event whose object is a Status with code
            410 (reason Expired) and the stream ends — what the API server sends when the
            watch's resourceVersion is too old. That event is never delivered on this stream.

With `lost`, the request reaches the API server first and only its answer is replaced by
the fault: a create that succeeded although the client saw a 5xx.

A rule fires on at most `count` requests, each with `probability` (seeded, so a given rule
and seed fault the same matching requests in every run); no method + path fails more than
`max_in_a_row` times in a row, so a client that retries more often than that gets through.
What it did (faults by rule, forwarded requests by method): GET /__fault_proxy__/counts.

Not emulated: HTTP/2 (clients speak HTTP/1.1 to it; the apiserver would offer h2), response
compression (Accept-Encoding is dropped), slow or reset connections, and the API server's
own view of the fault — a faulted request (unless `lost`) never reaches it, so its audit log
does not show it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import ssl
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.cluster.processes import free_port
from tests.support.moto_process import request_body
from tests.support.paths import REPO
from tests.support.proxy_process import CONTROL, ProxyProcess

FAULTS = ("conflict", "500", "503", "429", "gone")
RETRY_AFTER = 1  # seconds, on 429 and 503
HOP_BY_HOP = ("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "content-length", "accept-encoding")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """Which requests get a fault (see the module docstring)."""

    fault: str
    method: str = ""  # regex matching the whole method ("PATCH|PUT"); "" matches any
    path: str = ""  # regex, searched in the URL path
    match: str = ""  # regex, searched in the request body (`gone`: in each watch event)
    count: int = 1
    probability: float = 1.0
    lost: bool = False
    max_in_a_row: int = 3
    name: str = ""  # its key in the counts; the fault's name if empty

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; one of {', '.join(FAULTS)}")

    @property
    def label(self) -> str:
        return self.name or self.fault


def status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A Kubernetes `Status` object, as the API server puts in an error answer."""
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _details(path: str) -> Obj:
    """name/group/kind of the object a path names, as the API server fills them in."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts:
        parts = parts[parts.index("namespaces") + 2:]
    elif parts[:1] == ["api"]:
        parts = parts[2:]
    else:
        parts = parts[3:]
    group = path.split("/")[2] if path.startswith("/apis/") else ""
    return {k: v for k, v in (("name", parts[1] if len(parts) > 1 else ""), ("group", group),
                              ("kind", parts[0] if parts else "")) if v}


def fault_answer(fault: str, path: str) -> tuple[int, str, Obj, dict[str, str]]:
    """(status, reason phrase, Status body, extra headers) of a fault."""
    details = _details(path)
    what = f"{details.get('kind', '')}.{details.get('group', '')}".rstrip(".")
    if fault == "conflict":
        return 409, "Conflict", status(409, "Conflict", (
            f'Operation cannot be fulfilled on {what} "{details.get("name", "")}": the object '
            "has been modified; please apply your changes to the latest version and try "
            "again"), details), {}
    if fault == "429":
        return 429, "Too Many Requests", status(
            429, "TooManyRequests", "too many requests, please try again later",
            {**details, "retryAfterSeconds": RETRY_AFTER}), {"Retry-After": str(RETRY_AFTER)}
    if fault == "503":
        return 503, "Service Unavailable", status(
            503, "ServiceUnavailable", "the server is currently unable to handle the request",
            {**details, "retryAfterSeconds": RETRY_AFTER}), {"Retry-After": str(RETRY_AFTER)}
    return 500, "Internal Server Error", status(
        500, "InternalError", "Internal error occurred: injected by the API fault proxy",
        details), {}


def gone_event() -> bytes:
    """The watch event the API server sends for a resourceVersion it no longer has."""
    return json.dumps({"type": "ERROR", "object": status(
        410, "Expired", "too old resource version: 1 (2)")}).encode() + b"\n"


def is_watch(target: str) -> bool:
    url = urlsplit(target)
    return (parse_qs(url.query).get("watch", [""])[0] in ("true", "1")
            or "/watch/" in url.path)


class Injector:
    """Picks each request's fault and counts what happened (thread-safe)."""

    def __init__(self, rules: list[Rule], seed: int) -> None:
        self.rules, self.seed = rules, seed
        self.lock = threading.Lock()
        self.seen: Counter[int] = Counter()  # rule index -> requests it matched
        self.in_a_row: Counter[str] = Counter()  # method + path -> faults in a row
        self.counts: Counter[str] = Counter()

    def _draw(self, index: int, rule: Rule) -> bool:
        """Under the lock: whether this match of `rule` gets its fault (and count it)."""
        if self.counts[rule.label] >= rule.count:
            return False
        nth = self.seen[index]
        self.seen[index] += 1
        if random.Random(f"{self.seed}|{index}|{nth}").random() >= rule.probability:
            return False
        self.counts[rule.label] += 1
        return True

    def pick(self, method: str, target: str, body: bytes | None) -> Rule | None:
        """The fault for this request (`gone` rules are picked per event, by `gone_at`)."""
        path = urlsplit(target).path
        text = (body or b"").decode(errors="replace")
        key = f"{method} {path}"
        with self.lock:
            chosen = None
            for index, rule in enumerate(self.rules):
                if (rule.fault != "gone" and re.fullmatch(rule.method or ".*", method)
                        and re.search(rule.path, path) and re.search(rule.match, text)
                        and self.in_a_row[key] < rule.max_in_a_row
                        and self._draw(index, rule)):
                    chosen = rule
                    break
            self.in_a_row[key] = self.in_a_row[key] + 1 if chosen else 0
            self.counts[f"forwarded {method}" if chosen is None or chosen.lost
                        else "not forwarded"] += 1
        return chosen

    def watch_rules(self, target: str) -> list[tuple[int, Rule]]:
        path = urlsplit(target).path
        return [(i, r) for i, r in enumerate(self.rules)
                if r.fault == "gone" and re.fullmatch(r.method or ".*", "GET")
                and re.search(r.path, path)]

    def gone_at(self, rules: list[tuple[int, Rule]], event: bytes) -> bool:
        """Whether this watch event is replaced by a 410 and its stream ended."""
        text = event.decode(errors="replace")
        with self.lock:
            return any(re.search(rule.match, text) and self._draw(index, rule)
                       for index, rule in rules)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


def _handler(injector: Injector, upstream: tuple[str, int],
             upstream_tls: ssl.SSLContext) -> type[BaseHTTPRequestHandler]:
    local = threading.local()  # one upstream connection per client connection (thread)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked watches, as clients expect

        def log_message(self, *args: object) -> None:
            pass  # request lines carry no secrets, but nobody reads them either

        def handle_request(self) -> None:
            if self.path == CONTROL:
                self._send(200, "OK", json.dumps(injector.snapshot()).encode(), {})
                return
            body = request_body(self)
            rule = injector.pick(self.command, self.path, body)
            if rule is not None and rule.lost:
                self._exchange(body).read()  # it happened; the client will not know
            if rule is not None:
                code, phrase, answer, headers = fault_answer(rule.fault, urlsplit(self.path).path)
                self._send(code, phrase, json.dumps(answer).encode(), headers)
                return
            response = self._exchange(body)
            if is_watch(self.path) and response.status == 200:
                self._stream(response)
            else:
                data = response.read()
                self._send(response.status, response.reason, data, self._passed(response))

        do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = handle_request

        def _exchange(self, body: bytes | None) -> http.client.HTTPResponse:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            for fresh in (False, True):  # a stale keep-alive connection: one fresh try
                if fresh or getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPSConnection(*upstream, context=upstream_tls,
                                                             timeout=600)
                try:
                    local.conn.request(self.command, self.path, body=body, headers=headers)
                    return local.conn.getresponse()
                except (OSError, http.client.HTTPException):
                    local.conn.close()
                    if fresh:
                        raise
            raise AssertionError("unreachable")

        @staticmethod
        def _passed(response: http.client.HTTPResponse) -> dict[str, str]:
            return {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}

        def _send(self, code: int, phrase: str, data: bytes, headers: dict[str, str]) -> None:
            self.send_response_only(code, phrase)
            headers.setdefault("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _stream(self, response: http.client.HTTPResponse) -> None:
            rules = injector.watch_rules(self.path)
            self.send_response_only(response.status, response.reason)
            for key, value in self._passed(response).items():
                self.send_header(key, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()  # the client sees the watch open before any event
            finished = False
            try:
                while line := response.readline():  # the API server sends one event a line
                    if rules and injector.gone_at(rules, line):
                        self._chunk(gone_event())
                        break
                    self._chunk(line)
                else:
                    finished = True
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:  # the client went away (kopf closes watches it restarts)
                self.close_connection = True
            finally:
                if not finished:  # the rest of that stream is unread: drop the connection
                    local.conn.close()
                    local.conn = None

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients dropping connections is normal for watches; no tracebacks on stderr


def serve(upstream: str, port: int, ca: Path, cert: Path, key: Path, rules: list[Rule],
          seed: int) -> None:
    url = urlsplit(upstream)
    upstream_tls = ssl.create_default_context(cafile=str(ca))
    upstream_tls.set_alpn_protocols(["http/1.1"])
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(str(cert), str(key))
    serving.set_alpn_protocols(["http/1.1"])
    server = _Server(("127.0.0.1", port), _handler(
        Injector(rules, seed), (url.hostname or "127.0.0.1", url.port or 443), upstream_tls))
    # The handshake happens in each connection's own thread (on its first read), so one
    # slow client cannot hold up accepting the others.
    server.socket = serving.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    server.serve_forever()


# --- the test side: start, read, stop -----------------------------------------------------
@dataclass
class ApiFaultProxy(ProxyProcess):
    """A running proxy process in front of `upstream` (see the module docstring). Its
    `counts()`: faults by rule label, plus `forwarded <METHOD>` and `not forwarded`."""

    upstream: str
    ca: Path
    cert: Path
    key: Path
    rules: list[Rule]
    log: Path
    seed: int = 0
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    last: Counter[str] = field(default_factory=Counter)  # counts when it was stopped

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def base_url(self) -> str:
        return self.server

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def start(self, timeout: float = 30.0) -> ApiFaultProxy:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.cluster.api_fault_proxy",
                 "--upstream", self.upstream, "--port", str(self.port), "--ca", str(self.ca),
                 "--cert", str(self.cert), "--key", str(self.key), "--seed", str(self.seed),
                 "--rules", json.dumps([asdict(rule) for rule in self.rules])],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.wait_until_answering(timeout, f"API fault proxy; see {self.log}")
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="https://host:port of kube-apiserver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True, help="CA bundle of the API server")
    parser.add_argument("--cert", type=Path, required=True, help="serving certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", default="[]", help="JSON list of Rule fields")
    args = parser.parse_args()
    serve(args.upstream, args.port, args.ca, args.cert, args.key,
          [Rule(**rule) for rule in json.loads(args.rules)], args.seed)


if __name__ == "__main__":
    main()
