"""Smoke tests of the local cluster itself: real control plane, fake GPU nodes, stand-in kubelet.

Each test observes what a process on a fake node saw through its termination message
(the kubelet copies the file into the pod status) or its log (`kubelet.pod_log`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.fake_nodes import NodeSpec
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import POD_SECURITY_LABELS, restricted_pod
from tests.cluster.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
Obj = dict[str, Any]
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
# Writes what it was given (expression over `os.environ`) to the termination log, exits 0.
REPORT = ("import json, os; open(os.environ['TERMINATION_LOG'], 'w')"
          ".write(json.dumps({expression}))")
TERMINATION_ENV = [{"name": "TERMINATION_LOG", "value": "/dev/termination-log"}]
SLEEPER = ("import os, time; print('devices=' + os.environ.get('NVIDIA_VISIBLE_DEVICES', ''),"
           " flush=True); time.sleep(600)")


def report_pod(name: str, expression: str, **kwargs: Any) -> Obj:
    container = {"env": TERMINATION_ENV + kwargs.pop("env", [])}
    container.update(kwargs.pop("container", {}))
    return restricted_pod(name, ["python3", "-c", REPORT.format(expression=expression)],
                          container=container, **kwargs)


def sleeper_pod(name: str, **kwargs: Any) -> Obj:
    return restricted_pod(name, ["python3", "-c", SLEEPER], **kwargs)


def pods_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods" + (f"/{name}" if name else "")


def create_pod(cluster: LocalCluster, namespace: str, manifest: Obj) -> None:
    cluster.rest().create(pods_path(namespace), manifest)


def get_pod(cluster: LocalCluster, namespace: str, name: str) -> Obj | None:
    return cluster.rest().get(pods_path(namespace, name))


def wait_phase(cluster: LocalCluster, namespace: str, name: str, *phases: str,
               timeout: float = 60) -> Obj:
    def probe() -> Obj | None:
        pod = get_pod(cluster, namespace, name)
        return pod if pod and pod.get("status", {}).get("phase") in phases else None
    return eventually(probe, timeout=timeout, what=f"pod {name} to be {'/'.join(phases)}")


def reported(pod: Obj) -> Any:
    """The JSON the pod's process wrote to its termination log."""
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0, state
    return json.loads(state["message"])


def condition(pod: Obj, kind: str) -> Obj | None:
    return next((c for c in pod["status"].get("conditions") or [] if c["type"] == kind), None)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def logged_devices(cluster: LocalCluster, namespace: str, name: str) -> list[str]:
    def probe() -> list[str] | None:
        for line in cluster.kubelet.pod_log(namespace, name).splitlines():
            if line.startswith("devices="):
                return line.removeprefix("devices=").split(",")
        return None
    return eventually(probe, timeout=30, what=f"pod {name} to log its devices")


def test_versions_of_the_built_binaries(cluster: LocalCluster) -> None:
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == "v1.37.2"
    assert versions["serverVersion"]["gitVersion"] == "v1.37.2"
    assert cluster.helm("version", "--template", "{{ .Version }}").stdout.strip() == "v4.3.1"


def test_s3_endpoint_serves_the_s3_api_with_its_credentials(cluster: LocalCluster) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=cluster.s3.endpoint, region_name=cluster.s3.region,
                      aws_access_key_id=cluster.s3.access_key,
                      aws_secret_access_key=cluster.s3.secret_key)
    s3.create_bucket(Bucket="smoke-bucket")
    s3.put_object(Bucket="smoke-bucket", Key="a/b.txt", Body=b"hi")
    assert s3.get_object(Bucket="smoke-bucket", Key="a/b.txt")["Body"].read() == b"hi"
    assert cluster.s3.secret_key not in repr(cluster.s3)


