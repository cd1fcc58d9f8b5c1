"""Live progress of running TranscriptionJobs, read from their worker pods' metrics.

A job's counts in status change only when a shard finishes; with a few shards per worker a
large job would show 0/100000 for hours. So every `interval` seconds the operator reads the
Prometheus metrics each running worker pod serves (one GET per pod, short timeouts), adds
them to the finished shards' counts, and writes `status.progress`: files done, audio done,
throughput and an ETA. Workers hold no API token: the operator pulls, over the pod network.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from prometheus_client.parser import text_string_to_metric_families

from whisperfleet_operator import kube, naming
from whisperfleet_operator.conditions import POD_RUNNING, RUNNING, TERMINAL_PHASES
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.status.fold import format_duration
from whisperfleet_runner.contract import METRIC_AUDIO_SECONDS, METRIC_FILES

logger = logging.getLogger(__name__)
FETCH_TIMEOUT = 5.0  # seconds per pod: a slow pod must not hold up the others for long
FETCH_THREADS = 16  # pods read at once: a few unreachable ones cost one timeout, not many
Fetch = Callable[[str], str]
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Sample:
    """What one running worker pod has done so far."""

    files_done: int = 0
    audio_seconds: float = 0.0


def parse_metrics(text: str) -> Sample:
    files, audio = 0.0, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{METRIC_FILES}_total":
                files += sample.value
            elif sample.name == f"{METRIC_AUDIO_SECONDS}_total":
                audio += sample.value
    return Sample(int(files), audio)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip  # an IPv6 pod IP in a URL


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
        return str(response.read().decode("utf-8"))


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _seconds_between(start: str, end: datetime) -> float:
    began = _parse_time(start)
    return max(0.0, (end - began).total_seconds()) if began else 0.0


def progress(status: Obj, live: list[Sample], now: datetime) -> Obj:
    """status.progress from the finished shards' counts plus what running pods report;
    for a finished job (phase terminal) its final figures, timed to its completionTime."""
    files = status.get("files") or {}
    total = int(files.get("total") or 0)
    finished = sum(int(files.get(k) or 0) for k in ("succeeded", "failed", "skipped"))
    done = finished + sum(s.files_done for s in live)
    done = min(total, done) if total else done
    terminal = status.get("phase") in TERMINAL_PHASES
    if not terminal:
        # A pod that just finished leaves `live` before its shard is folded into the
        # counts: while the job runs, files done never goes backwards.
        before = (status.get("progress") or {}).get("filesDone")
        done = max(done, before if isinstance(before, int) else 0)
    audio = float(status.get("audioSeconds") or 0) + sum(s.audio_seconds for s in live)
    end = _parse_time(str(status.get("completionTime") or "")) if terminal else None
    elapsed = _seconds_between(str(status.get("startTime") or ""), end or now)
    if terminal or (total and done >= total):
        eta = "0s"
    elif done and elapsed:
        eta = format_duration(elapsed * (total - done) / done)
    else:
        eta = ""  # nothing finished yet: no pace to extrapolate
    return {"filesDone": done, "audioSecondsDone": round(audio, 2),
            "throughput": round(audio / elapsed, 3) if elapsed else 0.0, "eta": eta,
            "summary": f"{100 * done // total}%" if total else "",
            "updateTime": now.strftime(TIME_FORMAT)}


def finished_shards_progress(old: Obj, new: Obj, now: datetime, *, polling: bool) -> Obj:
    """`new` with status.progress from finished shards where it should carry it: always the
    last word of a finished job; while it runs only when no poller adds running pods' counts
    (`polling`), and only when the counts changed (an ETA alone is no reason for another
    status write)."""
    current = {**old, **new}
    if current.get("phase") not in TERMINAL_PHASES and (
            polling or "files" not in current or
            (old.get("progress") and current.get("files") == old.get("files"))):
        return new
    return {**new, "progress": progress(current, [], now)}


class ProgressPoller:
    """Reads the running jobs' worker pods every `interval` seconds, on its own thread."""

    def __init__(self, api: kube.Kube, port: int, interval: float,
                 fetch: Fetch = _fetch) -> None:
        self.kube, self.port, self.interval, self.fetch = api, port, interval, fetch
        self._running: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._workers = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="progress-fetch")
        self._thread = threading.Thread(target=self._loop, name="whisperfleet-progress",
                                        daemon=True)

    def track(self, namespace: str, name: str, uid: str, phase: str) -> None:
        """Called by every reconcile: running jobs are polled, the others (planning,
        suspended, queued, finished) forgotten until a reconcile sees them running."""
        with self._guard:
            if phase == RUNNING:
                self._running[(namespace, name)] = uid
            else:
                self._running.pop((namespace, name), None)

    def start(self) -> ProgressPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._guard:
                jobs = list(self._running.items())
            for (namespace, name), uid in jobs:
                try:
                    self.poll(namespace, name, uid)
                except Exception:  # one job's trouble must not stop the others' progress
                    logger.exception("reading the progress of %s/%s failed", namespace, name)

    def poll(self, namespace: str, name: str, uid: str) -> None:
        pods = self.kube.list_pods(namespace, uid, naming.COMPONENT_WORKER)
        urls = [f"http://{_host(ip)}:{self.port}/metrics" for pod in pods
                if (ip := (pod.get("status") or {}).get("podIP"))
                and (pod.get("status") or {}).get("phase") == POD_RUNNING]
        live = [s for s in self._workers.map(self._sample, urls) if s is not None]
        tj = self.kube.get(kube.TRANSCRIPTION_JOBS, namespace, name)
        meta, status = (tj or {}).get("metadata") or {}, (tj or {}).get("status") or {}
        if tj is None or meta.get("uid") != uid or status.get("phase") != RUNNING:
            with self._guard:
                if self._running.get((namespace, name)) == uid:
                    del self._running[(namespace, name)]
            return
        new = progress(status, live, datetime.now(timezone.utc))
        # Written only onto the status just read: a reconcile that finished the job in
        # between wins (409), and its final figures stay.
        try:
            self.kube.patch(kube.TRANSCRIPTION_JOBS, namespace, name,
                            {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                             "status": {"progress": new}}, status=True)
        except kube.Conflict:
            logger.debug("progress of %s/%s changed meanwhile; next round", namespace, name)

    def _sample(self, url: str) -> Sample | None:
        try:
            return parse_metrics(self.fetch(url))
        except Exception as exc:  # not serving yet, or gone: its shard counts once folded
            logger.debug("no metrics from %s: %s", url, exc)
            return None
