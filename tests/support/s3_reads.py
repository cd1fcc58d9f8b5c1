"""What clients read from a moto S3 server: the bytes of every GET response body, per key.

A WSGI wrapper around the server's own application, so the count is what went over the
wire (ranged GETs included), whichever process read it: the runner in the test's own
process, a CLI subprocess, or pods of the stand-in kubelet.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class S3Reads:
    """Counts GET body bytes per `bucket/key` on a started moto ThreadedMotoServer."""

    def __init__(self, server: Any) -> None:
        # moto keeps its werkzeug server private; werkzeug reads `server.app` per request.
        wsgi = server._server
        assert wsgi is not None, "start the moto server first"
        self._wsgi, self._app = wsgi, wsgi.app
        self._lock = threading.Lock()
        self.bytes: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        wsgi.app = self._counting

    def stop(self) -> None:
        self._wsgi.app = self._app

    def of(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Bytes read per key of `bucket` under `prefix`."""
        with self._lock:
            start = f"{bucket}/{prefix}"
            return {k[len(bucket) + 1:]: n for k, n in self.bytes.items() if k.startswith(start)}

    def _counting(self, environ: dict[str, Any], start_response: Callable[..., Any]
                  ) -> Iterator[bytes]:
        body = self._app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            yield from body
            return
        # Path-style requests (an IP endpoint): /bucket/key.
        key = unquote(environ.get("PATH_INFO", "")).lstrip("/")
        with self._lock:
            self.gets[key] += 1
        try:
            for chunk in body:
                with self._lock:
                    self.bytes[key] += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