def test_fake_nodes_are_ready_with_gpu_labels_capacity_and_resource_slices(
        cluster: LocalCluster) -> None:
    nodes = {n["metadata"]["name"]: n
             for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]}
    assert {"cpu-1", "h100-1", "t4-1", "a100-mig-1"} <= set(nodes)  # tests may add more
    for node in nodes.values():
        assert condition({"status": node["status"]}, "Ready")["status"] == "True"
    h100 = nodes["h100-1"]
    assert h100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81559"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.compute.major"] == "9"
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert h100["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present",
                                       "effect": "NoSchedule"}]
    assert nodes["t4-1"]["metadata"]["labels"]["nvidia.com/gpu.product"] == "Tesla-T4"
    mig = nodes["a100-mig-1"]
    assert mig["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    assert mig["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] == "3"
    assert "nvidia.com/gpu" not in mig["status"]["allocatable"]
    assert "taints" not in nodes["cpu-1"]["spec"]

    slices = json.loads(cluster.kubectl("get", "resourceslices", "-o", "json").stdout)["items"]
    by_node = {s["spec"]["nodeName"]: s["spec"] for s in slices}
    assert {"h100-1", "t4-1", "a100-mig-1"} <= set(by_node)
    assert [d["attributes"]["productName"]["string"] for d in by_node["h100-1"]["devices"]] \
        == ["NVIDIA H100 80GB HBM3"] * 4


def test_gpu_pods_get_distinct_gpus_and_a_third_waits_unschedulable(
        cluster: LocalCluster, namespace: str) -> None:
    for name in ("gpu-a", "gpu-b"):
        create_pod(cluster, namespace, sleeper_pod(name, limits={"nvidia.com/gpu": 2},
                                                   node_selector=H100))
    for name in ("gpu-a", "gpu-b"):
        assert wait_phase(cluster, namespace, name, "Running")["spec"]["nodeName"] == "h100-1"
    seen = {name: logged_devices(cluster, namespace, name) for name in ("gpu-a", "gpu-b")}
    h100_uuids = {gpu.uuid for gpu in cluster.kubelet.node("h100-1").gpus}
    assert all(len(devices) == 2 for devices in seen.values()), seen
    assert set(seen["gpu-a"]) | set(seen["gpu-b"]) == h100_uuids  # 4 distinct GPUs
    held = cluster.kubelet.allocations()
    assert [held[f"{namespace}/{name}"] for name in ("gpu-a", "gpu-b")] == \
        [seen["gpu-a"], seen["gpu-b"]]

    create_pod(cluster, namespace, sleeper_pod("gpu-c", limits={"nvidia.com/gpu": 2},
                                               node_selector=H100))
    scheduled = eventually(
        lambda: condition(get_pod(cluster, namespace, "gpu-c") or {"status": {}},
                          "PodScheduled"),
        timeout=30, what="the scheduler's verdict on gpu-c")
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]

    # Freed GPUs go to the waiting pod.
    cluster.rest().delete(pods_path(namespace, "gpu-a"), {})
    wait_phase(cluster, namespace, "gpu-c", "Running", timeout=60)
    assert sorted(logged_devices(cluster, namespace, "gpu-c")) == sorted(seen["gpu-a"])


def test_pod_security_admission_refuses_a_non_compliant_pod(
        cluster: LocalCluster, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rooty"},
           "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"],
                                    "securityContext": {"privileged": True}}]}}
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod),
                             check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "privileged" in result.stderr


