"""kopf handlers: thin glue between events and `reconcile` (builders + status + kube).

No finalizer, deliberately: there is no deletion handler, Jobs and claim templates carry
owner references, so the garbage collector removes them, and a deleted TranscriptionJob
never waits for a running (or absent) operator. kopf adds finalizers only for deletion
handlers, daemons and timers, so none of those are registered here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import kopf

from . import gpu, jobs, kube, naming, status, stuck
from .settings import OperatorSettings

logger = logging.getLogger(__name__)

TJ = (naming.GROUP, naming.VERSION, "transcriptionjobs")
PODS = ("", "v1", "pods")
# Every Job the operator creates carries its TranscriptionJob's uid as a label.
MANAGED = {naming.LABEL_JOB_UID: kopf.PRESENT}
Obj = dict[str, Any]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping lives in annotations, so status stays ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.GROUP, key="last-handled-configuration")
    # Only our own events (kopf.event/warn) and kopf's warnings reach the API; kopf's
    # per-handler "succeeded" chatter stays in the operator log.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # A handler's `labels=` filter is applied by kopf client-side, after the whole stream
    # arrived; this selector makes the API server send only our pods, not every pod of the
    # cluster (kopf joins it into the list/watch `labelSelector`).
    settings.watching.label_selectors[PODS] = naming.LABEL_JOB_UID
    settings.watching.label_selectors[("batch", "v1", "jobs")] = naming.LABEL_JOB_UID
    # One operator replica is the default; peering (a KopfPeering object) only on request.
    peering = os.environ.get("WHISPERFLEET_PEERING", "").strip()
    settings.peering.standalone = not peering
    if peering:
        settings.peering.name = peering
    memo.settings = OperatorSettings.from_env()
    memo.kube = kube.Kube.from_environment()
    memo.locks = defaultdict(threading.Lock)
    memo.locks_guard = threading.Lock()
    memo.pod_signatures = {}  # pod uid -> why it cannot start (only stuck pods are kept)


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "kube", None) is not None:
        memo.kube.close()


@kopf.on.create(*TJ, id="start")
def start(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconcile(memo, body.metadata.namespace or "", body.metadata.name or "")


@kopf.on.resume(*TJ, id="resume")
def resume(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconcile(memo, body.metadata.namespace or "", body.metadata.name or "")


@kopf.on.update(*TJ, field="spec.suspend", id="suspend")
def suspend_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # reconcile brings the worker Job's suspend in line (level-triggered, under the lock, so
    # a change racing the Job's creation is not lost). Before the worker Job exists, the
    # builder reads spec.suspend when it creates it.
    reconcile(memo, body.metadata.namespace or "", body.metadata.name or "")


@kopf.on.update(*TJ, field="spec.workers.parallelism", id="parallelism")
def parallelism_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconcile(memo, body.metadata.namespace or "", body.metadata.name or "")


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def job_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # DELETED too: a worker Job deleted by hand must not leave the status Running forever.
    # After the TranscriptionJob itself went, reconcile finds nothing and returns.
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == naming.KIND and ref.get("apiVersion", "").startswith(naming.GROUP):
            reconcile(memo, body.metadata.namespace or "", ref["name"], ref.get("uid"))


@kopf.on.event(*PODS, labels=MANAGED)
def pod_changed(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # Job events say nothing while a pod cannot start (its Job just stays active), so pods
    # are watched, but a reconcile runs only when whether/why a pod is stuck changes —
    # not on every status update of every worker pod. kopf hands one object's events to
    # its handler one at a time, so reading and storing a pod's entry cannot interleave.
    meta = body.metadata
    key = str(meta.uid or f"{meta.namespace}/{meta.name}")
    now = None if event.get("type") == "DELETED" else stuck.signature(body)
    with memo.locks_guard:
        before = memo.pod_signatures.get(key)
    if before == now:
        return
    namespace = meta.namespace or ""
    name = stuck.owner_name(body) or _owner_via_job(memo.kube, namespace, body)
    if name:
        reconcile(memo, namespace, name, meta.labels.get(naming.LABEL_JOB_UID))
    # Stored only after a reconcile that did not raise: a failed one is retried by the
    # pod's next event instead of being forgotten.
    with memo.locks_guard:
        if now is None:
            memo.pod_signatures.pop(key, None)
        else:
            memo.pod_signatures[key] = now


def _owner_via_job(k: kube.Kube, namespace: str, pod: kopf.Body) -> str:
    """The TranscriptionJob owning the pod's Job: for pods of Jobs created before their
    template carried the name annotation (one extra GET, only for those)."""
    for ref in pod.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            owner = k.get(kube.JOBS, namespace, str(ref.get("name")))
            for tj_ref in ((owner or {}).get("metadata") or {}).get("ownerReferences") or []:
                if tj_ref.get("kind") == naming.KIND:
                    return str(tj_ref.get("name") or "")
    return ""


def _lock(memo: kopf.Memo, key: tuple[str, str]) -> threading.Lock:
    with memo.locks_guard:
        lock: threading.Lock = memo.locks[key]
        return lock


def reconcile(memo: kopf.Memo, namespace: str, name: str, uid: str | None = None) -> None:
    """Bring one TranscriptionJob a step forward and publish its status; idempotent.
    With `uid`, only that incarnation (a re-created namesake owns none of the old Jobs)."""
    with _lock(memo, (namespace, name)):
        k: kube.Kube = memo.kube
        tj = k.get(kube.TRANSCRIPTION_JOBS, namespace, name)
        meta = (tj or {}).get("metadata") or {}
        if tj is None or meta.get("deletionTimestamp") or (uid and meta.get("uid") != uid):
            return
        old = tj.get("status") or {}
        if status.is_terminal(old):
            return  # final; the Jobs' pods may be gone (TTL), so never recount
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            new = _advance(k, memo.settings, tj, now)
        except ValueError as exc:  # a spec the builders refuse; retrying cannot fix it
            new = status.invalid_spec_status(tj, str(exc), now)
        except kube.Rejected as exc:  # the API server refuses what the spec makes
            new = status.invalid_spec_status(tj, f"the API server refused a Job: {exc}", now,
                                             reason="JobRejected")
        if any(old.get(key) != value for key, value in new.items()):
            k.patch(kube.TRANSCRIPTION_JOBS, namespace, name, {"status": new}, status=True)
        for event_type, reason, message in status.transitions(old, new):
            kopf.event(tj, type=event_type, reason=reason, message=message)


def _advance(k: kube.Kube, settings: OperatorSettings, tj: Obj, now: str) -> Obj:
    namespace = tj["metadata"]["namespace"]
    uid = tj["metadata"]["uid"]
    if not status.is_planned(tj.get("status")):
        planner_name = naming.planner_job_name(tj)
        planner = k.get(kube.JOBS, namespace, planner_name)
        if planner is None:
            k.create(kube.JOBS, namespace, jobs.build_planner_job(tj, settings))
            outcome, pods = status.PlannerOutcome("running"), []
        else:
            pods = k.list_pods(namespace, uid, naming.COMPONENT_PLANNER)
            outcome = status.planner_outcome(planner, pods)
        planned = status.planning_status(tj, outcome, planner_name, now, pods)
        if outcome.state != "succeeded":
            return planned
        tj = {**tj, "status": {**(tj.get("status") or {}), **planned}}

    worker_name = naming.worker_job_name(tj)
    worker = k.get(kube.JOBS, namespace, worker_name)
    if worker is None and (tj.get("status") or {}).get("jobName") == worker_name:
        # It existed (the status named it) and is gone: never silently run it all again.
        return status.worker_job_deleted_status(tj, worker_name, now)
    if worker is None:
        claim_template = gpu.build_resource_claim_template(tj, settings)
        if claim_template is not None:
            k.create(kube.CLAIM_TEMPLATES, namespace, claim_template)
        body = jobs.build_worker_job(tj, status.plan_from_status(tj["status"]), settings)
        k.create(kube.JOBS, namespace, body)
        worker = k.get(kube.JOBS, namespace, worker_name) or body
    drift = jobs.worker_job_drift(tj, worker)
    if drift:
        k.patch(kube.JOBS, namespace, worker_name, {"spec": drift})
        worker = {**worker, "spec": {**(worker.get("spec") or {}), **drift}}
    pods = k.list_pods(namespace, uid, naming.COMPONENT_WORKER)
    return status.running_status(tj, worker, pods, now)
