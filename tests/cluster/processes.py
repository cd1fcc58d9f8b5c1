"""Starting, health-checking and stopping processes in their own process groups.

Owns one `ServerProcess` per control-plane component: its command line, its log file,
and waiting until an HTTP(S) health endpoint answers "ok" — with an error that quotes the
component's log tail when it does not. Also owns stopping a process group (SIGTERM, then
SIGKILL after a grace period), for components and pod processes alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOG_TAIL_LINES = 40


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(process: subprocess.Popen[bytes], grace_seconds: float) -> int | None:
    """SIGTERM the process's group, SIGKILL it after `grace_seconds`; the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_seconds)
    # Children in the group may outlive the leader: kill whatever is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    return process.returncode


def stop_process_groups(processes: list[subprocess.Popen[bytes]], grace_seconds: float) -> None:
    """`stop_process_group` for many at once: one shared grace period, not one each."""
    threads = [threading.Thread(target=stop_process_group, args=(process, grace_seconds))
               for process in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class ComponentFailed(RuntimeError):
    """A component exited or did not become healthy in time."""


@dataclass
class ServerProcess:
    """One long-running component (etcd, kube-apiserver, ...) with its own log file."""

    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_seconds: float = 10.0) -> None:
        if self.process is not None:
            stop_process_group(self.process, grace_seconds)

    def failure(self, reason: str) -> ComponentFailed:
        return ComponentFailed(f"{self.name} {reason}; last lines of {self.log_path}:\n"
                               f"{log_tail(self.log_path)}")

    def wait_healthy(self, url: str, *, timeout: float, ssl_context: ssl.SSLContext | None = None,
                     token: str | None = None) -> None:
        """Poll `url` until it answers 200 "ok"; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.running():
                code = None if self.process is None else self.process.returncode
                raise self.failure(f"exited with code {code} before {url} was healthy")
            request = urllib.request.Request(url)
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=5, context=ssl_context) as response:
                    body = response.read().decode(errors="replace").strip()
                    if response.status == 200 and body == "ok":
                        return
                    last = f"HTTP {response.status}: {body[:200]}"
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code}: {error.read().decode(errors='replace')[-500:]}"
            except (OSError, ssl.SSLError) as error:
                last = str(error)
            time.sleep(0.2)
        raise self.failure(f"not healthy at {url} after {timeout:.0f}s (last: {last})")
