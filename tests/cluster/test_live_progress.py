"""Progress a user sees while a TranscriptionJob runs: the operator reads the running worker
pods' metrics (over the pod network, each pod on its own address) into status.progress and
the Progress/ETA columns, and counts, once in, survive the deletion of the pods that made
them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
Obj = dict[str, Any]


def copies(count: int) -> dict[str, Path]:
    return {f"in/talk-{n:03d}.wav": AUDIO / "hello.wav" for n in range(count)}


def test_progress_moves_while_the_only_shard_is_still_running(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, files = job_namespace, 30
    bucket = tjs.bucket_with(cluster, copies(files))
    # One file at a time (no packing into shared windows), so files finish one by one.
    tjs.create(cluster, ns, "live", tjs.job_spec(
        cluster, bucket, shards=1, workers={"parallelism": 1},
        transcription={"language": "en", "beamSize": 1, "batchSize": 1,
                       "packShortClips": False}))

    def live_progress() -> Obj | None:
        # Files done while no shard has finished can only come from the running pod.
        status = tjs.get(cluster, ns, "live").get("status") or {}
        done = (status.get("progress") or {}).get("filesDone", 0)
        folded = sum((status.get("files") or {}).get(k, 0)
                     for k in ("succeeded", "failed", "skipped"))
        running = status.get("phase") == "Running" and not status.get("foldedShards")
        return status if running and done > folded and 0 < done < files else None

    during = eventually(live_progress, timeout=300, interval=0.2,
                        what="status.progress to count files of the running shard")
    progress = during["progress"]
    assert progress["summary"] == f"{100 * progress['filesDone'] // files}%"
    assert progress["audioSecondsDone"] > 0 and progress["throughput"] > 0
    assert progress["eta"], "a pace is known once files are done"
    # What `kubectl get tj` shows while it runs (the row as of this call).
    header, row = cluster.kubectl("get", "tj", "live", "-n", ns).stdout.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert columns["PROGRESS"].endswith("%") and columns["ETA"], (header, row)
    final = tjs.wait_for(cluster, ns, "live", "Succeeded", "PartiallySucceeded", "Failed")
    status = final["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["progress"]["filesDone"] == files
    assert (status["progress"]["summary"], status["progress"]["eta"]) == ("100%", "0s")
    assert status["progress"]["audioSecondsDone"] == pytest.approx(status["audioSeconds"])


def test_deleting_finished_worker_pods_mid_run_keeps_their_counts(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, files = job_namespace, 6
    bucket = tjs.bucket_with(cluster, copies(files))
    tjs.create(cluster, ns, "gc", tjs.job_spec(
        cluster, bucket, shards=3, workers={"parallelism": 1}))

    def first_shard_folded() -> Obj | None:
        status = tjs.get(cluster, ns, "gc").get("status") or {}
        return status if status.get("foldedShards") and status.get("phase") == "Running" \
            else None

    before = eventually(first_shard_folded, timeout=300,
                        what="a shard's report folded in while the job still runs")
    counted = before["files"]["succeeded"]
    assert counted >= 1
    finished = [p for p in tjs.pods(cluster, ns, "worker")
                if p["status"].get("phase") == "Succeeded"]
    assert finished
    for pod in finished:  # as the garbage collector or a user would
        cluster.kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")
    final = tjs.wait_for(cluster, ns, "gc", "Succeeded", "PartiallySucceeded", "Failed")
    status = final["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["files"] == {"total": files, "succeeded": files, "failed": 0, "skipped": 0}
    assert status["foldedShards"] == "0-2"
    assert status["progress"]["filesDone"] == files
    assert status["shards"]["succeeded"] == 3
