"""The reconcile loop: one TranscriptionJob brought a step forward, idempotently.

`Reconciler.reconcile` reads the job, works out its new status in numbered steps (plan ->
work -> report; `_advance`), writes the status if it changed and posts the Events of its
transitions. Every step reads the world afresh, so a restart, a missed event or a repeated
one changes nothing; what it creates carries deterministic names, so nothing is created
twice. API calls go through `kube`; builders and status are pure; retries after API errors
that may pass are `retries`'.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import kopf

from whisperfleet_operator import conditions, kube, kueue, metrics, naming, progress, spec, status
from whisperfleet_operator.builders import cleanup, gpu, jobs
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.retries import Key, RetryTimers
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.status import events, expiry
from whisperfleet_runner.contract import STATE_DIR, PlanReport

logger = logging.getLogger(__name__)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# First statuses are one small patch each: a few threads of their own keep them off the
# handler threads, where a burst's last jobs would wait for every reconcile ahead of them.
ACCEPT_THREADS = 16
QUEUE_RECHECK_SECONDS = 5.0


class Reconciler:
    """What the handlers share: the API edge, settings, and one lock per TranscriptionJob
    (events for one job arrive from several watches; its steps must not interleave)."""

    def __init__(self, api: kube.Kube, settings: OperatorSettings,
                 poller: progress.ProgressPoller | None = None) -> None:
        self.kube, self.settings, self.poller = api, settings, poller
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self.retries = RetryTimers()
        self._acceptor = ThreadPoolExecutor(ACCEPT_THREADS, thread_name_prefix="accept")

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def reconcile(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Bring one TranscriptionJob a step forward and publish its status. With `uid`,
        only that incarnation (a re-created namesake owns none of the old Jobs). Counted
        here, once per call: its outcome, or the error that stopped it."""
        try:
            outcome = self._reconcile(namespace, name, uid)
        except Exception as exc:
            metrics.failed(kube.error_reason(exc))
            raise
        metrics.reconciled(outcome)

    def _reconcile(self, namespace: str, name: str, uid: str | None) -> str:
        with self._lock(namespace, name):
            tj = self.kube.get(kube.TRANSCRIPTION_JOBS, namespace, name)
            meta = (tj or {}).get("metadata") or {}
            if tj is None or meta.get("deletionTimestamp") or (uid and meta.get("uid") != uid):
                return metrics.GONE
            old = tj.get("status") or {}
            if status.is_terminal(old):
                self._track(namespace, name, meta, old)
                self._expire(tj, old)
                return metrics.FINISHED  # final; the Jobs' pods may be gone: never recount
            clock = datetime.now(timezone.utc)
            now = clock.strftime(TIME_FORMAT)
            generation = int(meta.get("generation") or 0)
            try:
                new = self._advance(spec.parse(tj), old, now)
            except ValueError as exc:  # a spec the builders refuse; retrying cannot fix it
                new = status.invalid_spec_status(old, generation, str(exc), now)
            except kube.Rejected as exc:  # the API server refuses what the spec makes
                new = status.invalid_spec_status(
                    old, generation, f"the API server refused a Job: {exc}", now,
                    reason=conditions.JOB_REJECTED_REASON)
            new = progress.finished_shards_progress(old, new, clock,
                                                    polling=self.poller is not None)
            changed = any(old.get(key) != value for key, value in new.items())
            if changed:
                self.kube.patch(kube.TRANSCRIPTION_JOBS, namespace, name, {"status": new},
                                status=True)
            for event_type, reason, message in events.transitions(old, new):
                kopf.event(tj, type=event_type, reason=reason, message=message)
            self._track(namespace, name, meta, {**old, **new})
            if status.is_terminal(new):  # just finished: a TTL of 0 ends now
                self._expire(tj, {**old, **new})
            return metrics.UPDATED if changed else metrics.UNCHANGED

    def accept_soon(self, namespace: str, name: str, resource_version: str,
                    generation: int) -> None:
        """Write a new job's first status (`status.accepted_status`) soon, on the acceptor's
        threads, unless the job changed since `resource_version` (then a reconcile has or
        will have written one). Best effort: the reconcile writes a status regardless."""
        self._acceptor.submit(self._accept, namespace, name, resource_version, generation)

    def _accept(self, namespace: str, name: str, resource_version: str, generation: int) -> None:
        now = datetime.now(timezone.utc).strftime(TIME_FORMAT)
        patch = {"metadata": {"resourceVersion": resource_version},
                 "status": status.accepted_status(generation, now)}
        try:
            self.kube.patch(kube.TRANSCRIPTION_JOBS, namespace, name, patch, status=True)
        except kube.Conflict:
            return  # changed since that event: the reconcile's status comes instead
        except Exception as exc:  # the reconcile's status will come, only later
            logger.warning("no early status for %s/%s: %s", namespace, name, kube.summary(exc))

    def reconcile_or_retry(self, namespace: str, name: str, uid: str | None = None) -> None:
        """`reconcile`; when an API error that may pass (`kube.transient`) stops it, the same
        reconcile runs again later (see retries). For event handlers, which kopf never
        retries. Other errors propagate."""
        key: Key = (namespace, name, uid)
        try:
            self.reconcile(namespace, name, uid)
        except Exception as exc:
            if not kube.transient(exc):
                raise
            self.retries.later(key, lambda: self.reconcile_or_retry(*key), kube.summary(exc))
            return
        self.retries.succeeded(key)

    def close(self) -> None:
        """Cancel pending retries (the operator is stopping; a restart resumes every job)."""
        self.retries.close()
        self._acceptor.shutdown(wait=False, cancel_futures=True)

    def _expire(self, tj: Obj, old: Obj) -> None:
        """spec.ttlSecondsAfterFinished, as a Job's TTL: once it ends, the cleanup Job
        removes the state folder, then the TranscriptionJob is deleted (its Jobs and pods by
        garbage collection). Before it ends, a timer brings the reconcile back then; the
        cleanup Job's events bring it back when that finishes."""
        meta, tj_spec = tj["metadata"], tj.get("spec") or {}
        ttl = tj_spec.get("ttlSecondsAfterFinished")
        due = expiry.expires_at(None if ttl is None else int(ttl), old)
        if due is None:
            return
        namespace, name, uid = str(meta.get("namespace") or ""), str(meta["name"]), meta["uid"]
        wait = (due - datetime.now(timezone.utc)).total_seconds()
        if wait > 0:
            self.retries.at((namespace, name, uid), wait,
                            lambda: self.reconcile_or_retry(namespace, name, uid))
            return
        try:
            job: spec.TranscriptionJob | None = spec.parse(tj)
        except ValueError:
            job = None  # never planned: no state to remove
        if job is not None:
            cleanup_name = naming.cleanup_job_name(job)
            cleanup_job = self.kube.get(kube.JOBS, namespace, cleanup_name)
            if cleanup_job is None:
                self.kube.create(kube.JOBS, namespace,
                                 cleanup.build_cleanup_job(job, self.settings))
                return
            _check_owned(job, cleanup_name, cleanup_job)
            failure = expiry.cleanup_failure(cleanup_job)
            if failure is None:
                return
            state = f"{job.output.uri.rstrip('/')}/{STATE_DIR}/{job.uid}/"
            if failure:
                kopf.event(tj, type=conditions.EVENT_WARNING,
                           reason=conditions.STATE_NOT_REMOVED_REASON,
                           message=f"the TTL ended but {state} could not be removed "
                                   f"({failure}); delete it by hand")
            else:
                kopf.event(tj, type=conditions.EVENT_NORMAL,
                           reason=conditions.STATE_REMOVED_REASON,
                           message=f"the TTL ended: removed {state}")
        self.kube.delete(kube.TRANSCRIPTION_JOBS, namespace, name, uid)

    def _track(self, namespace: str, name: str, meta: Obj, current: Obj) -> None:
        if self.poller is not None:
            self.poller.track(namespace, name, str(meta.get("uid") or ""),
                              str(current.get("phase") or ""))

    def _advance(self, job: spec.TranscriptionJob, old: Obj, now: str) -> Obj:
        """The job's next status, in steps; each returns early while its work is not done."""
        # 1. Plan: the planner Job lists the input and balances the shards.
        if not status.is_planned(old):
            planned, done = self._plan(job, old, now)
            if not done:
                return planned
            old = {**old, **planned}
        # 2. Work: the one worker Job (and, for DRA, its claim template) exists...
        worker_name = naming.worker_job_name(job)
        worker = self.kube.get(kube.JOBS, job.namespace, worker_name)
        if worker is None and old.get("jobName") == worker_name:
            # It existed (the status named it) and is gone: never silently run it all again.
            return status.worker_job_deleted_status(job, old, worker_name, now)
        if worker is None:
            worker = self._create_worker_job(job, old)
        _check_owned(job, worker_name, worker)
        # 3. ... and follows the spec's mutable fields (suspend, parallelism).
        worker = self._sync_worker_job(job, old, worker)
        kueue_says = self._follow_kueue(job, worker)
        # 4. Report: the Job's state and its pods' shard reports become the status.
        pods = self.kube.list_pods(job.namespace, job.uid, naming.COMPONENT_WORKER)
        return status.running_status(job, old, worker, pods, now, kueue_says)

    def _plan(self, job: spec.TranscriptionJob, old: Obj, now: str) -> tuple[Obj, bool]:
        """The planning status, and whether the plan succeeded (the planner Job made once)."""
        k, name = self.kube, naming.planner_job_name(job)
        planner = k.get(kube.JOBS, job.namespace, name)
        if planner is None:
            self._check_worker_job_admitted(job)
        if planner is None and not k.create(
                kube.JOBS, job.namespace, jobs.build_planner_job(job, self.settings)):
            # It exists after all: our own create whose answer was lost (a 5xx after the
            # API server stored it, then the client's retry) — or not ours.
            planner = k.get(kube.JOBS, job.namespace, name)
        if planner is None:
            outcome, pods = status.PlannerOutcome("running"), []
        else:
            _check_owned(job, name, planner)
            pods = k.list_pods(job.namespace, job.uid, naming.COMPONENT_PLANNER)
            outcome = status.planner_outcome(planner, pods)
        planned = status.planning_status(job, old, outcome, name, now, pods)
        return planned, outcome.state == "succeeded"

    def _check_worker_job_admitted(self, job: spec.TranscriptionJob) -> None:
        """Before anything runs: the API server's dry run of the worker Job (and its claim
        template) as it will be built, so an option the CRD admits but the Job's own
        validation refuses fails the TranscriptionJob now, in the server's words, and not
        after planning. Raises kube.Rejected. The shard count is not known yet: the spec's,
        or 1 for auto (maxFailedIndexes is capped at it either way)."""
        claim_template = gpu.build_resource_claim_template(job, self.settings)
        if claim_template is not None:
            self.kube.create(kube.CLAIM_TEMPLATES, job.namespace, claim_template, dry_run=True)
        body = jobs.build_worker_job(job, PlanReport(shards=job.shards or 1), self.settings)
        self.kube.create(kube.JOBS, job.namespace, body, dry_run=True)

    def _create_worker_job(self, job: spec.TranscriptionJob, old: Obj) -> Obj:
        claim_template = gpu.build_resource_claim_template(job, self.settings)
        if claim_template is not None:
            self.kube.create(kube.CLAIM_TEMPLATES, job.namespace, claim_template)
        body = jobs.build_worker_job(job, status.plan_from_status(old), self.settings)
        self.kube.create(kube.JOBS, job.namespace, body)
        return self.kube.get(kube.JOBS, job.namespace, naming.worker_job_name(job)) or body

    def _follow_kueue(self, job: spec.TranscriptionJob, worker: Obj) -> str:
        """A queued job's Workload follows spec.suspend (`spec.active`, as Kueue honours);
        returns why Kueue holds the Job ("" when it does not, or said nothing yet). While
        the Job waits, the reconcile comes back every QUEUE_RECHECK_SECONDS: Kueue's
        reasons change on its Workload, which the operator does not watch."""
        waiting = bool((worker.get("spec") or {}).get("suspend"))
        if not job.queue_name or not (waiting or job.suspend):
            return ""
        uid = str((worker.get("metadata") or {}).get("uid") or "")
        found = self.kube.list_workloads(job.namespace, uid) if uid else []
        if found is None:
            return kueue.NOT_INSTALLED  # and nothing to poll for
        workload = kueue.current_workload(found)
        patch = kueue.activation_patch(job.suspend, workload)
        if workload is not None and patch:
            self.kube.patch(kueue.WORKLOADS, job.namespace, workload["metadata"]["name"], patch)
        if (waiting and not job.suspend) or (job.suspend and (workload is None or patch)):
            key = (job.namespace, job.name, job.uid)
            self.retries.at(key, QUEUE_RECHECK_SECONDS, lambda: self.reconcile_or_retry(*key))
        return kueue.waiting_reason(workload)

    def _sync_worker_job(self, job: spec.TranscriptionJob, old: Obj, worker: Obj) -> Obj:
        drift = jobs.worker_job_drift(job, status.operator_holds_suspension(old), worker)
        if not drift:
            return worker
        self.kube.patch(kube.JOBS, job.namespace, naming.worker_job_name(job), {"spec": drift})
        return {**worker, "spec": {**(worker.get("spec") or {}), **drift}}


def _check_owned(job: spec.TranscriptionJob, name: str, found: Obj) -> None:
    """A Job under a name derived from this TranscriptionJob's is only its own if it names
    it as owner: creates answered 409 AlreadyExists count as done on that condition alone."""
    refs = (found.get("metadata") or {}).get("ownerReferences") or []
    if not any(ref.get("uid") == job.uid for ref in refs):
        raise kube.Rejected(f'Job "{name}" already exists and is not owned by this '
                            "TranscriptionJob")