def test_env_from_secrets_and_a_missing_secret_waits_until_created(
        cluster: LocalCluster, namespace: str) -> None:
    rest = cluster.rest()

    def secret(name: str, data: dict[str, str]) -> None:
        rest.create(f"/api/v1/namespaces/{namespace}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    secret("creds", {"TOKEN": "t0k3n", "REGION": "eu-1"})
    rest.create(f"/api/v1/namespaces/{namespace}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"MODE": "fast"}})
    keys = ["CREDS_TOKEN", "CREDS_REGION", "MODE", "ONE", "POD", "NODE", "COMBO"]
    create_pod(cluster, namespace, report_pod(
        "env-ok", f"{{k: os.environ.get(k) for k in {keys!r}}}", tolerate_gpu=False,
        env=[{"name": "ONE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}},
             {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
             {"name": "COMBO", "value": "$(POD)@$(NODE)"}],
        container={"envFrom": [{"secretRef": {"name": "creds"}, "prefix": "CREDS_"},
                               {"configMapRef": {"name": "settings"}},
                               {"secretRef": {"name": "absent", "optional": True}}]}))
    assert reported(wait_phase(cluster, namespace, "env-ok", "Succeeded")) == {
        "CREDS_TOKEN": "t0k3n", "CREDS_REGION": "eu-1", "MODE": "fast", "ONE": "t0k3n",
        "POD": "env-ok",
        "NODE": "cpu-1", "COMBO": "env-ok@cpu-1"}

    create_pod(cluster, namespace, report_pod(
        "env-missing", "os.environ['K']", tolerate_gpu=False,
        env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "x", "key": "k"}}}]))

    def waiting() -> Obj | None:
        statuses = (get_pod(cluster, namespace, "env-missing") or {}).get("status", {})
        return (statuses.get("containerStatuses") or [{}])[0].get("state", {}).get("waiting")
    state = eventually(waiting, timeout=30, what="env-missing to wait on its Secret")
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "x" not found'}
    assert get_pod(cluster, namespace, "env-missing")["status"]["phase"] == "Pending"
    secret("x", {"k": "late"})
    assert reported(wait_phase(cluster, namespace, "env-missing", "Succeeded")) == "late"


def test_failures_report_start_errors_and_log_tails(cluster: LocalCluster, namespace: str,
                                                   ) -> None:
    no_command = restricted_pod("no-command", [], tolerate_gpu=False)
    del no_command["spec"]["containers"][0]["command"]
    create_pod(cluster, namespace, no_command)
    noisy = "import sys; [print(f'line {i}') for i in range(100)]; sys.exit(3)"
    create_pod(cluster, namespace, restricted_pod(
        "noisy", ["python3", "-c", noisy], tolerate_gpu=False,
        container={"terminationMessagePolicy": "FallbackToLogsOnError"}))

    state = wait_phase(cluster, namespace, "no-command", "Failed")["status"][
        "containerStatuses"][0]["state"]["terminated"]
    assert (state["reason"], state["exitCode"]) == ("StartError", 128)
    assert "no `command`" in state["message"]
    state = wait_phase(cluster, namespace, "noisy", "Failed")["status"][
        "containerStatuses"][0]["state"]["terminated"]
    assert (state["reason"], state["exitCode"]) == ("Error", 3)
    assert state["message"].splitlines() == [f"line {i}" for i in range(20, 100)]  # last 80


