"""kopf handlers: thin glue between events and the Reconciler, plus startup settings.

No finalizer, deliberately: there is no deletion handler, Jobs and claim templates carry
owner references, so the garbage collector removes them, and a deleted TranscriptionJob
never waits for a running (or absent) operator. kopf adds finalizers only for deletion
handlers, daemons and timers, so none of those are registered here. Peering is kopf's own
command-line choice (`--standalone` or `--peering NAME`, set by the chart); with several
replicas peered, the oldest live one is active and the others pause (`peering_priority`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from whisperfleet_operator import kube, metrics, naming
from whisperfleet_operator.changes import ChangeFilter, job_signature
from whisperfleet_operator.progress import ProgressPoller
from whisperfleet_operator.reconcile import Reconciler
from whisperfleet_operator.retries import retry_delay
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.status import stuck

logger = logging.getLogger(__name__)

TJ = (naming.GROUP, naming.VERSION, "transcriptionjobs")
PODS = ("", "v1", "pods")
JOBS = ("batch", "v1", "jobs")
# Every Job the operator creates carries its TranscriptionJob's uid as a label.
MANAGED = {naming.LABEL_JOB_UID: kopf.PRESENT}
# Handlers are sync and wait on API calls: kopf's default pool (CPU count + 4 threads)
# makes a burst of hundreds of new TranscriptionJobs queue behind a handful of threads.
HANDLER_THREADS = 16


def peering_priority(started: float) -> int:
    """kopf pauses every peer that sees a live one of higher priority (and ALL peers of an
    equal one): a replica started earlier ranks higher, so the oldest live replica is the
    active one and a new replica (a rollout's, a restarted one) never preempts it. Negative,
    so a developer's `kopf run --dev` (priority 666) still pauses the cluster's."""
    return -int(started * 1000)


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
    settings.execution.max_workers = HANDLER_THREADS
    # A handler's `labels=` filter is applied by kopf client-side, after the whole stream
    # arrived; this selector makes the API server send only our pods and Jobs, not every
    # pod of the cluster (kopf joins it into the list/watch `labelSelector`).
    settings.watching.label_selectors[PODS] = naming.LABEL_JOB_UID
    settings.watching.label_selectors[JOBS] = naming.LABEL_JOB_UID
    operator_settings = OperatorSettings.from_env()
    settings.peering.priority = peering_priority(time.time())
    settings.peering.lifetime = operator_settings.peering_lifetime_seconds
    api = kube.Kube.from_environment()
    # Live progress needs the workers' metrics port; without it, status.progress counts
    # finished shards only.
    memo.poller = (ProgressPoller(api, operator_settings.metrics_port,
                                  operator_settings.progress_interval_seconds).start()
                   if operator_settings.metrics_port else None)
    memo.reconciler = Reconciler(api, operator_settings, memo.poller)
    if operator_settings.operator_metrics_port:
        metrics.serve(operator_settings.operator_metrics_port,
                      operator_settings.operator_metrics_host, memo.reconciler.retries.pending)
    memo.jobs_seen = ChangeFilter()  # Job uid -> changes.job_signature last reconciled
    memo.pods_seen = ChangeFilter()  # pod uid -> why it cannot start (stuck pods only)


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "poller", None) is not None:
        memo.poller.stop()
    if getattr(memo, "reconciler", None) is not None:
        memo.reconciler.close()
        memo.reconciler.kube.close()


def _reconcile_tj(body: kopf.Body, memo: kopf.Memo, retry: int) -> None:
    """For TranscriptionJob change handlers, which kopf retries itself: an API error that
    may pass is retried soon (kopf's default for any error is a minute later)."""
    try:
        memo.reconciler.reconcile(body.metadata.namespace or "", body.metadata.name or "")
    except Exception as exc:
        if not kube.transient(exc):
            raise
        raise kopf.TemporaryError(kube.summary(exc), delay=retry_delay(retry)) from exc


@kopf.on.event(*TJ)
async def accept(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # A new job (or one created while the operator was away: listed, type None) gets its
    # first status at once, on threads of its own: `start` queues behind every reconcile
    # ahead of it, which made a burst's last jobs statusless for half a minute
    # (benchmarks/operator_reaction.py). kopf runs this before `start`, in the same cycle.
    meta = body.metadata
    if event.get("type") in (None, "ADDED") and not body.get("status"):
        memo.reconciler.accept_soon(meta.namespace or "", meta.name or "",
                                    str(meta.get("resourceVersion") or ""),
                                    int(meta.get("generation") or 0))


@kopf.on.create(*TJ, id="start")
def start(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    _reconcile_tj(body, memo, retry)


@kopf.on.resume(*TJ, id="resume")
def resume(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    _reconcile_tj(body, memo, retry)


@kopf.on.update(*TJ, field="spec.suspend", id="suspend")
def suspend_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    # The reconcile brings the worker Job's suspend in line (level-triggered, under the
    # lock, so a change racing the Job's creation is not lost).
    _reconcile_tj(body, memo, retry)


@kopf.on.update(*TJ, field="spec.workers.parallelism", id="parallelism")
def parallelism_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    _reconcile_tj(body, memo, retry)


@kopf.on.event(*TJ)
async def phase_seen(body: kopf.Body, event: kopf.RawEvent, **_: Any) -> None:
    # The operator's jobs-by-phase metric follows the watch stream (an event handler adds
    # no finalizer): every job's latest phase, forgotten when it is deleted. On the event
    # loop (a sync handler would queue in the handler threads, and `start` of a new job
    # with it).
    gone = event.get("type") == "DELETED"
    metrics.track_phase(body.metadata.namespace or "", body.metadata.name or "",
                        None if gone else str((body.get("status") or {}).get("phase") or ""))


@kopf.on.event(*JOBS, labels=MANAGED)
def job_changed(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # DELETED too: a worker Job deleted by hand must not leave the status Running forever.
    # After the TranscriptionJob itself went, reconcile finds nothing and returns.
    key = str(body.metadata.uid or f"{body.metadata.namespace}/{body.metadata.name}")
    now = None if event.get("type") == "DELETED" else job_signature(body)
    if not memo.jobs_seen.changed(key, now, always_if_gone=True):
        return
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == naming.KIND and ref.get("apiVersion", "").startswith(naming.GROUP):
            memo.reconciler.reconcile_or_retry(body.metadata.namespace or "", ref["name"],
                                               ref.get("uid"))
    memo.jobs_seen.reconciled(key, now)


@kopf.on.event(*PODS, labels=MANAGED)
def pod_changed(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # Job events say nothing while a pod cannot start (its Job just stays active), so pods
    # are watched, but a reconcile runs only when whether/why a pod is stuck changes —
    # not on every status update of every worker pod.
    meta = body.metadata
    key = str(meta.uid or f"{meta.namespace}/{meta.name}")
    now = None if event.get("type") == "DELETED" else stuck.signature(body)
    if not memo.pods_seen.changed(key, now, always_if_gone=False):
        return
    name = stuck.owner_name(body)
    if name:
        memo.reconciler.reconcile_or_retry(meta.namespace or "", name,
                                           meta.labels.get(naming.LABEL_JOB_UID))
    memo.pods_seen.reconciled(key, now)
