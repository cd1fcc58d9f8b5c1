"""The operator's own Prometheus metrics, and the HTTP server that serves them.

Counted at the edges, once each: every API request the operator makes (kopf's own watches
aside) is timed where the client sends it (`instrument`, on the `kubernetes` client's REST
layer under `kube.Kube`); every reconcile's outcome and every error that stops one are
counted by `Reconciler.reconcile`; TranscriptionJobs by phase follow the watch stream of
TranscriptionJobs (`track_phase`, from a kopf event handler), so they are right after a
restart too; the retry queue's depth is read from `RetryTimers` when scraped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

# The outcome label of reconciles_total, and the reason label of errors_total
# (kube.error_reason's words).
UPDATED, UNCHANGED, FINISHED, GONE, ERROR = "updated", "unchanged", "finished", "gone", "error"
OUTCOMES = (UPDATED, UNCHANGED, FINISHED, GONE, ERROR)
REASONS = ("conflict", "throttled", "api_server_error", "api_unreachable", "api_refused",
           "internal")
# Phases reported for a job that has none yet (just created).
NO_PHASE = "New"

REGISTRY = CollectorRegistry(auto_describe=True)
RECONCILES = Counter(
    "whisperfleet_operator_reconciles", "Reconciles of a TranscriptionJob, by outcome: "
    "updated (status written), unchanged, finished (already final), gone (deleted), error.",
    ["outcome"], registry=REGISTRY)
ERRORS = Counter(
    "whisperfleet_operator_errors", "Errors that stopped a reconcile, by reason: conflict, "
    "throttled, api_server_error, api_unreachable, api_refused, internal.",
    ["reason"], registry=REGISTRY)
API_LATENCY = Histogram(
    "whisperfleet_operator_api_request_duration_seconds",
    "Kubernetes API requests the operator made (kopf's watches aside), by verb, resource "
    "and HTTP status code (0: no answer).", ["verb", "resource", "code"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
# Every series at 0 from the start: a rate() over a counter born at its first increment
# misses that increment.
for _outcome in OUTCOMES:
    RECONCILES.labels(_outcome)
for _reason in REASONS:
    ERRORS.labels(_reason)
RETRIES_PENDING = Gauge(
    "whisperfleet_operator_retries_pending",
    "Reconciles waiting to be retried after an API error that may pass.", registry=REGISTRY)


class _Phases:
    """TranscriptionJobs by phase, from the last state the watch stream showed of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase: dict[tuple[str, str], str] = {}

    def track(self, namespace: str, name: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phase.pop((namespace, name), None)
            else:
                self._phase[(namespace, name)] = phase or NO_PHASE

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily("whisperfleet_operator_transcriptionjobs",
                                   "TranscriptionJobs the operator sees, by phase.",
                                   labels=["phase"])
        with self._lock:
            phases = list(self._phase.values())
        for phase in sorted(set(phases)):
            family.add_metric([phase], phases.count(phase))
        return [family]

    def describe(self) -> list[GaugeMetricFamily]:
        return self.collect()


PHASES = _Phases()
REGISTRY.register(PHASES)  # type: ignore[arg-type]


def track_phase(namespace: str, name: str, phase: str | None) -> None:
    """The job's current phase ("" for none yet); None: it is gone."""
    PHASES.track(namespace, name, phase)


def reconciled(outcome: str) -> None:
    RECONCILES.labels(outcome).inc()


def failed(reason: str) -> None:
    """A reconcile stopped by an error; `reason` from `kube.error_reason`."""
    RECONCILES.labels(ERROR).inc()
    ERRORS.labels(reason).inc()


def resource_of(url: str) -> str:
    """The resource (and subresource) an API URL names: /api/v1/namespaces/x/pods/p/status
    -> pods/status; /apis/g/v/namespaces/x/jobs -> jobs; /apis/g/v/nodes -> nodes."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    else:
        return "other"
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:]
    if not parts:
        return "namespaces"
    return parts[0] if len(parts) < 3 else f"{parts[0]}/{parts[2]}"


def instrument(api: ApiClient) -> ApiClient:
    """Time every request `api` sends, by verb, resource and status code."""
    rest = api.rest_client
    send: Callable[..., Any] = rest.request

    def timed(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        code = "0"
        try:
            response = send(method, url, *args, **kwargs)
            code = str(getattr(response, "status", 0))
            return response
        except ApiException as exc:
            code = str(exc.status or 0)
            raise
        finally:
            API_LATENCY.labels(method.upper(), resource_of(url), code).observe(
                time.perf_counter() - start)

    rest.request = timed
    return api


def serve(port: int, host: str, retries_pending: Callable[[], int]) -> None:
    """Serve /metrics on host:port (a thread of its own)."""
    RETRIES_PENDING.set_function(lambda: float(retries_pending()))
    start_http_server(port, addr=host, registry=REGISTRY)
