"""spec.workers.volumes and volumeMounts on the cluster: a file the pods read from a volume
of the user's (here an AWS shared-credentials file in a Secret, the way a private CA bundle
or a proxy config reaches them) is there, at its mount path, in the planner and the
workers alike."""

from __future__ import annotations

import json

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
FILES = {"in/hello.wav": AUDIO / "hello.wav"}
MOUNT = "/etc/aws"


def file_credentials_job(cluster: LocalCluster, bucket: str, *, mounted: bool) -> dict:
    spec = tjs.job_spec(cluster, bucket, shards=1)
    del spec["storage"]["secretName"]  # no credentials in the env: only the file has them
    workers = spec["workers"]
    workers["parallelism"] = 1
    workers["env"] = [{"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{MOUNT}/credentials"}]
    if mounted:
        workers["volumes"] = [{"name": "aws", "secret": {"secretName": "aws-file"}}]
        workers["volumeMounts"] = [{"name": "aws", "mountPath": MOUNT, "readOnly": True}]
    return spec


def test_a_secret_volume_reaches_the_planner_and_the_workers(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    cluster.rest().create(f"/api/v1/namespaces/{ns}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-file"},
        "stringData": {"credentials": f"[default]\naws_access_key_id = {S3_ACCESS_KEY}\n"
                                      f"aws_secret_access_key = {S3_SECRET_KEY}\n"}})
    bucket = tjs.bucket_with(cluster, FILES)
    tjs.create(cluster, ns, "unmounted", file_credentials_job(cluster, bucket, mounted=False))
    tjs.create(cluster, ns, "mounted", file_credentials_job(cluster, bucket, mounted=True))
    done = tjs.wait_for(cluster, ns, "mounted", "Succeeded", "Failed", "PartiallySucceeded")
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    assert {"out/hello.json", "out/hello.txt"} <= set(tjs.objects(cluster, bucket, "out/"))
    # The same job without the volume finds no credentials: the file was the volume's.
    failed = tjs.wait_for(cluster, ns, "unmounted", "Succeeded", "Failed", "PartiallySucceeded")
    assert failed["status"]["phase"] == "Failed", json.dumps(failed["status"], indent=1)
    assert tjs.condition(failed, "Failed")["reason"] == "NoCredentials"
