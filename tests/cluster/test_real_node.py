"""whisperfleet on a real node: kubelet 1.37, containerd 2, runc, the CNI bridge and kube-proxy
(built here from their Go modules) run the operator and runner images built here from their
Dockerfiles. The chart is installed by helm with only the image references set; its operator
runs as the Deployment's pod; worker pods get fake GPUs from the stand-in device plugin and
DRA kubelet plugin; S3 (moto) is reached from the pod network. What these tests see is what
a user's first `helm install` on a real cluster would meet: Pod Security applied by runc,
a read-only root with emptyDirs, uid 1000, no API token, Secrets as env, progress scraped
over the pod network, OOM kills, drains and `kubectl logs`.

In this module `cluster` is the cluster with the real node (so `namespace` and the secret
guard use it); the fake nodes beside it carry the stand-in taint, so every pod here runs on
the real node.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import node_config, up
from tests.cluster import real_node_release as rnr
from tests.cluster import transcription_jobs as tjs
from tests.cluster.fixtures import KEEP_STATE_ENV, prebuilt_bin_dir
from tests.cluster.images import BuiltImage
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.node_gpus import REAL_NODE_NAME
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import Release
from tests.support.paths import AUDIO, CHART
from whisperfleet_runner import contract
from whisperfleet_runner.pipeline.ledger import parse_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
Obj = dict[str, Any]
L4 = "NVIDIA-L4"
POD_NETWORK = ipaddress.ip_network(node_config.POD_CIDR)
# What a worker learns about itself from inside its container (kubectl exec).
INSIDE = """import errno, json, os
try:
    open("/probe", "w")
    root = "writable"
except OSError as error:
    root = errno.errorcode[error.errno]
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "root": root,
                  "token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount"),
                  "aws": sorted(k for k in os.environ if k.startswith("AWS_")),
                  "seccomp": status["Seccomp"].strip(), "caps": status["CapEff"].strip(),
                  "no_new_privs": status["NoNewPrivs"].strip()}))
"""
# Memory pressure inside a worker: the runner (PID 1 of its container) is made the OOM
# killer's first choice, then this process fills the container up to its memory limit.
FILL_MEMORY = """import time
open("/proc/1/oom_score_adj", "w").write("1000")
try:
    open("/proc/self/oom_score_adj", "w").write("0")
except OSError:
    pass
held = []
while True:
    held.append(bytearray(b"x") * (16 << 20))
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def cluster(node_binaries: dict[str, Path]) -> Iterator[LocalCluster]:
    """The cluster with the real node."""
    keep = os.environ.get(KEEP_STATE_ENV) == "1"
    with LocalCluster(real_node=True, bin_dir=prebuilt_bin_dir(), node_binaries=node_binaries,
                      keep_state=keep) as local:
        yield local
    if keep:
        print(f"\nlocal cluster state kept in {local.state_dir}")


@pytest.fixture(scope="module")
def image_loads(cluster: LocalCluster, built_images: dict[str, BuiltImage],
                ) -> Iterator[dict[str, Future[float]]]:
    """The images' imports into the node's containerd, running beside what follows (the
    runner's takes longest and is needed only once a job runs)."""
    with ThreadPoolExecutor(max_workers=len(built_images)) as pool:
        yield {name: pool.submit(rnr.load_image, cluster, image)
               for name, image in built_images.items()}


@pytest.fixture(scope="module")
def chart(cluster: LocalCluster, built_images: dict[str, BuiltImage],
          image_loads: dict[str, Future[float]]) -> Release:
    """The chart installed with only the image references set; its operator pod Ready."""
    image_loads["operator"].result()
    return rnr.install(cluster, built_images)


@pytest.fixture
def runner_image(image_loads: dict[str, Future[float]]) -> None:
    """The runner image is in the node's containerd."""
    image_loads["runner"].result()


@pytest.fixture
def job_namespace(namespace: str, cluster: LocalCluster, chart: Release,
                  runner_image: None) -> str:
    """A restricted namespace with the storage Secret and the model claim."""
    tjs.storage_secret(cluster, namespace)
    rnr.model_claim(cluster, namespace)
    return namespace


