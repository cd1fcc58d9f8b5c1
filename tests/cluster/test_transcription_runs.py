"""TranscriptionJobs run end to end on the real control plane: the operator (as the chart runs
it) plans with a planner Job, the real Job controller and scheduler run the worker pods on the
fake GPU node that matches spec.workers.gpu, the real runner transcribes with tiny.en, and the
status, the Events and the bucket say what happened."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.paths import AUDIO
from whisperfleet_runner import contract
from whisperfleet_runner.pipeline.ledger import merge, parse_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# key under in/ -> fixture: one bad medium, a name with a space and unicode.
UPLOADS = {"hello.wav": "hello.wav", "nested/numbers.wav": "nested/numbers.wav",
           "with space é.wav": "with space é.wav", "bad/notes.mp3": "bad/notes.mp3"}
H100 = "NVIDIA-H100-80GB-HBM3"


def uploads() -> dict[str, Path]:
    return {f"in/{key}": AUDIO / fixture for key, fixture in UPLOADS.items()}


def test_a_job_runs_on_the_matching_gpus_and_ends_partially_succeeded(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns, bucket = job_namespace, tjs.bucket_with(cluster, uploads())
    gpu = {"products": [H100], "minMemoryMiB": 40000, "minComputeCapability": "8.0"}
    created = tjs.create(cluster, ns, "podcasts", tjs.job_spec(
        cluster, bucket, shards=2, workers={"parallelism": 2, "gpu": gpu}))
    uid = created["metadata"]["uid"]
    final = tjs.wait_for(cluster, ns, "podcasts", "PartiallySucceeded", "Succeeded", "Failed")
    status = final["status"]
    assert status["phase"] == "PartiallySucceeded", json.dumps(status, indent=1)
    assert status["files"] == {"total": 4, "succeeded": 3, "failed": 1, "skipped": 0}
    assert status["shards"] == {"total": 2, "succeeded": 1, "failed": 1, "active": 0}
    bad = f"s3://{bucket}/in/bad/notes.mp3"
    assert [f["uri"] for f in status["failures"]] == [bad]
    assert status["failures"][0]["reason"].startswith("bad media")
    # Complete is for a job whose every file succeeded: `kubectl wait --for=condition=Complete`
    # must not pass here.
    assert tjs.condition(final, "PartiallySucceeded")["status"] == "True"
    assert tjs.condition(final, "Complete") == {}
    # The real scheduler put every worker on the node whose GPUs match, and the runner
    # reports the GPU the stand-in device plugin allocated to it.
    workers = tjs.pods(cluster, ns, "worker")
    assert workers and {p["spec"]["nodeName"] for p in workers} == {"h100-1"}
    h100 = {g.uuid for g in cluster.kubelet.node("h100-1").gpus}
    assert status["workers"] and all(len(w["gpus"]) == 1 and w["gpus"][0]["uuid"] in h100
                                     and w["node"] == "h100-1" for w in status["workers"])
    # What the user finds in the bucket: every good file's transcripts, the manifest and a
    # ledger line per file.
    out = tjs.objects(cluster, bucket, "out/")
    transcripts = {k for k in out if not k.startswith(f"out/{contract.STATE_DIR}/")}
    stems = [k.rsplit(".", 1)[0] for k in UPLOADS if not k.startswith("bad/")]
    assert transcripts == {f"out/{s}.{fmt}" for s in stems for fmt in ("json", "txt")}
    assert "hello" in json.loads(out["out/hello.json"])["text"].lower()
    state = f"out/{contract.STATE_DIR}/{uid}/"
    assert len(out[f"{state}manifest.jsonl"].decode().splitlines()) == 4
    ledger = merge(r for k, v in out.items() if k.startswith(f"{state}ledger/")
                   for r in parse_records(v.decode(), k))
    assert Counter(r.status for r in ledger.values()) == {"succeeded": 3, "failed": 1}
    assert {r.gpu for r in ledger.values() if r.status == "succeeded"} <= h100
    # Events tell the story; no credential reached the status, the Events or the outputs.
    # (the last Event is posted after the status write that ends the job)
    reasons = eventually(
        lambda: (r := [reason for _, reason, _ in tjs.events(cluster, ns, "podcasts")])
        and "PartiallySucceeded" in r and r, timeout=30, what="the PartiallySucceeded Event")
    assert "Planned" in reasons
    seen = json.dumps(status) + json.dumps(tjs.events(cluster, ns, "podcasts")) + \
        "".join(v.decode(errors="replace") for v in out.values())
    assert S3_SECRET_KEY not in seen and S3_ACCESS_KEY not in seen


def test_two_gpus_per_worker_both_work_on_the_h100_node(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    files = {f"in/clip{n:02d}.wav": AUDIO / ("hello.wav" if n % 2 else "nested/numbers.wav")
             for n in range(8)}
    bucket = tjs.bucket_with(cluster, files)
    tjs.create(cluster, ns, "two-gpus", tjs.job_spec(
        cluster, bucket, shards=1,
        workers={"parallelism": 1, "gpusPerWorker": 2, "gpu": {"products": [H100]}}))
    final = tjs.wait_for(cluster, ns, "two-gpus", "Succeeded", "PartiallySucceeded", "Failed")
    assert final["status"]["phase"] == "Succeeded", json.dumps(final["status"], indent=1)
    (worker,) = final["status"]["workers"]
    uuids = [g["uuid"] for g in worker["gpus"]]
    assert len(set(uuids)) == 2 and [g["deviceIndex"] for g in worker["gpus"]] == [0, 1]
    # Each GPU did files: the ledger names both.
    uid = final["metadata"]["uid"]
    out = tjs.objects(cluster, bucket, f"out/{contract.STATE_DIR}/{uid}/ledger/")
    records = [r for k, v in out.items() for r in parse_records(v.decode(), k)]
    by_gpu = Counter(r.gpu for r in records if r.status == "succeeded")
    assert set(by_gpu) == set(uuids) and sum(by_gpu.values()) == 8, by_gpu
