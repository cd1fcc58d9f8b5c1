"""A moto S3 server in its own process, a counting proxy in front of it, and bulk seeding.

Requests are counted where they arrive, by a small HTTP proxy between the client and the
server, never by instrumenting our code. (moto's own recorder appends each request to a file
in two writes, so concurrent requests can interleave there; the proxy counts under a lock.)
The server's own process also keeps its work off the GIL of the code being measured.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def request_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request's body, read whole (Content-Length or chunked, as S3 clients send)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while size := int(handler.rfile.readline().split(b";")[0], 16):
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        handler.rfile.readline()
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: frozenset[str]

    @property
    def kind(self) -> str:
        """LIST, HEAD, GET, PUT, MULTIPART (create/part/complete), DELETE or OTHER."""
        if self.method == "GET" and "list-type" in self.query:
            return "LIST"
        if "uploads" in self.query or "uploadId" in self.query:
            return "MULTIPART"
        return self.method if self.method in ("HEAD", "GET", "PUT", "DELETE") else "OTHER"


@dataclass
class MotoProcess:
    server: str  # moto itself
    endpoint: str  # the counting proxy in front of it: point clients here
    seen: list[Request] = field(default_factory=list)
    recording_on: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def recording(self) -> Iterator[list[Request]]:
        """Requests that reach the server inside the block (filled in when it ends)."""
        found: list[Request] = []
        with self.lock:
            self.seen, self.recording_on = [], True
        try:
            yield found
        finally:
            with self.lock:
                self.recording_on = False
                found.extend(self.seen)

    def record(self, method: str, target: str) -> None:
        url = urlsplit(target)
        with self.lock:
            if self.recording_on:
                self.seen.append(Request(method, url.path,
                                         frozenset(parse_qs(url.query, True))))


def _proxy(moto: MotoProcess) -> ThreadingHTTPServer:
    upstream = urlsplit(moto.server)
    local = threading.local()

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

        def log_message(self, *args: object) -> None:
            pass

        def forward(self) -> None:
            body = request_body(self)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("transfer-encoding", "connection")}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            if getattr(local, "conn", None) is None:
                local.conn = http.client.HTTPConnection(upstream.hostname, upstream.port,
                                                        timeout=300)
            try:
                local.conn.request(self.command, self.path, body=body, headers=headers)
                response = local.conn.getresponse()
            except (OSError, http.client.HTTPException):
                local.conn.close()  # a stale keep-alive connection: one fresh try
                local.conn.request(self.command, self.path, body=body, headers=headers)
                response = local.conn.getresponse()
            data = response.read()
            moto.record(self.command, self.path)
            self.send_response_only(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

    return ThreadingHTTPServer(("127.0.0.1", 0), Forward)


@contextmanager
def moto_process(workdir: Path) -> Iterator[MotoProcess]:
    """Start `moto.server` on a free loopback port, and the counting proxy in front of it."""
    port = free_port()
    log = (workdir / "moto-server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                               env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the server to answer, not for a fixed time
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json",
                                       timeout=10).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {workdir}") from None
                time.sleep(0.1)
        moto = MotoProcess(server=f"http://127.0.0.1:{port}", endpoint="")
        proxy = _proxy(moto)
        moto.endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        try:
            yield moto
        finally:
            proxy.shutdown()
            proxy.server_close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def kinds(requests: Iterable[Request]) -> Counter[str]:
    return Counter(r.kind for r in requests)


def put_many(endpoint: str, bucket: str, objects: Iterable[tuple[str, bytes]],
             threads: int = 8, **client_options: str) -> int:
    """PUT every (key, body) with boto3 from a few threads; returns how many.
    `client_options` go to boto3.client (credentials, region; else the environment's)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **client_options)
    with ThreadPoolExecutor(threads) as pool:
        return sum(1 for _ in pool.map(
            lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects))
