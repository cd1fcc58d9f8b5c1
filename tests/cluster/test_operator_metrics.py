"""The operator's own Prometheus metrics, scraped from the chart's operator while it runs a
TranscriptionJob on the local cluster: reconciles by outcome, API request latency by verb,
resource and code, TranscriptionJobs by phase (and gone again when deleted), and every
series the chart's dashboard queries (tests/support/operator_metrics.py) served."""

from __future__ import annotations

import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import OperatorProcess
from tests.support import operator_metrics
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
Labels = frozenset[tuple[str, str]]


def scrape(operator: OperatorProcess) -> dict[str, dict[Labels, float]]:
    """Every sample the operator serves: name -> labels -> value."""
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(frozenset(labels.items()), 0.0)


def test_the_operator_counts_its_reconciles_api_calls_and_jobs_by_phase(
        cluster: LocalCluster, job_namespace: str, operator: OperatorProcess) -> None:
    before = scrape(operator)
    reconciles = "whisperfleet_operator_reconciles_total"
    assert {dict(labels)["outcome"] for labels in before[reconciles]} == set(
        operator_metrics.OUTCOMES)
    errors = "whisperfleet_operator_errors_total"
    assert {dict(labels)["reason"] for labels in before[errors]} == set(operator_metrics.REASONS)

    bucket = tjs.bucket_with(cluster, {"in/hello.wav": AUDIO / "hello.wav"})
    tjs.create(cluster, job_namespace, "counted", tjs.job_spec(cluster, bucket))
    done = tjs.wait_for(cluster, job_namespace, "counted", "Succeeded", "PartiallySucceeded",
                        "Failed")
    assert done["status"]["phase"] == "Succeeded"
    after = scrape(operator)
    for name in operator_metrics.METRICS:
        assert name in after, f"{name} not served"
    # Planning, running and finishing each wrote a status: at least three updates.
    assert (value(after, reconciles, outcome="updated")
            - value(before, reconciles, outcome="updated")) >= 3
    # Every status write is a timed PATCH of the status subresource, answered 200; the
    # planner and the worker Job are two timed POSTs of jobs, answered 201.
    count = "whisperfleet_operator_api_request_duration_seconds_count"
    status_patches = (value(after, count, verb="PATCH", resource="transcriptionjobs/status",
                            code="200")
                      - value(before, count, verb="PATCH", resource="transcriptionjobs/status",
                              code="200"))
    assert status_patches >= 3
    created = (value(after, count, verb="POST", resource="jobs", code="201")
               - value(before, count, verb="POST", resource="jobs", code="201"))
    assert created >= 2
    seconds = "whisperfleet_operator_api_request_duration_seconds_sum"
    assert value(after, seconds, verb="PATCH", resource="transcriptionjobs/status",
                 code="200") > 0
    phases = "whisperfleet_operator_transcriptionjobs"
    succeeded = value(after, phases, phase="Succeeded")
    assert succeeded >= 1

    # Deleted, it leaves the count of its phase.
    cluster.rest().delete(tjs.tj_path(job_namespace, "counted"), {})
    eventually(lambda: value(scrape(operator), phases, phase="Succeeded") == succeeded - 1,
               timeout=60, what="the deleted job to leave the Succeeded count")