def _indexed_job(name: str, fail_index: int | None) -> Obj:
    pod = report_pod("unused", "os.environ['JOB_COMPLETION_INDEX']", tolerate_gpu=False,
                     env=[{"name": "FAIL_INDEX", "value": str(fail_index)}])
    command = pod["spec"]["containers"][0]["command"]
    command[-1] += ("; import sys; sys.exit(42 if os.environ['JOB_COMPLETION_INDEX']"
                    " == os.environ['FAIL_INDEX'] else 0)")
    spec: Obj = {"completionMode": "Indexed", "completions": 3, "parallelism": 2,
                 "template": {"spec": pod["spec"]}}
    if fail_index is not None:
        spec["backoffLimitPerIndex"] = 1
        spec["podFailurePolicy"] = {"rules": [{"action": "FailIndex", "onExitCodes": {
            "operator": "In", "values": [42]}}]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def test_indexed_job_runs_each_index_and_fail_index_on_exit_42(
        cluster: LocalCluster, namespace: str) -> None:
    rest = cluster.rest()
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    rest.create(jobs, _indexed_job("ok", None))
    rest.create(jobs, _indexed_job("fails-1", 1))

    def finished(name: str, kind: str) -> Obj | None:
        job = rest.get(f"{jobs}/{name}") or {}
        conditions = job.get("status", {}).get("conditions") or []
        done = any(c["type"] == kind and c["status"] == "True" for c in conditions)
        return job if done else None

    ok = eventually(lambda: finished("ok", "Complete"), timeout=120, what="job ok Complete")
    assert ok["status"]["completedIndexes"] == "0-2"
    failed = eventually(lambda: finished("fails-1", "Failed"), timeout=120,
                        what="job fails-1 Failed")
    assert failed["status"]["failedIndexes"] == "1"
    assert failed["status"]["completedIndexes"] == "0,2"

    pods = rest.get(f"{pods_path(namespace)}?labelSelector=batch.kubernetes.io%2Fjob-name")
    index_key = "batch.kubernetes.io/job-completion-index"
    runs: dict[tuple[str, str], list[Obj]] = {}
    for pod in pods["items"]:
        job = pod["metadata"]["labels"]["batch.kubernetes.io/job-name"]
        runs.setdefault((job, pod["metadata"]["annotations"][index_key]), []).append(pod)
    assert sorted(runs) == [("fails-1", "0"), ("fails-1", "1"), ("fails-1", "2"),
                            ("ok", "0"), ("ok", "1"), ("ok", "2")]
    for (job, index), attempts in runs.items():
        assert len(attempts) == 1, (job, index)  # FailIndex: no retry of index 1
        state = attempts[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert json.loads(state["message"]) == index
        assert state["exitCode"] == (42 if (job, index) == ("fails-1", "1") else 0)


def test_eviction_kills_the_process_and_keeps_disruption_target(
        cluster: LocalCluster, namespace: str) -> None:
    hold = "whisperfleet.test/hold"  # keeps the deleted pod readable until released
    manifest = sleeper_pod("evictee", tolerate_gpu=False)
    manifest["metadata"]["finalizers"] = [hold]
    create_pod(cluster, namespace, manifest)
    wait_phase(cluster, namespace, "evictee", "Running")
    pid = cluster.kubelet.pod_pid(namespace, "evictee")
    assert pid is not None and process_exists(pid)

    cluster.rest().create(f"{pods_path(namespace, 'evictee')}/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "evictee", "namespace": namespace}})
    pod = wait_phase(cluster, namespace, "evictee", "Failed")
    assert pod["metadata"].get("deletionTimestamp")
    target = condition(pod, "DisruptionTarget")
    assert target is not None and target["status"] == "True", pod["status"]["conditions"]
    assert target["reason"] == "EvictionByEvictionAPI"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    assert not process_exists(pid)

    cluster.rest().strategic_merge_patch(pods_path(namespace, "evictee"),
                                         {"metadata": {"$deleteFromPrimitiveList/finalizers":
                                                       [hold]}})
    eventually(lambda: get_pod(cluster, namespace, "evictee") is None, timeout=30,
               what="the evicted pod to be deleted")


def test_dra_claim_with_a_cel_selector_gets_a_t4(cluster: LocalCluster, namespace: str) -> None:
    templates = f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaimtemplates"
    cluster.rest().create(templates, {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": "a-t4"},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "gpu.nvidia.com",
            "selectors": [{"cel": {"expression":
                                   'device.attributes["gpu.nvidia.com"].productName == "Tesla T4"'
                                   }}]}}]}}}})
    create_pod(cluster, namespace, report_pod(
        "dra", "os.environ['NVIDIA_VISIBLE_DEVICES']",
        resourceClaims=[{"name": "gpu", "resourceClaimTemplateName": "a-t4"}],
        container={"resources": {"claims": [{"name": "gpu"}]}}))
    pod = wait_phase(cluster, namespace, "dra", "Succeeded")
    assert pod["spec"]["nodeName"] == "t4-1"
    assert reported(pod) in {gpu.uuid for gpu in cluster.kubelet.node("t4-1").gpus}


def test_mig_request_gets_a_mig_instance(cluster: LocalCluster, namespace: str) -> None:
    create_pod(cluster, namespace, report_pod(
        "mig", "os.environ['NVIDIA_VISIBLE_DEVICES']", limits={"nvidia.com/mig-1g.10gb": 1}))
    pod = wait_phase(cluster, namespace, "mig", "Succeeded")
    assert pod["spec"]["nodeName"] == "a100-mig-1"
    device = reported(pod)
    assert device.startswith("MIG-")
    assert device in {m.uuid for m in cluster.kubelet.node("a100-mig-1").mig_instances}


