"""A burst of new TranscriptionJobs (benchmarks/operator_reaction.py, small): each gets a
status from whisperfleet's operator before any planning work for it, and about as soon as a
minimal kopf operator writes one on the same cluster in the same run."""

from __future__ import annotations

import json

import pytest

from tests.cluster.local_cluster import LocalCluster
from tests.cluster.whisperfleet_release import OperatorProcess, Release
from tests.support.benchmark_scripts import benchmark_script

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
JOBS = 40


def test_a_burst_of_new_jobs_gets_statuses_before_planning_and_about_as_soon_as_a_minimal_operator(
    cluster: LocalCluster, release: Release, operator: OperatorProcess
) -> None:
    operator.stop()  # the benchmark runs each side's operator alone
    try:
        result = benchmark_script("operator_reaction").measure(cluster, release, jobs=JOBS,
                                                               rounds=1)
    finally:
        operator.start()
    print(json.dumps(result, indent=1))
    seconds = result["creation_to_first_status_seconds"]
    assert seconds["whisperfleet"]["count"] == seconds["minimal"]["count"] == JOBS
    assert result["whisperfleet_creation_to_planner_job_seconds"]["count"] == JOBS
    # The first status is written before the planner Job, for every job: a user sees the
    # job accepted at once, not after the operator worked through the jobs ahead of it.
    assert result["whisperfleet_jobs_with_a_status_before_their_planner_job"] == JOBS
    # Loose: the same run's minimal operator is the yardstick (the benchmark's goal is 1.5
    # at 300 jobs); a status queued behind planning work measured 2.6 at 30 jobs.
    assert result["ratio_p95"] < 2.5, result
