"""The reconcile state machine: one TranscriptionJob brought a step forward, idempotently.

plan (a planner Job) -> work (one Indexed Job, plus a claim template for DRA) -> report
(status from the Jobs and their pods). Every step reads the world afresh, so a restart, a
missed event or a repeated one changes nothing; what it creates carries deterministic names,
so nothing is created twice. API calls go through `kube`; builders and status are pure.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import kopf

from . import conditions, events, gpu, jobs, kube, naming, progress, spec, status
from .settings import OperatorSettings

logger = logging.getLogger(__name__)
Obj = dict[str, Any]
# Seconds before a reconcile an API error stopped runs again; the last repeats until one
# gets through (the job is then finished, gone, or the API server back).
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
Key = tuple[str, str, str | None]  # namespace, name, uid (None: whichever incarnation)


def retry_delay(attempt: int) -> float:
    """The delay before retry number `attempt` (0 for the first)."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]


class Reconciler:
    """What the handlers share: the API edge, settings, and one lock per TranscriptionJob
    (events for one job arrive from several watches; its steps must not interleave)."""

    def __init__(self, api: kube.Kube, settings: OperatorSettings,
                 poller: progress.ProgressPoller | None = None) -> None:
        self.kube, self.settings, self.poller = api, settings, poller
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._retries: dict[Key, threading.Timer] = {}  # at most one pending per job
        self._failures: dict[Key, int] = {}  # failed attempts in a row, for the backoff
        self._closed = False

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def reconcile(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Bring one TranscriptionJob a step forward and publish its status. With `uid`,
        only that incarnation (a re-created namesake owns none of the old Jobs)."""
        with self._lock(namespace, name):
            tj = self.kube.get(kube.TRANSCRIPTION_JOBS, namespace, name)
            meta = (tj or {}).get("metadata") or {}
            if tj is None or meta.get("deletionTimestamp") or (uid and meta.get("uid") != uid):
                return
            old = tj.get("status") or {}
            if status.is_terminal(old):
                self._track(namespace, name, meta, old)
                return  # final; the Jobs' pods may be gone (TTL), so never recount
            clock = datetime.now(timezone.utc)
            now = clock.strftime("%Y-%m-%dT%H:%M:%SZ")
            generation = int(meta.get("generation") or 0)
            try:
                new = self._advance(spec.parse(tj), old, now)
            except ValueError as exc:  # a spec the builders refuse; retrying cannot fix it
                new = status.invalid_spec_status(old, generation, str(exc), now)
            except kube.Rejected as exc:  # the API server refuses what the spec makes
                new = status.invalid_spec_status(
                    old, generation, f"the API server refused a Job: {exc}", now,
                    reason=conditions.JOB_REJECTED_REASON)
            new = self._with_progress(old, new, clock)
            if any(old.get(key) != value for key, value in new.items()):
                self.kube.patch(kube.TRANSCRIPTION_JOBS, namespace, name, {"status": new},
                                status=True)
            for event_type, reason, message in events.transitions(old, new):
                kopf.event(tj, type=event_type, reason=reason, message=message)
            self._track(namespace, name, meta, {**old, **new})

    def reconcile_or_retry(self, namespace: str, name: str, uid: str | None = None) -> None:
        """`reconcile`; when an API error that may pass (`kube.transient`) stops it, the same
        reconcile runs again after a growing delay, until one gets through. For event
        handlers: kopf never retries those, and the Job event a finished job's status is
        written on comes once — a 409 or a 5xx burst on that write would otherwise leave the
        job Running for good. Other errors propagate."""
        key = (namespace, name, uid)
        try:
            self.reconcile(namespace, name, uid)
        except Exception as exc:
            if not kube.transient(exc):
                raise
            self._retry_later(key, exc)
            return
        with self._guard:
            self._failures.pop(key, None)

    def _retry_later(self, key: Key, exc: BaseException) -> None:
        with self._guard:
            if self._closed or key in self._retries:
                return  # one pending retry reads the world afresh for all failures since
            attempt = self._failures.get(key, 0)
            self._failures[key] = attempt + 1
            delay = retry_delay(attempt)
            # kopf.event needs the context kopf gives handler threads; a timer's is empty.
            timer = threading.Timer(delay, contextvars.copy_context().run, (self._retry, key))
            timer.daemon = True
            self._retries[key] = timer
        logger.warning("reconciling %s/%s failed (%s); retrying in %.0f s", key[0], key[1],
                       kube.summary(exc), delay)
        timer.start()

    def _retry(self, key: Key) -> None:
        with self._guard:
            self._retries.pop(key, None)
        try:
            self.reconcile_or_retry(*key)
        except Exception:  # on a timer thread nobody else would report it
            logger.exception("reconciling %s/%s failed", key[0], key[1])

    def close(self) -> None:
        """Cancel pending retries (the operator is stopping; a restart resumes every job)."""
        with self._guard:
            self._closed = True
            timers, self._retries = list(self._retries.values()), {}
        for timer in timers:
            timer.cancel()

    def _track(self, namespace: str, name: str, meta: Obj, current: Obj) -> None:
        if self.poller is not None:
            self.poller.track(namespace, name, str(meta.get("uid") or ""),
                              str(current.get("phase") or ""))

    def _with_progress(self, old: Obj, new: Obj, clock: datetime) -> Obj:
        """status.progress from finished shards: always the last word of a finished job;
        while it runs only without a poller (which adds running pods' counts), and only
        when the counts changed (an ETA alone is no reason for another status write)."""
        current = {**old, **new}
        if not status.is_terminal(current) and (
                self.poller is not None or "files" not in current or
                (old.get("progress") and current.get("files") == old.get("files"))):
            return new
        return {**new, "progress": progress.progress(current, [], clock)}

    def _advance(self, job: spec.TranscriptionJob, old: Obj, now: str) -> Obj:
        k, namespace = self.kube, job.namespace
        if not status.is_planned(old):
            planner_name = naming.planner_job_name(job)
            planner = k.get(kube.JOBS, namespace, planner_name)
            if planner is None and not k.create(
                    kube.JOBS, namespace, jobs.build_planner_job(job, self.settings)):
                # It exists after all: our own create whose answer was lost (a 5xx after
                # the API server stored it, then the client's retry) — or not ours.
                planner = k.get(kube.JOBS, namespace, planner_name)
            if planner is None:
                outcome, pods = status.PlannerOutcome("running"), []
            else:
                _check_owned(job, planner_name, planner)
                pods = k.list_pods(namespace, job.uid, naming.COMPONENT_PLANNER)
                outcome = status.planner_outcome(planner, pods)
            planned = status.planning_status(job, old, outcome, planner_name, now, pods)
            if outcome.state != "succeeded":
                return planned
            old = {**old, **planned}

        worker_name = naming.worker_job_name(job)
        worker = k.get(kube.JOBS, namespace, worker_name)
        if worker is None and old.get("jobName") == worker_name:
            # It existed (the status named it) and is gone: never silently run it all again.
            return status.worker_job_deleted_status(job, old, worker_name, now)
        if worker is None:
            claim_template = gpu.build_resource_claim_template(job, self.settings)
            if claim_template is not None:
                k.create(kube.CLAIM_TEMPLATES, namespace, claim_template)
            body = jobs.build_worker_job(job, status.plan_from_status(old), self.settings)
            k.create(kube.JOBS, namespace, body)
            worker = k.get(kube.JOBS, namespace, worker_name) or body
        _check_owned(job, worker_name, worker)
        drift = jobs.worker_job_drift(job, status.operator_holds_suspension(old), worker)
        if drift:
            k.patch(kube.JOBS, namespace, worker_name, {"spec": drift})
            worker = {**worker, "spec": {**(worker.get("spec") or {}), **drift}}
        pods = k.list_pods(namespace, job.uid, naming.COMPONENT_WORKER)
        return status.running_status(job, old, worker, pods, now)


def _check_owned(job: spec.TranscriptionJob, name: str, found: Obj) -> None:
    """A Job under a name derived from this TranscriptionJob's is only its own if it names
    it as owner: creates answered 409 AlreadyExists count as done on that condition alone."""
    refs = (found.get("metadata") or {}).get("ownerReferences") or []
    if not any(ref.get("uid") == job.uid for ref in refs):
        raise kube.Rejected(f'Job "{name}" already exists and is not owned by this '
                            "TranscriptionJob")