def test_pods_still_run_after_an_apiserver_restart(cluster: LocalCluster, namespace: str,
                                                   ) -> None:
    cluster.restart_apiserver()
    create_pod(cluster, namespace, report_pod("after-restart", "os.environ['HOSTNAME']",
                                              tolerate_gpu=False))
    assert reported(wait_phase(cluster, namespace, "after-restart", "Succeeded",
                               timeout=90)) == "after-restart"


def test_deleting_a_namespace_kills_its_pods_and_goes_away(cluster: LocalCluster) -> None:
    rest = cluster.rest()
    name = "t-ns-deletion"
    rest.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": name, "labels": POD_SECURITY_LABELS}})
    eventually(lambda: rest.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
               timeout=30, what="the default ServiceAccount")
    create_pod(cluster, name, sleeper_pod("doomed", tolerate_gpu=False))
    wait_phase(cluster, name, "doomed", "Running")
    pid = cluster.kubelet.pod_pid(name, "doomed")
    assert pid is not None and process_exists(pid)

    rest.delete(f"/api/v1/namespaces/{name}", {})
    eventually(lambda: not process_exists(pid), timeout=30, what="the pod's process to end")
    eventually(lambda: rest.get(f"/api/v1/namespaces/{name}") is None, timeout=60,
               what=f"namespace {name} to be gone")


def test_service_account_token_authenticates_and_rbac_applies(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    account = f"system:serviceaccount:{namespace}:default"
    token = cluster.token_for(namespace, "default", seconds=600)
    kubeconfig = cluster.kubeconfig_for_token(token, tmp_path / "sa.kubeconfig",
                                              namespace=namespace)

    def as_account(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}",
                               *args], capture_output=True, text=True, timeout=60, check=False)

    whoami = json.loads(as_account("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == account
    denied = as_account("get", "pods")
    assert denied.returncode != 0 and "forbidden" in denied.stderr
    can_i = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, as_user=account,
                            check=False)
    assert can_i.stdout.strip() == "no"


def test_a_persistent_volume_claim_keeps_files_across_pods(
        cluster: LocalCluster, namespace: str) -> None:
    cluster.add_volume(namespace, "data")
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    path_env = [{"name": "FILE", "value": "/data/nested/file.txt"}]
    create_pod(cluster, namespace, report_pod(
        "writer", "__import__('pathlib').Path(os.environ['FILE']).parent.mkdir() or "
        "__import__('pathlib').Path(os.environ['FILE']).write_text('kept')",
        tolerate_gpu=False, env=path_env, container=mount, **volume))
    wait_phase(cluster, namespace, "writer", "Succeeded")
    create_pod(cluster, namespace, report_pod(
        "reader", "open(os.environ['FILE']).read()", tolerate_gpu=False, env=path_env,
        container=mount, **volume))
    assert reported(wait_phase(cluster, namespace, "reader", "Succeeded")) == "kept"


def test_a_node_added_later_takes_the_pod_that_could_not_be_scheduled(
        cluster: LocalCluster, namespace: str) -> None:
    pool = {"whisperfleet.test/pool": "late"}
    taint = {"key": "whisperfleet.test/late", "value": "true", "effect": "NoSchedule"}
    create_pod(cluster, namespace, report_pod(
        "late", "os.environ['HOSTNAME']", tolerate_gpu=False, node_selector=pool,
        tolerations=[{"key": taint["key"], "operator": "Exists"}]))
    scheduled = eventually(
        lambda: condition(get_pod(cluster, namespace, "late") or {"status": {}},
                          "PodScheduled"),
        timeout=30, what="the scheduler's verdict on the pod")
    assert scheduled["reason"] == "Unschedulable"

    # Tainted, so the other tests' pods never land on it.
    cluster.add_node(NodeSpec("late-1", labels=pool, taints=(taint,)))
    pod = wait_phase(cluster, namespace, "late", "Succeeded", timeout=60)
    assert pod["spec"]["nodeName"] == "late-1"
    assert "late-1" in cluster.nodes