def spec(cluster: LocalCluster, bucket: str, *, gpu: Obj | None = None,
         memory_limit: str = "3Gi", one_at_a_time: bool = False, **overrides: Any) -> Obj:
    """A job on the real node: tiny.en from the model claim, small CPU requests (two vCPUs)."""
    workers = {"parallelism": overrides.pop("parallelism", 1), "gpu": gpu or {"products": [L4]},
               "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                             "limits": {"memory": memory_limit}}}
    body = tjs.job_spec(cluster, bucket, model={"name": "tiny.en", "cacheVolume": {
        "claimName": rnr.MODEL_CLAIM}}, workers=workers, **overrides)
    if one_at_a_time:  # files finish one by one (no packing into shared windows)
        body["transcription"] = {"language": "en", "beamSize": 1, "batchSize": 1,
                                 "packShortClips": False}
    return body


def clips(count: int) -> dict[str, Path]:
    return {f"in/clip{n:02d}.wav": AUDIO / ("hello.wav" if n % 2 else "nested/numbers.wav")
            for n in range(count)}


def gpu_uuids(cluster: LocalCluster, kind: str) -> set[str]:
    """The real node's whole GPUs ("gpu") or MIG instances ("mig")."""
    node = cluster.real_node.spec
    return ({g.uuid for g in node.whole_gpus} if kind == "gpu"
            else {m.uuid for m in node.mig_instances})


def done_in_log(cluster: LocalCluster, ns: str, pod: str) -> int:
    return cluster.pod_log(ns, pod).count(" succeeded s3://")


def running_worker(cluster: LocalCluster, ns: str, files_done: int = 0) -> str:
    """A worker pod whose container runs and that has transcribed `files_done` files."""
    def probe() -> str | None:
        for pod in tjs.pods(cluster, ns, "worker"):
            state = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
            name = pod["metadata"]["name"]
            if "running" in (state.get("state") or {}) and (
                    not files_done or done_in_log(cluster, ns, name) >= files_done):
                return str(name)
        return None

    return eventually(probe, timeout=240, interval=0.2,
                      what=f"a running worker that did {files_done} file(s)")


def exec_in(cluster: LocalCluster, ns: str, pod: str, code: str) -> Obj:
    out = cluster.kubectl("exec", "-n", ns, pod, "-c", "runner", "--", "python", "-c", code,
                          timeout=60)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def ledger(cluster: LocalCluster, bucket: str, uid: str) -> dict[str, Counter[str]]:
    """status -> how often each file was recorded with it, over every attempt of every
    shard, in distinct records. (A pod that is killed loses the lines it had not flushed
    yet; a pod stopped by SIGTERM flushes them. A later attempt copies the records earlier
    ones flushed into its own ledger: the same record, finish time included.)"""
    prefix = f"out/{contract.STATE_DIR}/{uid}/ledger/"
    records = {(r.status, r.uri, r.time) for key, value in tjs.objects(cluster, bucket,
                                                                        prefix).items()
               for r in parse_records(value.decode(), key)}
    found: dict[str, Counter[str]] = {}
    for status, uri, _ in records:
        found.setdefault(status, Counter())[uri] += 1
    return found


def assert_every_file_once(cluster: LocalCluster, bucket: str, final: Obj, count: int,
                           done_before: dict[str, object] | None = None) -> None:
    """Each input transcribed, none twice, all outputs in the bucket. `done_before`: files a
    pod that was killed or evicted had published, with when their transcripts were written;
    its retry must count them as succeeded (the job did that work) without writing them
    again."""
    status = final["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    files = status["files"]
    assert files["total"] == count and files["failed"] == 0
    # Nothing was done when the job was planned, so nothing is skipped: what a killed or
    # evicted attempt wrote is work this job did.
    assert (files["succeeded"], files["skipped"]) == (count, 0), files
    records = ledger(cluster, bucket, final["metadata"]["uid"])
    succeeded = records.get("succeeded", Counter())
    assert set(succeeded.values()) == {1}, succeeded  # recorded once per file
    assert set(succeeded) == {f"s3://{bucket}/{key}" for key in clips(count)}, records
    assert not records.get("skipped"), records
    # Not transcribed twice: the retry left the transcripts published before it untouched.
    assert written_at(cluster, bucket, done_before or {}) == (done_before or {})
    outputs = {k for k in tjs.objects(cluster, bucket, "out/")
               if not k.startswith(f"out/{contract.STATE_DIR}/")}
    assert outputs == {f"out/clip{n:02d}.{fmt}" for n in range(count) for fmt in ("json", "txt")}


def published(cluster: LocalCluster, ns: str, pod: str) -> frozenset[str]:
    """The files a worker's log says it transcribed."""
    return frozenset(line.rsplit(" on ", 1)[0].split(" succeeded ", 1)[1]
                     for line in cluster.pod_log(ns, pod).splitlines()
                     if " succeeded s3://" in line)


def written_at(cluster: LocalCluster, bucket: str, files: Iterable[str]) -> dict[str, object]:
    """input URI -> when its JSON transcript was last written (in/clipNN.wav ->
    out/clipNN.json; the JSON is published last)."""
    s3 = tjs.s3_client(cluster)
    return {uri: s3.head_object(
        Bucket=bucket, Key="out/" + uri.rsplit("/", 1)[1].replace(".wav", ".json"),
    )["LastModified"] for uri in files}


def test_the_chart_with_only_its_images_set_runs_a_job_on_the_real_node(
    cluster: LocalCluster, job_namespace: str, chart: Release,
    built_images: dict[str, BuiltImage],
) -> None:
    ns = job_namespace
    # helm was given the image references and nothing else.
    values = json.loads(cluster.helm("get", "values", chart.name, "-n", chart.namespace,
                                     "-o", "json").stdout)
    assert values == rnr.image_values(built_images)
    operator = rnr.operator_pod(cluster)
    (state,) = operator["status"]["containerStatuses"]
    assert operator["spec"]["nodeName"] == REAL_NODE_NAME
    assert state["ready"] and state["image"] == built_images["operator"].ref
    # What `up.py --real-node` prints once this is ready.
    line = up.ready_line(cluster, built_images)
    assert line["images"] == {name: image.ref for name, image in built_images.items()}
    assert {n["name"]: n["kubelet"] for n in line["nodes"]} == {
        "cpu-1": "stand-in", "h100-1": "stand-in", "t4-1": "stand-in",
        "a100-mig-1": "stand-in", REAL_NODE_NAME: "real"}
    bucket = tjs.bucket_with(cluster, clips(8))
    created = tjs.create(cluster, ns, "first", spec(cluster, bucket, shards=2, parallelism=2))
    # From inside a worker container, while it works.
    inside = exec_in(cluster, ns, running_worker(cluster, ns), INSIDE)
    assert (inside["uid"], inside["gid"], inside["root"], inside["token"]) == \
        (1000, 1000, "EROFS", False), inside
    assert inside["aws"] == ["AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                             "AWS_REGION", "AWS_SECRET_ACCESS_KEY"]  # the Secret, as env
    assert (inside["seccomp"], inside["caps"], inside["no_new_privs"]) == \
        ("2", "0000000000000000", "1"), inside  # RuntimeDefault filter, no capabilities
    final = tjs.wait_for(cluster, ns, "first", "Succeeded", "PartiallySucceeded", "Failed")
    assert final["metadata"]["uid"] == created["metadata"]["uid"]
    assert_every_file_once(cluster, bucket, final, 8)
    # hello.wav's own words after its first: packed, a clip's frames are encoded with the
    # whole window, and beside these neighbours tiny.en has heard "Hello" as "The".
    assert "world this is a test" in json.loads(tjs.objects(
        cluster, bucket, "out/clip01.json")["out/clip01.json"])["text"].lower().replace(",", "")
    # Every pod (planner, workers, the operator) ran in containerd on the real node.
    pods = [*tjs.pods(cluster, ns), *rnr.operator_pods(cluster)]
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == \
        {"planner", "worker", "operator"}
    for pod in pods:
        assert pod["spec"]["nodeName"] == REAL_NODE_NAME
        for container in pod["status"]["containerStatuses"]:
            assert container["containerID"].startswith("containerd://"), container
    assert {g["uuid"] for w in final["status"]["workers"] for g in w["gpus"]} <= \
        gpu_uuids(cluster, "gpu")
    # `kubectl logs` of a worker: the runner's line per file.
    worker = tjs.pods(cluster, ns, "worker")[0]["metadata"]["name"]
    log = cluster.kubectl("logs", "-n", ns, worker).stdout
    assert sum(f" succeeded s3://{bucket}/in/clip" in line for line in log.splitlines()) == 4


def test_progress_is_read_from_the_running_worker_over_the_pod_network(
    cluster: LocalCluster, job_namespace: str, chart: Release,
) -> None:
    ns, files = job_namespace, 12
    # The default is a read every 30 s; a rollout of the chart's Deployment makes it 1 s.
    before = rnr.operator_pod(cluster)["metadata"]["name"]
    cluster.helm("upgrade", chart.name, str(CHART), "-n", chart.namespace, "--reuse-values",
                 "--set", "metrics.progressIntervalSeconds=1")
    operator = rnr.operator_pod(cluster, not_named=before)
    bucket = tjs.bucket_with(cluster, clips(files))
    tjs.create(cluster, ns, "live", spec(cluster, bucket, shards=1, one_at_a_time=True))

    def live_progress() -> Obj | None:
        # Files done while the only shard has not finished can only come from its metrics.
        status = tjs.get(cluster, ns, "live").get("status") or {}
        done = (status.get("progress") or {}).get("filesDone", 0)
        running = status.get("phase") == "Running" and not status.get("foldedShards")
        return status if running and 0 < done < files else None

    during = eventually(live_progress, timeout=300, interval=0.2,
                        what="status.progress to count files of the running shard")
    assert during["progress"]["audioSecondsDone"] > 0
    (worker,) = [p for p in tjs.pods(cluster, ns, "worker")
                 if p["status"].get("phase") == "Running"]
    # Both ends are pods with addresses of the pod network: the read went pod to pod.
    for pod in (worker, operator):
        assert ipaddress.ip_address(pod["status"]["podIP"]) in POD_NETWORK
    final = tjs.wait_for(cluster, ns, "live", "Succeeded", "PartiallySucceeded", "Failed")
    assert final["status"]["phase"] == "Succeeded", json.dumps(final["status"], indent=1)
    assert final["status"]["progress"]["filesDone"] == files


def test_a_worker_killed_by_its_memory_limit_is_retried_and_nothing_is_lost_or_redone(
    cluster: LocalCluster, job_namespace: str,
) -> None:
    ns, files = job_namespace, 10
    bucket = tjs.bucket_with(cluster, clips(files))
    mig = {"resourceName": "nvidia.com/mig-1g.10gb"}
    tjs.create(cluster, ns, "oom", spec(cluster, bucket, shards=1, gpu=mig, memory_limit="1Gi",
                                        one_at_a_time=True))
    victim = running_worker(cluster, ns, files_done=2)
    cluster.kubectl("exec", "-n", ns, victim, "-c", "runner", "--", "python", "-c",
                    FILL_MEMORY, check=False, timeout=120)

    def killed() -> Obj | None:
        pod = cluster.rest().get(f"/api/v1/namespaces/{ns}/pods/{victim}")
        state = (((pod or {}).get("status") or {}).get("containerStatuses") or [{}])[0]
        return (state.get("state") or {}).get("terminated")

    terminated = eventually(killed, timeout=120, what=f"{victim} to be killed")
    # The kernel killed the runner at the container's limit; containerd and the kubelet say so.
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137), terminated
    done_before = written_at(cluster, bucket, published(cluster, ns, victim))
    assert len(done_before) >= 2
    # As the docs say: the Job runs the shard again (spec.retries.perShard), and the retry
    # does not transcribe again what the killed pod had published.
    final = tjs.wait_for(cluster, ns, "oom", "Succeeded", "PartiallySucceeded", "Failed")
    assert_every_file_once(cluster, bucket, final, files, done_before)
    assert {g["uuid"] for w in final["status"]["workers"] for g in w["gpus"]} <= \
        gpu_uuids(cluster, "mig")


def test_a_drain_mid_run_evicts_the_worker_and_the_job_finishes_after_uncordon(
    cluster: LocalCluster, job_namespace: str,
) -> None:
    ns, files = job_namespace, 16
    bucket = tjs.bucket_with(cluster, clips(files))
    dra = {"deviceClassName": "gpu.nvidia.com", "products": [L4]}
    tjs.create(cluster, ns, "drained", spec(cluster, bucket, shards=1, gpu=dra,
                                            one_at_a_time=True))
    evicted = running_worker(cluster, ns, files_done=1)
    operator = rnr.operator_pod(cluster)["metadata"]["name"]
    # What it published so far (its log goes with the pod; it may publish more while it
    # stops, which its retry then skips too).
    done_before = written_at(cluster, bucket, published(cluster, ns, evicted))
    try:
        # A short grace period, as an administrator in a hurry gives it: the worker is
        # stopped well before its shard is done.
        drained = cluster.kubectl("drain", REAL_NODE_NAME, "--ignore-daemonsets",
                                  "--delete-emptydir-data", "--grace-period=3",
                                  "--timeout=180s", timeout=200)
        assert f"pod/{evicted} evicted" in drained.stdout, drained.stdout
        # Cordoned: the Job's replacement pod waits (the fake nodes are tainted).
        pending = eventually(lambda: [p for p in tjs.pods(cluster, ns, "worker")
                                      if p["status"].get("phase") == "Pending"],
                             timeout=60, what="the replacement worker, pending")
        assert all(p["metadata"]["name"] != evicted for p in pending)
    finally:
        cluster.kubectl("uncordon", REAL_NODE_NAME)
    final = tjs.wait_for(cluster, ns, "drained", "Succeeded", "PartiallySucceeded", "Failed")
    # As the docs say: an eviction is not a failure; the shard runs again and does
    # not redo what was done.
    assert final["status"]["shards"] == {"total": 1, "succeeded": 1, "failed": 0, "active": 0}
    assert_every_file_once(cluster, bucket, final, files, done_before)
    assert {g["uuid"] for w in final["status"]["workers"] for g in w["gpus"]} <= \
        gpu_uuids(cluster, "gpu")
    assert rnr.operator_pod(cluster)["metadata"]["name"] != operator  # evicted, replaced


def test_the_gpu_acceptance_dry_run_passes_inside_the_runner_image(
    cluster: LocalCluster, namespace: str, built_images: dict[str, BuiltImage],
    runner_image: None,
) -> None:
    claim = rnr.model_claim(cluster, namespace)
    restricted = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}}
    cluster.rest().create(f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "acceptance"},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "runner", "image": built_images["runner"].ref,
                "command": ["python", "-m", "whisperfleet_runner.local.acceptance",
                            "--dry-run-cpu"],
                "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                        {"name": contract.ENV_MODEL_CACHE, "value": contract.MODEL_CACHE_MOUNT}],
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                              "limits": {"memory": "3Gi", "nvidia.com/gpu": "2"}},
                "securityContext": restricted,
                "volumeMounts": [{"name": "models", "mountPath": contract.MODEL_CACHE_MOUNT,
                                  "readOnly": True},
                                 {"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "home", "mountPath": "/home/whisperfleet"}]}],
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": claim,
                                                                      "readOnly": True}},
                        {"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}]}})

    def finished() -> str | None:
        pod = cluster.rest().get(f"/api/v1/namespaces/{namespace}/pods/acceptance") or {}
        phase = (pod.get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = eventually(finished, timeout=420, interval=1, what="the acceptance pod to finish")
    lines = cluster.pod_log(namespace, "acceptance").splitlines()
    assert phase == "Succeeded", "\n".join(lines[-40:])
    # The two GPUs the device plugin gave the pod, in both orders, by UUID and by index.
    assert sum(line.startswith("PASS order CUDA_VISIBLE_DEVICES=") for line in lines) == 4
    for check in ("compute type", "out-of-memory halves and completes", "throughput"):
        assert any(line.startswith(f"PASS {check}") for line in lines), lines
    assert not any(line.startswith("FAIL") for line in lines)
