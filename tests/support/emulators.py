"""The gs:// and az:// tests' servers: a GCS JSON API emulator and Azurite, each a real HTTP
server on a free loopback port, started once per session.

- GCS: `gcp-storage-emulator` (a dev extra, so pip installs it), run as its own process so a
  slow request of the runner never waits on the test process's interpreter. It answers the
  JSON API gcsfs speaks: listings with prefix and delimiter, media, multipart and resumable
  uploads, ranged reads, deletes. gcsfs finds it through STORAGE_EMULATOR_HOST.
- Azure: Azurite's Blob service, installed from the npm registry with the machine's Node.js
  and npm into ~/.cache/whisperfleet/azurite-<version>-<lock digest> (`npm ci` from
  tests/support/azurite/'s lock file), in memory, telemetry off, with an account of the
  tests' own (`AZURITE_ACCOUNTS`) whose key is a secret the guard looks for.

A server counts as up when it answers an HTTP request, whatever the answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.credentials import AZURE_ACCOUNT, AZURE_ACCOUNT_KEY

AZURITE_DIR = Path(__file__).resolve().parent / "azurite"
# The newest Azurite whose package allows Node.js 20 (3.36 wants 21, 3.37 wants 22).
AZURITE_VERSION = "3.35.0"
NODE_HINT = ("the az:// tests run Azurite from the npm registry: install Node.js (18 or newer) "
             "and npm, and put both on PATH")
START_SECONDS = 60.0


class EmulatorError(RuntimeError):
    """An emulator could not be installed or did not come up; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once `url` gives any HTTP answer; EmulatorError when the process exits first
    or START_SECONDS pass."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an answer (Azurite refuses an unsigned request): it is serving
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmulatorError(f"{process.args[0]} did not answer at {url} "
                                f"(exit code {process.poll()}):\n{tail}")
        # The server is starting: ask again shortly (bounded by the deadline above).
        time.sleep(0.05)


@contextlib.contextmanager
def running(argv: list[str], url: str, env: dict[str, str] | None = None
            ) -> Iterator[None]:
    """Run a server process until the block ends; its output goes to a log shown when it
    fails to come up."""
    with tempfile.TemporaryDirectory(prefix="whisperfleet-emulator-") as work:
        log = Path(work) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=work, env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_answering(url, process, log)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def gcs_emulator() -> Iterator[str]:
    """The GCS emulator's endpoint (what STORAGE_EMULATOR_HOST is set to)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
            "--port", str(port), "--in-memory"]
    with running(argv, f"{endpoint}/storage/v1/b?project=test"):
        yield endpoint


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisperfleet"


def azurite_blob() -> Path:
    """Azurite's Blob service program, installed once per machine and lock file."""
    lock = (AZURITE_DIR / "package-lock.json").read_bytes()
    root = cache_root() / f"azurite-{AZURITE_VERSION}-{hashlib.sha256(lock).hexdigest()[:12]}"
    program = root / "node_modules" / ".bin" / "azurite-blob"
    if program.exists():
        return program
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise EmulatorError(f"node or npm not found on PATH: {NODE_HINT}")
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "a") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)  # another pytest process may be installing it
        if program.exists():
            return program
        draft = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
        for name in ("package.json", "package-lock.json"):
            shutil.copy(AZURITE_DIR / name, draft / name)
        # No install scripts: Azurite needs none, and none of its dependencies then runs.
        result = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                                cwd=draft, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(draft, ignore_errors=True)
            raise EmulatorError(f"`npm ci` of Azurite {AZURITE_VERSION} failed "
                                f"({NODE_HINT}):\n{result.stderr[-2000:]}")
        shutil.rmtree(root, ignore_errors=True)  # a copy without its program: replaced
        os.replace(draft, root)  # whole or absent
    return program


@contextlib.contextmanager
def azurite() -> Iterator[str]:
    """Azurite's Blob endpoint for the tests' account: http://127.0.0.1:<port>/<account>."""
    program = azurite_blob()
    port = free_port()
    argv = [str(program), "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--inMemoryPersistence", "--disableTelemetry", "--silent",
            # azure-storage-blob speaks a newer API version than this Azurite knows of.
            "--skipApiVersionCheck", "--loose"]
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{AZURE_ACCOUNT}:{AZURE_ACCOUNT_KEY}"}
    endpoint = f"http://127.0.0.1:{port}/{AZURE_ACCOUNT}"
    with running(argv, f"{endpoint}?comp=list", env=env):
        yield endpoint


def azure_connection_string(endpoint: str) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};"
            f"AccountKey={AZURE_ACCOUNT_KEY};BlobEndpoint={endpoint};")
