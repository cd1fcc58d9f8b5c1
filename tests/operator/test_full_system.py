"""The whole system: the real operator's Jobs, run by the real runner, against real S3 (moto).

The test stands in for the two Kubernetes parts absent here: the Job controller (it reads the
Job's podFailurePolicy to decide which indexes completed or failed) and the kubelet (it runs the
pod template's container as a subprocess with the env the kubelet would build: literal values,
downward-API fields, the user's Secret via envFrom, emptyDirs at their mount paths). Whatever
the runner writes to its termination log becomes the pod's termination message, as it would in
a cluster. No report is hand-written: if the operator and the runner disagree on env names,
args, work-order fields, exit codes or report shapes, this test fails.

The worker Job's work order says `device: cuda` and there is no GPU here: the stand-in
kubelet also plays the NVIDIA device plugin, allocating one GPU of the fake NVML (the one
mocked boundary, tests/fakes) through NVIDIA_VISIBLE_DEVICES, with the narrow test switch
(devices.ENV_GPU_ON_CPU) that keeps the GPU binding and identity but runs the model on the CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.operator.conftest import (
    NAMESPACE,
    ApiServer,
    OperatorFactory,
    eventually,
)
from tests.operator.test_operator_e2e import (
    add_pod,
    condition,
    done,
    job,
    phase,
    request,
    set_job_status,
    tj_path,
)
from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.paths import FAKES
from whisperfleet_operator import naming
from whisperfleet_operator.spec import parse as parse_tj
from whisperfleet_runner import config
from whisperfleet_runner.gpu import devices
from whisperfleet_runner.ledger import merge, parse_records

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(120)]
Obj = dict[str, Any]
NODE = "gpu-node-1"  # add_pod puts every pod on this node; NODE_NAME must agree
SECRET = "s3-credentials"
TJ_NAME = "fullsys"
# Upload key (under in/) -> fixture file. One bad medium, one name with a space and unicode.
UPLOADS = {
    "hello.wav": "hello.wav",
    "nested/numbers.wav": "nested/numbers.wav",
    "with space é.wav": "with space é.wav",
    "bad/notes.mp3": "bad/notes.mp3",
}
GOOD = [k for k in UPLOADS if not k.startswith("bad/")]
RUN_TIMEOUT = 120.0  # seconds for one runner process (model load + a few short files on CPU)


@dataclass
class Ended:
    """A container that ran to its end: what the kubelet records in the pod status."""

    exit_code: int
    message: str  # the termination message (the runner's report, or the log tail)
    stderr: str


# --- the kubelet: run a pod template's container for real ---------------------------------


def _field(path: str, pod_name: str) -> str:
    values = {"metadata.name": pod_name, "metadata.namespace": NAMESPACE, "spec.nodeName": NODE}
    assert path in values, f"the pod template asks for an unexpected downward-API field {path}"
    return values[path]


def _container_env(job_body: Obj, pod_name: str, secrets: dict[str, dict[str, str]],
                   scratch: Path) -> tuple[Obj, dict[str, str]]:
    """(the container, its process env) as the kubelet would build them on this machine."""
    template = job_body["spec"]["template"]["spec"]
    (container,) = template["containers"]
    # emptyDir volumes become fresh folders here; env values pointing into them follow.
    empty = {v["name"] for v in template.get("volumes", []) if "emptyDir" in v}
    mounts = {m["mountPath"]: scratch / m["name"] for m in container.get("volumeMounts", [])
              if m["name"] in empty}
    for folder in mounts.values():
        folder.mkdir(parents=True, exist_ok=True)

    def relocate(value: str) -> str:
        for mount, folder in mounts.items():
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(folder) + value[len(mount.rstrip("/")):]
        return value

    # Nothing from this test process leaks in: only what any node has (PATH to the runner
    # image's entry point) and the workplace rule that nothing reaches a model hub.
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1"}
    for source in container.get("envFrom", []):
        assert set(source) == {"secretRef"}, f"unexpected envFrom source {source}"
        env.update(secrets[source["secretRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = relocate(str(item["value"]))
        else:
            env[item["name"]] = _field(item["valueFrom"]["fieldRef"]["fieldPath"], pod_name)
    return container, env


FAKE_GPU = {"uuid": "GPU-5e1f0c2a-0000-4000-8000-00000000a100", "name": "NVIDIA H100 80GB HBM3",
            "pci_bus_id": "00000000:18:00.0", "memory_total_mib": 81559,
            "memory_used_mib": 600, "cc": "9.0"}


async def run_pod(job_body: Obj, pod_name: str, secrets: dict[str, dict[str, str]],
                  tmp_path: Path, *, index: int | None = None,
                  gpu: dict[str, Any] | None = None) -> Ended:
    """Run the Job's container as its pod `pod_name` would, without blocking the emulator."""
    scratch = tmp_path / "pods" / pod_name
    container, env = _container_env(job_body, pod_name, secrets, scratch)
    if index is not None:
        env[config.ENV_COMPLETION_INDEX] = str(index)
    if gpu is not None:  # the device plugin's part (see the module docstring)
        assert json.loads(env[config.ENV_WORK_ORDER])["device"] == "cuda"
        env.update({"PYTHONPATH": str(FAKES), devices.ENV_FAKE_NVML: json.dumps([gpu]),
                    "NVIDIA_VISIBLE_DEVICES": gpu["uuid"], devices.ENV_GPU_ON_CPU: "1"})
    # The kubelet creates the termination log; the runner writes it only when it exists
    # (cli.pod_io.default_termination_log). /dev/termination-log is not ours here, so point
    # the runner at a file standing for it.
    assert container["terminationMessagePath"] == config.TERMINATION_MESSAGE_PATH
    log_file = scratch / "termination-log"
    log_file.write_text("")
    command = [*container["command"], *container["args"], "--termination-log", str(log_file)]
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable, f"{command[0]} is not installed next to {sys.executable}"
    proc = await asyncio.create_subprocess_exec(
        executable, *command[1:], env=env, cwd=scratch,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    stderr = err.decode(errors="replace")
    message = log_file.read_bytes()[: config.TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
    assert proc.returncode is not None
    if not message and proc.returncode != 0:  # terminationMessagePolicy FallbackToLogsOnError
        message = (out.decode(errors="replace") + stderr)[-config.TERMINATION_MESSAGE_LIMIT:]
    for secret in secrets.values():  # credentials never reach logs or reports
        assert not any(v in stderr or v in message for v in secret.values())
    return Ended(proc.returncode, message, stderr)


# --- the Job controller: decide an index's fate from the podFailurePolicy -------------------


def policy_action(job_body: Obj, exit_code: int) -> str | None:
    """The action of the first podFailurePolicy rule matching a failed pod's exit code."""
    for rule in job_body["spec"].get("podFailurePolicy", {}).get("rules", []):
        codes = rule.get("onExitCodes")
        if codes and (exit_code in codes["values"]) == (codes["operator"] == "In"):
            return str(rule["action"])
    return None


def index_ranges(indexes: list[int]) -> str:
    """The Job status notation for a set of indexes: "0,2-4"."""
    parts: list[str] = []
    for i in sorted(indexes):
        if parts and i == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{i}"
        else:
            parts.append(str(i))
    return ",".join(parts)


# --- the scenario --------------------------------------------------------------------------------


def _s3_keys(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


async def test_operator_jobs_run_by_the_real_runner_on_s3(
    api: ApiServer, operator: OperatorFactory, s3_bucket: str, moto_endpoint: str,
    audio_dir: Path, tiny_model_path: Path, tmp_path: Path,
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    for key, fixture in UPLOADS.items():
        s3.upload_file(str(audio_dir / fixture), s3_bucket, f"in/{key}")
    # The user's Secret: the operator never reads it; the kubelet (this test) injects it.
    secrets = {SECRET: {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}}
    body = {
        "apiVersion": "whisperfleet.io/v1alpha1", "kind": "TranscriptionJob",
        "metadata": {"name": TJ_NAME, "namespace": NAMESPACE},
        "spec": {
            "input": {"uri": f"s3://{s3_bucket}/in/"},
            "output": {"uri": f"s3://{s3_bucket}/out/", "formats": ["json", "txt", "srt"]},
            "storage": {"secretName": SECRET, "endpoint": moto_endpoint, "region": "us-east-1"},
            # A local CTranslate2 directory is a valid model name (the CRD has no pattern).
            "model": {"name": str(tiny_model_path)},
            "transcription": {"language": "en", "beamSize": 1},
            "workers": {"parallelism": 2},
            "shards": 2,
        },
    }
    created = await request(api, "post", tj_path(), body)
    uid = created["metadata"]["uid"]

    # Plan: run the planner Job's pod for real.
    planner_name = naming.planner_job_name(parse_tj(created))
    planner = await eventually(lambda: job(api, planner_name), what="the planner Job")
    pod = f"{planner_name}-p0001"
    ended = await run_pod(planner, pod, secrets, tmp_path)
    assert ended.exit_code == 0, f"planner failed: {ended.message}\n{ended.stderr[-3000:]}"
    plan = config.PlanReport.from_json(ended.message)
    assert (plan.files, plan.shards) == (len(UPLOADS), 2)
    await add_pod(api, planner, pod, ended.message)
    await set_job_status(api, planner_name, {"succeeded": 1, "conditions": [done("Complete")]})

    # Work: every index of the worker Job, as the Job controller would start them.
    worker = await eventually(lambda: job(api, naming.worker_job_name(parse_tj(created))),
                              what="the worker Job")
    name = worker["metadata"]["name"]
    assert worker["spec"]["completions"] == plan.shards
    await phase(api, TJ_NAME, "Running")
    reports: dict[int, config.ShardReport] = {}
    completed, failed = [], []
    for index in range(worker["spec"]["completions"]):
        pod = f"{name}-{index}-w{index:04d}"
        ended = await run_pod(worker, pod, secrets, tmp_path, index=index, gpu=FAKE_GPU)
        action = policy_action(worker, ended.exit_code)
        assert ended.exit_code == 0 or action == "FailIndex", (
            f"shard {index} exited {ended.exit_code} (policy action {action}: the Job would "
            f"retry or fail): {ended.message}\n{ended.stderr[-3000:]}")
        reports[index] = config.ShardReport.from_json(ended.message)
        (completed if ended.exit_code == 0 else failed).append(index)
        await add_pod(api, worker, pod, ended.message, index=index, exit_code=ended.exit_code)
    final_job: Obj = {"active": 0, "succeeded": len(completed), "failed": len(failed),
                      "completedIndexes": index_ranges(completed),
                      "failedIndexes": index_ranges(failed)}
    if failed:  # every index ran to its end, some failed: what backoffLimitPerIndex ends with
        final_job["conditions"] = [done("Failed", "FailedIndexes", "Job has failed indexes")]
    else:
        final_job.update(completionTime="2026-01-01T01:00:00Z", conditions=[done("Complete")])
    await set_job_status(api, name, final_job)

    # The bad medium exits EXIT_BAD_INPUT, which the podFailurePolicy turns into FailIndex:
    # its shard fails without retries while the other shard completes -> partial success.
    assert len(failed) == 1 and len(completed) == 1, reports
    bad = reports[failed[0]]
    assert bad.bad_input == 1 and bad.failed == 1
    final = await phase(api, TJ_NAME, "PartiallySucceeded")
    status = final["status"]
    assert status["files"] == {"total": 4, "succeeded": 3, "failed": 1, "skipped": 0}
    assert status["shards"] == {"total": 2, "succeeded": 1, "failed": 1, "active": 0}
    bad_uri = f"s3://{s3_bucket}/in/bad/notes.mp3"
    assert status["failures"] == [{"uri": bad_uri, "reason": bad.failures[0].reason}]
    assert bad.failures[0].reason.startswith("bad media"), bad.failures[0].reason
    audio = sum(r.audio_seconds for r in reports.values())
    assert audio > 0 and status["audioSeconds"] == pytest.approx(audio, abs=0.02)
    assert {w["pod"] for w in status["workers"]} == {f"{name}-{i}-w{i:04d}" for i in reports}
    assert {w["node"] for w in status["workers"]} == {NODE}
    # The GPU the "device plugin" allocated, mapped to device_index 0 and reported upwards.
    assert all(r.device == "cuda:0" and [g.uuid for g in r.gpus] == [FAKE_GPU["uuid"]]
               for r in reports.values())
    assert all(w["gpus"] == [{"uuid": FAKE_GPU["uuid"], "name": FAKE_GPU["name"],
                              "memoryMiB": FAKE_GPU["memory_total_mib"], "deviceIndex": 0}]
               for w in status["workers"]), status["workers"]
    assert condition(final, "Complete")["reason"] == "PartiallySucceeded"
    assert status["manifestUri"] == plan.manifest_uri

    # What the user finds in the bucket: every good file's transcripts, nothing for the bad.
    out = _s3_keys(s3, s3_bucket, "out/")
    stems = [k.rsplit(".", 1)[0] for k in GOOD]
    expected = {f"out/{stem}.{fmt}" for stem in stems for fmt in ("json", "txt", "srt")}
    transcripts = {k for k in out if not k.startswith(f"out/{config.STATE_DIR}/")}
    assert transcripts == expected
    hello = json.loads(out["out/hello.json"])
    assert "hello" in hello["text"].lower() and hello["device"] == "cpu"
    assert json.loads(out["out/with space é.json"])["source"].endswith("in/with space é.wav")
    state = f"out/{config.STATE_DIR}/{uid}/"
    manifest = [json.loads(line) for line in out[f"{state}manifest.jsonl"].decode().splitlines()]
    assert sorted(e["uri"] for e in manifest) == sorted(f"s3://{s3_bucket}/in/{k}"
                                                        for k in UPLOADS)
    assert plan.manifest_uri == f"s3://{s3_bucket}/{state}manifest.jsonl"
    ledger = merge(r for k, v in out.items() if k.startswith(f"{state}ledger/")
                   for r in parse_records(v.decode(), k))
    assert {uri: r.status for uri, r in ledger.items()} == {
        **{f"s3://{s3_bucket}/in/{k}": "succeeded" for k in GOOD}, bad_uri: "failed"}

    # A replacement pod for the completed shard finds every output there and skips it all.
    index = completed[0]
    ended = await run_pod(worker, f"{name}-{index}-again", secrets, tmp_path, index=index,
                          gpu=FAKE_GPU)
    again = config.ShardReport.from_json(ended.message)
    assert ended.exit_code == 0, ended.stderr[-3000:]
    assert (again.total, again.skipped, again.succeeded, again.failed) == (
        reports[index].total, reports[index].total, 0, 0)
    ledger_objects = [k for k in _s3_keys(s3, s3_bucket, f"{state}ledger/")
                      if f"shard-{index:05d}-" in k]
    assert len(ledger_objects) == 2, ledger_objects  # one per attempt, none overwritten
    rerun = [f"out/{e['uri'].split('/in/', 1)[1].rsplit('.', 1)[0]}.json" for e in manifest
             if e["shard"] == index]
    assert rerun and all(_s3_keys(s3, s3_bucket, k)[k] == out[k] for k in rerun)
