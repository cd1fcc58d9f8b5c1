"""Using TranscriptionJobs on the local cluster as a user would: create, read, wait, and look
at what the operator made (Jobs, pods, Events) and what the pods wrote (the bucket)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY

Obj = dict[str, Any]
SECRET = "s3-credentials"
GROUP_PATH = "/apis/whisperfleet.io/v1alpha1"


def tj_path(namespace: str, name: str = "") -> str:
    base = f"{GROUP_PATH}/namespaces/{namespace}/transcriptionjobs"
    return f"{base}/{name}" if name else base


def create(cluster: LocalCluster, namespace: str, name: str, spec: Obj,
           labels: dict[str, str] | None = None) -> Obj:
    metadata: Obj = {"name": name, **({"labels": labels} if labels else {})}
    return cluster.rest().create(tj_path(namespace), {
        "apiVersion": "whisperfleet.io/v1alpha1", "kind": "TranscriptionJob",
        "metadata": metadata, "spec": spec})


def get(cluster: LocalCluster, namespace: str, name: str) -> Obj:
    found = cluster.rest().get(tj_path(namespace, name))
    assert found is not None, f"TranscriptionJob {namespace}/{name} is gone"
    return found


def condition(tj: Obj, type_: str) -> Obj:
    return next((c for c in (tj.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def wait_for(cluster: LocalCluster, namespace: str, name: str, *phases: str,
             timeout: float = 240) -> Obj:
    """The TranscriptionJob once its phase is one of `phases`."""
    def probe() -> Obj | None:
        tj = get(cluster, namespace, name)
        return tj if (tj.get("status") or {}).get("phase") in phases else None

    try:
        return eventually(probe, timeout=timeout,
                          what=f"{namespace}/{name} to reach {' or '.join(phases)}")
    except AssertionError as timed_out:
        now = (cluster.rest().get(tj_path(namespace, name)) or {}).get("status")
        raise AssertionError(f"{timed_out} (status at the deadline: {now})") from None


def listed(cluster: LocalCluster, path: str, selector: str = "") -> list[Obj]:
    query = f"?labelSelector={selector}" if selector else ""
    return list((cluster.rest().get(path + query) or {}).get("items") or [])


def jobs(cluster: LocalCluster, namespace: str) -> list[Obj]:
    return listed(cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs")


def one_of_each_job(cluster: LocalCluster, namespace: str) -> None:
    """The operator never made a second planner or worker Job."""
    components = sorted(j["metadata"]["labels"]["app.kubernetes.io/component"]
                        for j in jobs(cluster, namespace))
    assert components == ["planner", "worker"], components


def pods(cluster: LocalCluster, namespace: str, component: str = "") -> list[Obj]:
    selector = f"app.kubernetes.io/component={component}" if component else ""
    return listed(cluster, f"/api/v1/namespaces/{namespace}/pods", selector)


def events(cluster: LocalCluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    return [(e.get("type", ""), e.get("reason", ""), e.get("message", ""))
            for e in listed(cluster, f"/api/v1/namespaces/{namespace}/events")
            if (e.get("involvedObject") or {}).get("kind") == "TranscriptionJob"
            and (e.get("involvedObject") or {}).get("name") == name]


def s3_client(cluster: LocalCluster) -> Any:
    return boto3.client("s3", endpoint_url=cluster.s3.endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)


def bucket_with(cluster: LocalCluster, files: dict[str, Path]) -> str:
    """A fresh bucket holding `files` (key -> local file)."""
    s3 = s3_client(cluster)
    name = f"wf-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    for key, path in files.items():
        s3.upload_file(str(path), name, key)
    return name


def objects(cluster: LocalCluster, bucket: str, prefix: str = "") -> dict[str, bytes]:
    s3 = s3_client(cluster)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def storage_secret(cluster: LocalCluster, namespace: str) -> None:
    """The user's Secret: the operator never reads it, the pods get it as env."""
    cluster.rest().create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
        "stringData": {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                       "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}})


def job_spec(cluster: LocalCluster, bucket: str, **overrides: Any) -> Obj:
    """A TranscriptionJob spec over `bucket` (in/ -> out/), tiny.en, fast settings."""
    spec: Obj = {
        "input": {"uri": f"s3://{bucket}/in/"},
        "output": {"uri": f"s3://{bucket}/out/", "formats": ["json", "txt"]},
        "storage": {"secretName": SECRET, "endpoint": cluster.s3.endpoint,
                    "region": "us-east-1"},
        "model": {"name": "tiny.en"},
        "transcription": {"language": "en", "beamSize": 1},
        "workers": {"parallelism": 2, "resources": {"requests": {"cpu": "1",
                                                                 "memory": "1Gi"}}},
    }
    spec.update(overrides)
    return spec
