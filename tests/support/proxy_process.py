"""What the test proxies (S3 faults, Kubernetes API faults) share: a process that serves
its counts, waited for until it answers, and stopped with its last counts kept."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any, Self

CONTROL = "/__fault_proxy__/counts"  # the path a proxy answers with its counts itself


class ProxyProcess:
    """Mixed into a proxy's dataclass, which holds `process`, `port` and `last` and
    defines `base_url()` and `start()`."""

    process: subprocess.Popen[bytes] | None
    port: int
    last: Counter[str]

    def base_url(self) -> str:
        raise NotImplementedError

    def tls_context(self) -> ssl.SSLContext | None:
        """What verifies the proxy's own certificate, when it serves HTTPS."""
        return None

    def counts(self) -> Counter[str]:
        """What it did so far, as it answers on CONTROL (the last counts once stopped)."""
        if self.process is None:
            return Counter(self.last)
        with urllib.request.urlopen(self.base_url() + CONTROL, timeout=10,
                                    context=self.tls_context()) as response:
            return Counter(json.loads(response.read()))

    def start(self, timeout: float = 30.0) -> Any:
        raise NotImplementedError

    def wait_until_answering(self, timeout: float, what: str) -> None:
        """Until it answers, not for a fixed time; a process that died fails at once."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.counts()
                return
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{what} did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> Counter[str]:
        """End the process (its port then refuses connections); returns its final counts."""
        if self.process is None:
            return Counter(self.last)
        with contextlib.suppress(urllib.error.URLError, ConnectionError):
            self.last = self.counts()
        self.process.terminate()
        self.process.wait(timeout=30)
        self.process = None
        return Counter(self.last)

    def __enter__(self) -> Self:
        return self if self.process else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
