"""Which API failures the operator retries, and that a reconcile they stopped runs again
(on the real control plane: tests/cluster/test_api_faults.py)."""

from __future__ import annotations

import threading

import pytest
import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from whisperfleet_operator import kube, retries
from whisperfleet_operator.reconcile import Reconciler
from whisperfleet_operator.settings import OperatorSettings


@pytest.mark.parametrize("error, retried", [
    (ApiException(status=409, reason="Conflict"), True),
    (ApiException(status=429, reason="Too Many Requests"), True),
    (ApiException(status=500, reason="Internal Server Error"), True),
    (ApiException(status=503, reason="Service Unavailable"), True),
    (kube.Conflict("the object has been modified"), True),
    (urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused"), True),
    (ConnectionResetError(), True),
    (ApiException(status=403, reason="Forbidden"), False),
    (ApiException(status=404, reason="Not Found"), False),
    (ApiException(status=422, reason="Unprocessable Entity"), False),
    (kube.Rejected("spec.template: Invalid value"), False),
    (KeyError("status"), False),
])
def test_only_failures_that_may_pass_are_transient(error: Exception, retried: bool) -> None:
    assert kube.transient(error) is retried


def test_the_summary_of_an_api_error_leaves_out_headers_and_body() -> None:
    error = ApiException(status=503, reason="Service Unavailable")
    error.headers, error.body = {"Audit-Id": "x"}, b'{"kind": "Status"}'
    assert kube.summary(error) == "HTTP 503 Service Unavailable"


class Flaky(Reconciler):
    """A Reconciler whose reconcile fails with `errors` first, then succeeds."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__(kube.Kube(ApiClient()), OperatorSettings())  # never called
        self.errors, self.calls, self.done = errors, 0, threading.Event()

    def reconcile(self, namespace: str, name: str, uid: str | None = None) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()


def test_a_reconcile_stopped_by_transient_errors_runs_again_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retries, "RETRY_DELAYS", (0.01, 0.02))
    flaky = Flaky([kube.Conflict("modified"), ApiException(status=503), ApiException(429)])
    flaky.reconcile_or_retry("ns", "talks", "u-1")  # does not raise: retried on its own
    assert flaky.done.wait(timeout=10), flaky.calls
    assert flaky.calls == 4


def test_other_errors_propagate_and_schedule_nothing() -> None:
    flaky = Flaky([ApiException(status=403, reason="Forbidden")])
    with pytest.raises(ApiException):
        flaky.reconcile_or_retry("ns", "talks", "u-1")
    assert not flaky.retries._timers and flaky.calls == 1


def test_close_cancels_pending_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries, "RETRY_DELAYS", (30.0,))
    flaky = Flaky([ApiException(status=500)])
    flaky.reconcile_or_retry("ns", "talks", "u-1")
    (timer,) = flaky.retries._timers.values()
    flaky.close()
    timer.join(timeout=10)
    assert not timer.is_alive() and flaky.calls == 1
