"""The operator's own metrics: how API URLs and errors are named in their labels."""

from __future__ import annotations

import pytest
import urllib3
from kubernetes.client.rest import ApiException

from tests.support import operator_metrics
from whisperfleet_operator import kube, metrics


@pytest.mark.parametrize(("url", "resource"), [
    ("https://10.0.0.1/apis/whisperfleet.io/v1alpha1/namespaces/a/transcriptionjobs/t/status",
     "transcriptionjobs/status"),
    ("https://h/apis/whisperfleet.io/v1alpha1/namespaces/a/transcriptionjobs/t",
     "transcriptionjobs"),
    ("https://h/apis/batch/v1/namespaces/a/jobs?dryRun=All", "jobs"),
    ("https://h/api/v1/namespaces/a/pods?labelSelector=x", "pods"),
    ("https://h/api/v1/namespaces/a", "namespaces"),
    ("https://h/apis/resource.k8s.io/v1/namespaces/a/resourceclaimtemplates/c",
     "resourceclaimtemplates"),
    ("https://h/version", "other"),
])
def test_api_urls_are_labelled_by_resource_not_by_object(url: str, resource: str) -> None:
    assert metrics.resource_of(url) == resource


@pytest.mark.parametrize(("error", "reason"), [
    (kube.Conflict("changed"), "conflict"),
    (ApiException(status=409), "conflict"),
    (ApiException(status=429), "throttled"),
    (ApiException(status=503), "api_server_error"),
    (ApiException(status=403), "api_refused"),
    (kube.Rejected("invalid"), "api_refused"),
    (ApiException(status=0, reason="SSL"), "api_unreachable"),
    (urllib3.exceptions.NewConnectionError(None, "refused"), "api_unreachable"),
    (KeyError("status"), "internal"),
])
def test_errors_are_named_by_what_stopped_the_call(error: BaseException, reason: str) -> None:
    assert kube.error_reason(error) == reason
    assert reason in metrics.REASONS


def test_the_label_values_are_the_ones_the_chart_documents() -> None:
    assert metrics.OUTCOMES == operator_metrics.OUTCOMES
    assert metrics.REASONS == operator_metrics.REASONS
