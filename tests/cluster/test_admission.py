"""The TranscriptionJob CRD on the real API server: what it admits, defaults and refuses.

The chart's CRD is installed by the real helm (`release`); every request here goes to the
real kube-apiserver, as `kubectl` sends it (strict field validation), mostly as server-side
dry runs (nothing stored). A refusal must be a 422 whose message names the field, so a user
reading `kubectl apply`'s error knows what to fix. Updates (the immutability rules) patch
objects created for real.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.admission import (
    API_VERSION,
    DELETE,
    REFUSED_WHOLE,
    WITH_VOLUME,
    Admission,
    Answer,
    bound_cases,
    load_crd,
    maximal_value,
    node_at,
    place,
    rules,
    server_field,
    set_path,
    tj,
    version_schema,
)
from tests.cluster.kueue import KueueManager
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.transcription_jobs import tj_path
from tests.cluster.whisperfleet_release import CRD_NAME, Release
from tests.support.crd_schema import walk
from tests.support.paths import REPO
from whisperfleet_operator import spec
from whisperfleet_operator.builders import jobs
from whisperfleet_operator.builders.workorder import work_order_for
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_runner import contract

pytestmark = [pytest.mark.slow]
Obj = dict[str, Any]
EXAMPLE_FILES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def admission(cluster: LocalCluster) -> Admission:
    return Admission(cluster.api_client())


@pytest.fixture(scope="module")
def served_crd(admission: Admission, release: Release) -> Obj:
    """The CRD as the API server holds it (installed by helm from the chart)."""
    answer = admission.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    assert answer.accepted, answer
    return answer.body


@pytest.fixture(scope="module")
def schema(served_crd: Obj) -> Obj:
    return version_schema(served_crd)


@pytest.fixture
def tjs(namespace: str, release: Release) -> str:
    """The TranscriptionJob collection of a fresh namespace."""
    return tj_path(namespace)


# --- judging answers ----------------------------------------------------------------------------


WITH_VOLUME_PATCH = {k.replace("__", "."): v for k, v in WITH_VOLUME.items()}


@dataclass(frozen=True)
class Refusal:
    """A bad TranscriptionJob spec and how the server must refuse it: at `field`, with a
    message containing `says`. `patches` are dotted spec paths (DELETE removes one)."""

    patches: dict[str, Any]
    field: str
    says: str
    status: int = 422

    def body(self, name: str = "bad") -> Obj:
        return tj(name, **{k.replace(".", "__"): v for k, v in self.patches.items()})

    def __str__(self) -> str:
        return f"{self.patches}"[:160]


def refusal_problem(answer: Answer, field: str, says: str, status: int = 422, *,
                    rules_about_it: bool = False) -> str:
    """"" when `answer` refuses for exactly `field` (every cause there or below it) with a
    message containing `says`, named in the message kubectl prints; else what is wrong.
    `rules_about_it`: also allow causes elsewhere whose message names `field` (a CEL rule
    relating it to another field, which the bad value breaks as well)."""
    if answer.status != status:
        return f"expected {status} at {field}, got {answer}"
    if status != 422:  # e.g. 400 for a field the schema does not declare: no causes
        return "" if field in answer.message and says in answer.message else str(answer)
    if f"{field}: " not in answer.message:
        return f"the message does not name {field}: {answer.message}"
    # The scale subresource's own check names its replica paths with a leading dot.
    causes = [(f.removeprefix("."), m) for f, m in answer.causes]
    inside = (f"{field}.", f"{field}[")
    elsewhere = [(f, m) for f, m in causes if f != field and not f.startswith(inside)
                 and not (rules_about_it and field in m)]
    if not causes or elsewhere:
        return f"refused for other fields than {field}: {answer.causes}"
    if not any(f == field and says in m for f, m in causes):
        return f"no cause at {field} says {says!r}: {answer.causes}"
    return ""


def problems_of(cases: list[Any], check: Callable[[Any], str]) -> list[str]:
    """Every case's problem (`check` returns "" when the case holds), labelled by the case."""
    return [f"{case}: {problem}" for case in cases if (problem := check(case))]


# --- examples and defaults ------------------------------------------------------------------------


def unfilled_defaults(node: Obj, value: Any, path: str = "spec") -> list[str]:
    """Paths where the schema has a default but `value` (as stored) has no field."""
    missing: list[str] = []
    if isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value:
                if "default" in sub:
                    missing.append(f"{path}.{key}")
            else:
                missing += unfilled_defaults(sub, value[key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            missing += unfilled_defaults(node["items"], item, f"{path}[{i}]")
    return missing


def test_every_example_is_accepted_and_stored_with_its_defaults(
    cluster: LocalCluster, namespace: str, release: Release, schema: Obj, kueue: KueueManager,
) -> None:
    """`kubectl apply --dry-run=server -f examples/X.yaml`, as the README tells users to apply
    them (without the dry run), including the Secret and PVC some examples ship, and the
    queues of examples/kueue.yaml (Kueue's CRDs and webhooks judge those: `kueue`)."""
    spec_schema = schema["properties"]["spec"]
    kinds = set()
    for path in EXAMPLE_FILES:
        result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path),
                                 "-o", "json", check=False)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
        printed = json.loads(result.stdout)
        stored = printed["items"] if printed.get("kind") == "List" else [printed]
        shipped = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert [o["kind"] for o in stored] == [d["kind"] for d in shipped], path.name
        kinds |= {o["kind"] for o in stored}
        for obj in stored:
            if obj["kind"] != "TranscriptionJob":
                continue
            assert unfilled_defaults(spec_schema, obj["spec"]) == [], path.name
            # What the operator makes of it: the parse refuses what the schema let slip.
            order = work_order_for(spec.parse(obj))
            assert order.input_uri == obj["spec"]["input"]["uri"], path.name
    assert {"TranscriptionJob", "Secret", "PersistentVolumeClaim"} <= kinds


def test_the_server_defaults_a_minimal_job_to_the_runner_config(
    admission: Admission, tjs: str,
) -> None:
    answer = admission.create(tjs, tj("minimal"))
    assert answer.accepted, answer
    stored = answer.body["spec"]
    options, model = contract.TranscriptionOptions(), contract.ModelOptions()
    assert stored["input"]["include"] == list(contract.DEFAULT_INCLUDE)
    assert stored["output"]["formats"] == list(contract.DEFAULT_FORMATS)
    assert stored["output"]["overwrite"] is contract.OutputOptions(uri="x").overwrite
    # No name stored (spec.model.uri may stand in its place): the operator's default applies.
    assert stored["model"] == {"computeType": model.compute_type}
    assert work_order_for(spec.parse(answer.body)).model.name == contract.DEFAULT_MODEL
    assert stored["transcription"] == {
        "language": options.language or "", "task": options.task,
        "beamSize": contract.DEFAULT_BEAM_SIZE, "batchSize": contract.DEFAULT_BATCH_SIZE,
        "vadFilter": options.vad_filter, "wordTimestamps": options.word_timestamps,
        "packShortClips": options.pack_short_clips,
        "initialPrompt": options.initial_prompt or "", "hotwords": options.hotwords or "",
        "languageCandidates": list(options.language_candidates)}
    assert stored["workers"] == {"parallelism": spec.DEFAULT_PARALLELISM, "gpusPerWorker": 1,
                                 "gpu": {"resourceName": spec.DEFAULT_RESOURCE,
                                         "sharing": spec.EXCLUSIVE}}
    # Unset, as a Job's maxFailedIndexes and TTL: no limit, keep.
    assert stored["retries"] == {"perShard": spec.DEFAULT_PER_SHARD_RETRIES}
    assert (stored["shards"], stored["suspend"], stored["queueName"]) == (0, False, "")
    assert stored["activeDeadlineSeconds"] == 0 and "ttlSecondsAfterFinished" not in stored


def test_a_server_defaulted_minimal_job_becomes_the_default_work_order(
    admission: Admission, tjs: str,
) -> None:
    answer = admission.create(tjs, tj("minimal"))
    assert answer.accepted, answer
    stored = answer.body
    parsed = spec.parse(stored)
    order = work_order_for(parsed)
    assert order.include == contract.DEFAULT_INCLUDE
    assert order.output == contract.OutputOptions(uri="s3://media/out/")
    assert order.model == contract.ModelOptions()
    assert order.transcription == contract.TranscriptionOptions()
    assert order.shards == 0
    # The operator's own defaults read the same as the server's (an undefaulted object: a
    # CRD installed without defaults, or an object older than a default).
    bare = {**tj("minimal"), "metadata": stored["metadata"]}
    assert spec.parse(bare) == parsed


def test_a_volume_gets_its_default_mount_path_and_read_write(
    admission: Admission, tjs: str,
) -> None:
    answer = admission.create(tjs, tj(input__uri="file:///data/in/",
                                      storage__volume={"claimName": "media"}))
    assert answer.accepted, answer
    assert answer.body["spec"]["storage"]["volume"] == {
        "claimName": "media", "mountPath": spec.DEFAULT_DATA_MOUNT, "readOnly": False}


# --- refusals of bad values ---------------------------------------------------------------------

VALUE_REFUSALS = [
    Refusal({"input.uri": "http://media/in/"}, "spec.input.uri",
            "spec.input.uri must start with"),
    Refusal({"input.uri": "s3:///in/"}, "spec.input.uri", "spec.input.uri must start with"),
    Refusal({"output.uri": "/tmp/out"}, "spec.output.uri", "spec.output.uri must start with"),
    Refusal({"output.uri": "s3://media/in/"}, "spec.output.uri",
            "spec.output.uri must not be spec.input.uri or inside it"),
    Refusal({"output.uri": "s3://media/in/transcripts"}, "spec.output.uri",
            "spec.output.uri must not be spec.input.uri or inside it"),
    Refusal({"storage.endpoint": "minio:9000"}, "spec.storage.endpoint",
            "spec.storage.endpoint must be an http:// or https:// URL"),
    Refusal({"transcription.language": "EN"}, "spec.transcription.language",
            "spec.transcription.language must be"),
    Refusal({"transcription.language": "de", "transcription.languageCandidates": ["en", "de"]},
            "spec.transcription.languageCandidates",
            "spec.transcription.languageCandidates must be empty when"),
    Refusal({"workers.gpusPerWorker": 0}, "spec.workers.gpusPerWorker",
            "spec.workers.gpusPerWorker must be at least 1"),
    Refusal({"workers.gpu.resourceName": "gpu"}, "spec.workers.gpu.resourceName",
            "spec.workers.gpu.resourceName must be an extended resource name"),
    Refusal({"workers.gpu.minComputeCapability": "eight"},
            "spec.workers.gpu.minComputeCapability",
            "spec.workers.gpu.minComputeCapability must be MAJOR.MINOR"),
    Refusal({"workers.resources": {"limits": {"nvidia.com/gpu": 1}}}, "spec.workers.resources",
            "spec.workers.resources must not ask for nvidia.com/ devices"),
    Refusal({"workers.resources": {"requests": {"nvidia.com/mig-1g.10gb": 1}}},
            "spec.workers.resources", "spec.workers.resources must not ask for nvidia.com/"),
    Refusal({"workers.tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
            "spec.workers.tolerations[0].value",
            "spec.workers.tolerations[].value must be empty when operator is Exists"),
    Refusal({"workers.tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule",
                                      "tolerationSeconds": 60}]},
            "spec.workers.tolerations[0].tolerationSeconds",
            "spec.workers.tolerations[].tolerationSeconds needs effect NoExecute"),
    Refusal({"workers.tolerations": [{"value": "v"}]}, "spec.workers.tolerations[0].operator",
            "spec.workers.tolerations[].operator must be Exists when key is empty"),
    *[Refusal({"storage.volume": {"claimName": "media", "mountPath": path}},
              "spec.storage.volume.mountPath",
              "spec.storage.volume.mountPath must be an absolute path other than /")
      for path in ("data", "/", "/data/", "/data/../etc", "/data//in", "/./data")],
    *[Refusal({"storage.volume": {"claimName": "media", "mountPath": path}},
              "spec.storage.volume.mountPath",
              "spec.storage.volume.mountPath must not be, contain or lie inside a path")
      for path in ("/tmp", "/home", "/var/run/media", "/models/extra", "/opt")],
    Refusal({"model.uri": "https://huggingface.co/openai/whisper-base"}, "spec.model.uri",
            "spec.model.uri must be s3://, gs:// or az:// followed by a bucket"),
    Refusal({"model.uri": "file:///models/base"}, "spec.model.uri",
            "spec.model.uri must be s3://, gs:// or az://"),
    # Two fields together.
    Refusal({"model.name": "large-v3", "model.uri": "s3://models/large-v3/"}, "spec.model",
            "spec.model: give name or uri, not both"),
    Refusal({"workers.gpusPerWorker": 2, "workers.gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}},
            "spec.workers.gpusPerWorker",
            "spec.workers.gpusPerWorker must be 1 when spec.workers.gpu.resourceName is a MIG"),
    # GPU modes: MIG single products, shared GPUs.
    Refusal({"workers.gpusPerWorker": 2,
             "workers.gpu": {"products": ["NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"]}},
            "spec.workers.gpusPerWorker",
            "spec.workers.gpusPerWorker must be 1 when spec.workers.gpu.products name MIG"),
    Refusal({"workers.gpu": {"resourceName": "nvidia.com/mig-1g.10gb",
                             "products": ["NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"]}},
            "spec.workers.gpu.products",
            "spec.workers.gpu.products name MIG slices (-MIG-<profile>, the \"single\""),
    Refusal({"workers.gpu": {"products": ["Tesla-T4-SHARED"]}}, "spec.workers.gpu.products[0]",
            "spec.workers.gpu.products[] names the GPU without GFD's -SHARED suffix"),
    Refusal({"workers.gpu": {"sharing": "Shared"}}, "spec.workers.gpu.memoryBudgetMiB",
            "spec.workers.gpu.memoryBudgetMiB is required when spec.workers.gpu.sharing is"),
    Refusal({"workers.gpu": {"resourceName": "nvidia.com/gpu.shared"}},
            "spec.workers.gpu.resourceName",
            "spec.workers.gpu.resourceName names a shared GPU (time-slicing with"),
    Refusal({"workers.gpu": {"sharing": "Shared", "memoryBudgetMiB": 4096,
                             "deviceClassName": "gpu.nvidia.com"}},
            "spec.workers.gpu.sharing",
            "spec.workers.gpu.sharing Shared applies to device-plugin GPUs"),
    Refusal({"workers.gpu": {"sharing": "Shared", "memoryBudgetMiB": 4096,
                             "products": ["N" * 57]}},
            "spec.workers.gpu.products",
            "spec.workers.gpu.products[] may be at most 56 characters with sharing Shared"),
    Refusal({"workers.gpusPerWorker": 2, "workers.gpu": {"sharing": "Shared",
                                                         "memoryBudgetMiB": 4096}},
            "spec.workers.gpusPerWorker",
            "spec.workers.gpusPerWorker must be 1 when spec.workers.gpu.sharing is"),
    # Volumes and mounts: what the pods (or the restricted Pod Security level) would refuse.
    Refusal({"workers.volumes": [{"name": "host", "hostPath": {"path": "/etc"}}]},
            "spec.workers.volumes[0].hostPath",
            "spec.workers.volumes[].hostPath is forbidden: the pods run under the restricted"),
    Refusal({"workers.volumes": [{"name": "nothing"}]}, "spec.workers.volumes[0]",
            "spec.workers.volumes[] needs one of configMap, secret, persistentVolumeClaim"),
    *[Refusal({"workers.volumes": [{"name": name, "emptyDir": {}}]},
              "spec.workers.volumes[0].name",
              "spec.workers.volumes[].name must not be one the pods use already")
      for name in ("tmp", "home", "data", "model-cache", "hub-ca")],
    Refusal({"workers.volumes": [{"name": "ca", "emptyDir": {}}],
             "workers.volumeMounts": [{"name": "cert", "mountPath": "/etc/ssl/ca"}]},
            "spec.workers.volumeMounts",
            "spec.workers.volumeMounts[].name must name a volume of spec.workers.volumes"),
    *[Refusal({**WITH_VOLUME_PATCH, "workers.volumeMounts": [{"name": "v0", "mountPath": path}]},
              "spec.workers.volumeMounts[0].mountPath",
              "spec.workers.volumeMounts[].mountPath must be an absolute path other than /")
      for path in ("etc/ssl/ca", "/", "/etc/ssl/", "/etc/../ca", "/etc//ca")],
    *[Refusal({**WITH_VOLUME_PATCH, "workers.volumeMounts": [{"name": "v0", "mountPath": path}]},
              "spec.workers.volumeMounts[0].mountPath",
              "spec.workers.volumeMounts[].mountPath must not be, contain or lie inside a path")
      for path in ("/tmp", "/home", "/etc", "/usr/local/share", "/etc/whisperfleet/hub-ca",
                   "/var/run/nvidia-container-devices")],
    *[Refusal({**WITH_VOLUME_PATCH, "workers.volumeMounts": [
                  {"name": "v0", "mountPath": "/etc/ca", "subPath": path}]},
              "spec.workers.volumeMounts[0].subPath",
              "spec.workers.volumeMounts[].subPath must be relative, without .. segments")
      for path in ("/ca.crt", "../ca.crt")],
    *[Refusal({"workers.volumes": [{"name": "c", which: {key: "c", "items": [
                  {"key": "ca.crt", "path": "../ca.crt"}]}}]},
              f"spec.workers.volumes[0].{which}.items[0].path",
              f"spec.workers.volumes[].{which}.items[].path must be relative")
      for which, key in (("configMap", "name"), ("secret", "secretName"))],
    Refusal({**WITH_VOLUME_PATCH, "storage.volume": {"claimName": "media", "mountPath": "/mnt"},
             "workers.volumeMounts": [{"name": "v0", "mountPath": "/mnt/ca"}]},
            "spec.workers.volumeMounts",
            "spec.workers.volumeMounts[].mountPath must not be, contain or lie inside spec."),
    Refusal({"shards": 2, "retries": {"maxFailedShards": 3}}, "spec.retries.maxFailedShards",
            "spec.retries.maxFailedShards must not exceed spec.shards"),
    # What the worker Job's (or its pods') validation would refuse, refused here first.
    Refusal({"workers.nodeSelector": {"gpu pool": "a"}}, "spec.workers.nodeSelector",
            "spec.workers.nodeSelector keys must be label keys"),
    *[Refusal({"workers.env": [{"name": name, "value": "x"}]}, "spec.workers.env[0].name",
              "spec.workers.env[].name must not start with WHISPERFLEET_, CUDA_ or NVIDIA_")
      for name in ("WHISPERFLEET_WORK_ORDER", "CUDA_VISIBLE_DEVICES", "HOME", "AWS_REGION")],
    Refusal({"workers.podLabels": {"Team/x": "a"}}, "spec.workers.podLabels",
            "spec.workers.podLabels keys must be label keys"),
    Refusal({"workers.podAnnotations": {"a b": "c"}}, "spec.workers.podAnnotations",
            "spec.workers.podAnnotations keys must be qualified names"),
    Refusal({"workers.image": "runner:1 "}, "spec.workers.image",
            "spec.workers.image must not have leading or trailing whitespace"),
    *[Refusal({"workers.resources": {which: {name: 1}}}, f"spec.workers.resources.{which}",
              f"spec.workers.resources.{which} names must be cpu, memory, ephemeral-storage")
      for which, name in (("limits", "requests.example.com/fpga"), ("requests", "fpga"))],
    *[Refusal({"workers.resources": {which: {"cpu": "-500m"}}},
              f"spec.workers.resources.{which}",
              f"spec.workers.resources.{which} must not be negative")
      for which in ("limits", "requests")],
    Refusal({"workers.resources": {"limits": {"example.com/fpga": "0.5"}}},
            "spec.workers.resources.limits", "spec.workers.resources.limits of an extended"),
    Refusal({"workers.resources": {"requests": {"example.com/fpga": "500m"},
                                   "limits": {"example.com/fpga": 1}}},
            "spec.workers.resources.requests", "spec.workers.resources.requests of an extended"),
    Refusal({"workers.resources": {"requests": {"memory": "64Gi"}, "limits": {"memory": "32Gi"}}},
            "spec.workers.resources.requests",
            "spec.workers.resources.requests must not exceed spec.workers.resources.limits"),
    Refusal({"workers.resources": {"requests": {"hugepages-2Mi": "2Mi", "memory": "1Gi"}}},
            "spec.workers.resources.limits",
            "spec.workers.resources.limits must be set for every hugepages-* and extended"),
    Refusal({"workers.resources": {"requests": {"example.com/fpga": 1},
                                   "limits": {"example.com/fpga": 2}}},
            "spec.workers.resources.requests",
            "spec.workers.resources.requests of a hugepages-* or extended (domain/name) resource"
            " must equal its limit"),
    Refusal({"workers.resources": {"limits": {"hugepages-2Mi": "2Mi"}}}, "spec.workers.resources",
            "spec.workers.resources with hugepages-* must also set cpu or memory"),
]


@dataclass(frozen=True)
class PlacedRefusal:
    """A bad value at a schema path (`walk` form; repeated in every affinity copy), refused at
    `field` (the server's name for it) with a message containing `says`."""

    path: str
    value: Any
    field: str
    says: str
    status: int = 422

    def body(self, name: str = "bad") -> Obj:
        return place(tj(name), SHIPPED_SCHEMA, self.path, self.value)

    def __str__(self) -> str:
        return f"{self.path}: {self.value}"[:200]


SHIPPED_SCHEMA = version_schema(load_crd())


def _affinity_refusals() -> list[PlacedRefusal]:
    """For every selector requirement, label map and pod-affinity term in the affinity's
    copies of core/v1 types: each rule the Job's validation has there, broken."""
    cases = []
    for path, node in walk(SHIPPED_SCHEMA):
        if not path.startswith("spec.workers.affinity"):
            continue
        at = server_field(path)
        if path.endswith(".matchFields[]"):
            cases.append(PlacedRefusal(path, {"key": "metadata.name", "operator": "In",
                                              "values": ["a", "b"]}, f"{at}.values",
                                       "values must hold exactly one node name"))
        elif path.endswith(".matchExpressions[]"):
            cases += [
                PlacedRefusal(path, {"key": "k", "operator": "NotIn"}, f"{at}.values",
                              "values must not be empty when operator is In or NotIn"),
                PlacedRefusal(path, {"key": "k", "operator": "DoesNotExist", "values": ["a"]},
                              f"{at}.values",
                              "values must be empty when operator is Exists or DoesNotExist")]
            if "Gt" in node["properties"]["operator"]["enum"]:
                cases.append(PlacedRefusal(path, {"key": "k", "operator": "Lt", "values": []},
                                           f"{at}.values",
                                           "values must hold exactly one value when operator is"))
        elif path.endswith(".matchLabels"):
            cases.append(PlacedRefusal(path, {"Team/x": "a"}, at, "keys must be label keys"))
        elif "topologyKey" in node.get("required", []):
            cases += [
                PlacedRefusal(path, {"topologyKey": "zone", "matchLabelKeys": ["app"]},
                              f"{at}.matchLabelKeys", "matchLabelKeys needs labelSelector"),
                PlacedRefusal(path, {"topologyKey": "zone", "mismatchLabelKeys": ["app"]},
                              f"{at}.mismatchLabelKeys", "mismatchLabelKeys needs labelSelector"),
                PlacedRefusal(path, {"topologyKey": "zone", "labelSelector": {},
                                     "matchLabelKeys": ["app"], "mismatchLabelKeys": ["app"]},
                              f"{at}.matchLabelKeys",
                              "matchLabelKeys must not name a key that mismatchLabelKeys names")]
    return cases


AFFINITY_REFUSALS = _affinity_refusals()

# file:// URIs name paths inside the pods, so they need spec.storage.volume and must lie
# under its mountPath.
MEDIA = {"claimName": "media"}  # mountPath defaults to /data
UNDER_MOUNT = "must be file://<spec.storage.volume.mountPath> or a path under it"
VOLUME_REFUSALS = [
    Refusal({"input.uri": "file:///data/in/"}, "spec.input.uri",
            "spec.input.uri is a file:// path, which needs spec.storage.volume"),
    Refusal({"output.uri": "file:///data/out/", "storage": {"secretName": "s3"}},
            "spec.output.uri",
            "spec.output.uri is a file:// path, which needs spec.storage.volume"),
    Refusal({"input.uri": "file:///mnt/in/", "storage.volume": MEDIA}, "spec.input.uri",
            f"spec.input.uri {UNDER_MOUNT}"),
    # A string prefix is not enough: /database is not under /data.
    Refusal({"input.uri": "file:///database/in/", "storage.volume": MEDIA}, "spec.input.uri",
            f"spec.input.uri {UNDER_MOUNT}"),
    Refusal({"input.uri": "file:///data/../etc/", "storage.volume": MEDIA}, "spec.input.uri",
            f"spec.input.uri {UNDER_MOUNT}"),
    Refusal({"output.uri": "file:///data/out/../../root/", "storage.volume": MEDIA},
            "spec.output.uri", f"spec.output.uri {UNDER_MOUNT}"),
    Refusal({"output.uri": "file:///srv/out/",
             "storage.volume": {"claimName": "media", "mountPath": "/srv/media"}},
            "spec.output.uri", f"spec.output.uri {UNDER_MOUNT}"),
    Refusal({"output.uri": "file:///data/out/", "storage.volume": {**MEDIA, "readOnly": True}},
            "spec.storage.volume.readOnly",
            "spec.storage.volume.readOnly must be false when spec.output.uri is file://"),
]

# What the OpenAPI schema refuses, in the server's words.
SCHEMA_REFUSALS = [
    Refusal({"output.formats": ["json", "pdf"]}, "spec.output.formats[1]",
            'Unsupported value: "pdf"'),
    Refusal({"output.formats": ["json", "json"]}, "spec.output.formats[1]",
            'Duplicate value: "json"'),
    Refusal({"output": DELETE}, "spec.output", "Required value"),
    Refusal({"model.computeType": "int8_float32"}, "spec.model.computeType",
            'Unsupported value: "int8_float32"'),
    Refusal({"transcription.task": "summarize"}, "spec.transcription.task",
            'Unsupported value: "summarize"'),
    Refusal({"transcription.languageCandidates": ["en", "xx"]},
            "spec.transcription.languageCandidates[1]", 'Unsupported value: "xx"'),
    Refusal({"transcription.languageCandidates": ["en", "EN"]},
            "spec.transcription.languageCandidates[1]", 'Unsupported value: "EN"'),
    Refusal({"transcription.beamSize": 0}, "spec.transcription.beamSize",
            "should be greater than or equal to 1"),
    Refusal({"workers.parallelism": 0}, "spec.workers.parallelism",
            "should be greater than or equal to 1"),
    # Not in the schema: kubectl's strict field validation makes it a 400, not a 422 (and
    # without it the server would silently drop the field).
    Refusal({"workers.gpus": 2}, "spec.workers.gpus", 'unknown field "spec.workers.gpus"',
            status=400),
    Refusal({"storage.secretName": "S3_Creds"}, "spec.storage.secretName", "should match"),
    Refusal({"storage.volume": {"mountPath": "/data"}}, "spec.storage.volume.claimName",
            "Required value"),
    Refusal({"input.include": [f"*.x{i}" for i in range(65)]}, "spec.input.include",
            "Too many: 65: must have at most 64 items"),
    Refusal({"workers.imagePullSecrets": [{"name": "a"}, {"name": "a"}]},
            "spec.workers.imagePullSecrets[1]", 'Duplicate value: {"name":"a"}'),
    Refusal({"workers.resources": {"requests": {"cpu": "lots"}}},
            "spec.workers.resources.requests.cpu", "should match"),
    # Worker options the Job would refuse later (the TranscriptionJob would be admitted and
    # only its worker Job refused, after planning).
    Refusal({"workers.nodeSelector": {"pool": "gpu pool"}}, "spec.workers.nodeSelector.pool",
            "should match"),
    Refusal({"workers.affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}},
        "spec.workers.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms", "should have at least 1 items"),
    Refusal({"workers.affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "bad key", "operator": "Exists"}]}]}}}},
        "spec.workers.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key", "should match"),
    Refusal({"workers.tolerations": [{"key": "bad key", "operator": "Exists"}]},
            "spec.workers.tolerations[0].key", "should match"),
]


def create_problem(admission: Admission,
                   tjs: str) -> Callable[[Refusal | PlacedRefusal], str]:
    return lambda case: refusal_problem(admission.create(tjs, case.body()), case.field,
                                        case.says, case.status)


def test_cel_rules_refuse_bad_values_naming_the_field(admission: Admission, tjs: str) -> None:
    assert problems_of(VALUE_REFUSALS, create_problem(admission, tjs)) == []


def test_affinity_refuses_what_the_job_would_in_every_copy_naming_the_field(
    admission: Admission, tjs: str,
) -> None:
    """matchFields only In/NotIn with one value, values as the operator needs them, label
    keys in matchLabels, label keys that need a labelSelector: in node affinity (required
    and preferred) and in pod (anti-)affinity's label and namespace selectors alike."""
    assert len(AFFINITY_REFUSALS) == 2 * 3 + 2 + 8 * 2 + 8 + 4 * 3
    assert problems_of(AFFINITY_REFUSALS, create_problem(admission, tjs)) == []


def test_file_uris_need_the_volume_and_must_lie_under_its_mount_path(
    admission: Admission, tjs: str,
) -> None:
    assert problems_of(VOLUME_REFUSALS, create_problem(admission, tjs)) == []


def test_the_schema_refuses_bad_values_naming_the_field(admission: Admission, tjs: str) -> None:
    assert problems_of(SCHEMA_REFUSALS, create_problem(admission, tjs)) == []


@pytest.mark.parametrize("patches", [
    {"input__uri": "file:///data/in/", "output__uri": "file:///data/out/",
     "storage__volume": MEDIA},
    # The whole volume as input, a single file, and an input-only read-only volume.
    {"input__uri": "file:///data", "output__uri": "s3://media/out/", "storage__volume": MEDIA},
    {"input__uri": "file:///data/a..b/talk.wav", "storage__volume": {**MEDIA, "readOnly": True}},
    {"output__uri": "file:///mnt/media/out/",
     "storage__volume": {"claimName": "media", "mountPath": "/mnt/media"}},
    # A volume next to object storage is simply mounted.
    {"storage__volume": {"claimName": "media", "mountPath": "/opt/media"}},
    # An input object whose name is a prefix of the output is not "inside" it.
    {"input__uri": "s3://media/in", "output__uri": "s3://media/in-out/"},
], ids=["both", "whole-volume", "read-only-input", "mnt", "unused", "prefix-not-inside"])
def test_good_uris_and_volumes_are_admitted(
    admission: Admission, tjs: str, patches: dict[str, Any],
) -> None:
    answer = admission.create(tjs, tj(**patches))
    assert answer.accepted, answer


def test_the_mount_path_may_not_shadow_any_path_the_pods_use(
    admission: Admission, tjs: str,
) -> None:
    # Taken from the pods the operator builds, so a new mount there cannot be forgotten here.
    answer = admission.create(tjs, tj(model={"cacheVolume": {"claimName": "models"}}))
    assert answer.accepted, answer
    worker = jobs.build_worker_job(spec.parse(answer.body), contract.PlanReport(shards=1),
                                   OperatorSettings())
    [container] = worker["spec"]["template"]["spec"]["containers"]
    used = {m["mountPath"] for m in container["volumeMounts"]}
    used |= {str(Path(contract.TERMINATION_MESSAGE_PATH).parent), contract.MODEL_CACHE_MOUNT}
    assert {"/tmp", "/home/whisperfleet", "/models", "/dev"} <= used
    cases = [Refusal({"storage.volume": {"claimName": "m", "mountPath": path}},
                     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must not be")
             for path in sorted(used)]
    assert problems_of(cases, create_problem(admission, tjs)) == []


# --- every schema bound --------------------------------------------------------------------------


def test_every_bound_of_the_spec_refuses_a_value_beyond_it(
    admission: Admission, tjs: str, schema: Obj,
) -> None:
    """Each maxLength, minLength, maxItems, minItems, maxProperties, minimum, maximum, enum
    and pattern under spec, broken alone in an otherwise valid object."""
    cases = bound_cases(schema, "spec")
    assert len(cases) > 100  # the walk found the schema

    def check(case: Any) -> str:
        body = place(tj("bound", **WITH_VOLUME), schema, case.path, case.value)
        return refusal_problem(admission.create(tjs, body), server_field(case.path), case.says,
                               rules_about_it=True)

    assert problems_of(cases, check) == []


def test_every_bound_of_the_status_refuses_a_value_beyond_it(
    admission: Admission, tjs: str, schema: Obj,
) -> None:
    """The same for status, written through the status subresource as the operator does."""
    admission.created(tjs, tj("status-bounds"))
    cases = bound_cases(schema, "status")
    assert len(cases) > 20

    def check(case: Any) -> str:
        status = place({"status": {}}, schema, case.path, case.value)["status"]
        answer = replace_status(admission, f"{tjs}/status-bounds", status)
        return refusal_problem(answer, server_field(case.path), case.says)

    assert problems_of(cases, check) == []


# --- updates: immutable except suspend and workers.parallelism ------------------------------------

# One change per field; together they must cover every field of spec and spec.workers.
CHANGES: dict[str, Any] = {
    "input": {"uri": "s3://media/other/"},
    "output": {"uri": "s3://media/out/", "formats": ["json"]},
    "storage": {"secretName": "other"},
    "model": {"name": "tiny.en"},
    "transcription": {"beamSize": 1},
    "shards": 7,
    "retries": {"perShard": 0},
    "activeDeadlineSeconds": 60,
    "ttlSecondsAfterFinished": 60,
    "queueName": "q",
    "workers.gpusPerWorker": 2,
    "workers.gpu": {"products": ["NVIDIA-L4"]},
    "workers.nodeSelector": {"pool": "gpu"},
    "workers.tolerations": [{"key": "gpu", "operator": "Exists"}],
    "workers.affinity": {"podAntiAffinity": {}},
    "workers.priorityClassName": "batch",
    "workers.resources": {"limits": {"memory": "8Gi"}},
    "workers.image": "runner:2",
    "workers.imagePullSecrets": [{"name": "regcred"}],
    "workers.env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    "workers.podLabels": {"team": "speech"},
    "workers.podAnnotations": {"sidecar.istio.io/inject": "false"},
    "workers.serviceAccountName": "transcribers",
    "workers.runtimeClassName": "nvidia",
    "workers.volumes": [{"name": "v0", "configMap": {"name": "store-ca"}}],
    "workers.volumeMounts": [{"name": "v0", "mountPath": "/etc/ssl/private-ca"}],
}


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch that turns `old` into `new` (null removes a field)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return copy.deepcopy(new)
    patch = {key: None for key in old if key not in new}
    patch.update({key: merge_patch(old.get(key), value) for key, value in new.items()
                  if old.get(key) != value})
    return patch


def immutable(field: str) -> str:
    return f"spec.{field} is immutable"


def test_the_immutability_cases_cover_every_spec_field(schema: Obj) -> None:
    fields = schema["properties"]["spec"]["properties"]
    covered = {k for k in fields if k not in ("suspend", "workers")}
    covered |= {f"workers.{k}" for k in fields["workers"]["properties"] if k != "parallelism"}
    assert set(CHANGES) == covered


def test_changing_adding_or_removing_a_field_after_creation_is_refused(
    admission: Admission, tjs: str,
) -> None:
    base = tj("base", **WITH_VOLUME)
    admission.created(tjs, base)

    def changed(field: str) -> str:
        patch: Obj = {}
        set_path(patch, f"spec.{field}", CHANGES[field])
        answer = admission.merge_patch(f"{tjs}/base", patch)
        return refusal_problem(answer, f"spec.{field}", immutable(field))

    def reverted(field: str) -> str:
        # Created with the field set, then patched back to the base: for an optional field
        # that removes it (and the default, if any, comes back), which is a change too.
        name = "with-" + re.sub(r"[^a-z0-9]+", "-", field.lower())
        body = copy.deepcopy(base)
        body["metadata"]["name"] = name
        set_path(body["spec"], field, CHANGES[field])
        admission.created(tjs, body)
        answer = admission.merge_patch(f"{tjs}/{name}",
                                       {"spec": merge_patch(body["spec"], base["spec"])})
        return refusal_problem(answer, f"spec.{field}", immutable(field))

    assert problems_of(list(CHANGES), changed) == []
    assert problems_of(list(CHANGES), reverted) == []


def test_the_data_volume_cannot_be_swapped_after_creation(admission: Admission, tjs: str) -> None:
    admission.created(tjs, tj("on-volume", input__uri="file:///data/in/", storage__volume=MEDIA))
    swaps = [{"claimName": "other"}, {"mountPath": "/mnt"}, {"readOnly": True}]

    def check(swap: Obj) -> str:
        volume = {**MEDIA, **swap}
        patch = {"spec": {"storage": {"volume": swap}, "input": {
            "uri": f"file://{volume.get('mountPath', '/data')}/in/"}}}
        answer = admission.merge_patch(f"{tjs}/on-volume", patch)
        causes = [(f, m) for f, m in answer.causes if f == "spec.storage"]
        if answer.status != 422 or not any(immutable("storage") in m for _, m in causes):
            return f"not refused as {immutable('storage')}: {answer}"
        return ""

    assert problems_of(swaps, check) == []


def test_an_edit_deep_inside_affinity_is_refused(admission: Admission, tjs: str) -> None:
    [example] = yaml.safe_load_all((REPO / "examples" / "multi-gpu.yaml").read_text())
    created = admission.created(tjs, example)
    affinity = copy.deepcopy(created["spec"]["workers"]["affinity"])
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    terms[0]["matchExpressions"][0]["values"] = ["eu-west-1a"]
    answer = admission.merge_patch(f"{tjs}/{example['metadata']['name']}",
                                   {"spec": {"workers": {"affinity": affinity}}})
    assert refusal_problem(answer, "spec.workers.affinity", immutable("workers.affinity")) == ""


def test_suspend_parallelism_set_order_and_status_may_change(
    admission: Admission, tjs: str,
) -> None:
    admission.created(tjs, tj("mutable", input__include=["*.wav", "*.mp3"]))
    answer = admission.merge_patch(f"{tjs}/mutable", {"spec": {
        "suspend": True, "workers": {"parallelism": 9},
        "input": {"include": ["*.mp3", "*.wav"]}}})  # a set: order is not a change
    assert answer.accepted, answer
    assert answer.body["spec"]["workers"]["parallelism"] == 9
    answer = replace_status(admission, f"{tjs}/mutable",
                            {"phase": "Suspended", "files": {"total": 3, "succeeded": 1}})
    assert answer.accepted, answer


# --- every CEL rule -------------------------------------------------------------------------------


def test_every_cel_rule_refuses_one_of_the_cases_naming_its_field(
    admission: Admission, tjs: str, schema: Obj,
) -> None:
    """Every x-kubernetes-validations rule of the CRD the server holds is the reason the
    server gave for refusing at least one case above, at the field the rule names."""
    answers = [admission.create(tjs, case.body())
               for case in [*VALUE_REFUSALS, *VOLUME_REFUSALS, *AFFINITY_REFUSALS]]
    admission.created(tjs, tj("rules-base"))
    for field, value in CHANGES.items():
        patch: Obj = {}
        set_path(patch, f"spec.{field}", value)
        answers.append(admission.merge_patch(f"{tjs}/rules-base", patch))
    given = {cause for answer in answers for cause in answer.causes}
    all_rules = list(rules(schema))
    assert len(all_rules) >= 40
    unrefused = [rule["message"] for path, rule in all_rules
                 if not any(f == server_field(path + rule.get("fieldPath", ""))
                            and rule["message"] in m for f, m in given)]
    assert unrefused == []


# --- status ---------------------------------------------------------------------------------------


def replace_status(admission: Admission, tj_object_path: str, status: Obj) -> Answer:
    """A dry-run write of the whole status through the status subresource."""
    return admission.json_patch(f"{tj_object_path}/status",
                                [{"op": "add", "path": "/status", "value": status}])


def operator_status() -> Obj:
    return {
        "phase": "PartiallySucceeded", "observedGeneration": 1,
        "conditions": [{"type": "Complete", "status": "True", "reason": "SomeFilesFailed",
                        "message": "1 of 3 files failed", "observedGeneration": 1,
                        "lastTransitionTime": "2024-11-02T10:00:00Z"},
                       {"type": "Running", "status": "False", "reason": "PartiallySucceeded",
                        "message": "2 of 3 files done", "observedGeneration": 1,
                        "lastTransitionTime": "2024-11-02T10:00:00Z"}],
        "files": {"total": 3, "succeeded": 2, "failed": 1, "skipped": 0},
        "filesSummary": "2/3", "audioSeconds": 3725.5, "audioDuration": "1h02m",
        "shards": {"total": 2, "succeeded": 1, "failed": 1, "active": 0},
        "workers": [{"pod": "w-0", "node": "n1", "gpus": [
            {"uuid": "GPU-1", "name": "NVIDIA H100", "memoryMiB": 81559, "deviceIndex": 0}]}],
        "failures": [{"uri": "s3://media/in/bad.mp3", "reason": "undecodable audio"}],
        "jobName": "t-work", "manifestUri": "s3://media/out/.whisperfleet/u/manifest.jsonl",
        "model": "s3://models/large-v3/",
        "startTime": "2024-11-02T09:00:00Z", "completionTime": "2024-11-02T10:00:00Z",
    }


def test_an_operator_status_is_valid_and_bounded(admission: Admission, tjs: str) -> None:
    admission.created(tjs, tj("with-status"))
    path = f"{tjs}/with-status"
    status = operator_status()
    answer = replace_status(admission, path, status)
    assert answer.accepted, answer
    assert answer.body["status"] == status
    # Whatever fits a shard's termination message fits the status.
    longest = "x" * contract.TERMINATION_MESSAGE_LIMIT
    status["failures"] = [{"uri": longest, "reason": longest}]
    assert replace_status(admission, path, status).accepted
    too_many = {**status, "failures": status["failures"] * 21}
    assert refusal_problem(replace_status(admission, path, too_many), "status.failures",
                           "Too many: 21: must have at most 20 items") == ""
    assert refusal_problem(replace_status(admission, path, {"phase": "Done"}), "status.phase",
                           'Unsupported value: "Done"') == ""


def test_statuses_the_operator_writes_are_accepted(admission: Admission, tjs: str) -> None:
    # The server refuses a status patch that breaks the schema, and the status would stay
    # stale: every status the operator's builders make must pass, oversized reports included.
    from whisperfleet_operator import status as st

    stored = admission.created(tjs, tj("operator-status"))
    job = spec.parse(stored)
    now = "2024-11-02T10:00:00Z"
    plan = contract.PlanReport(files=4, bytes=10, shards=3, manifest_uri="s3://media/out/m.jsonl")
    planned = st.planning_status(job, {}, st.PlannerOutcome("succeeded", plan), "t-plan", now)
    long_key = "s3://media/in/" + "k" * 3000 + ".mp3"
    reports = [contract.ShardReport(
        shard=i, total=2, succeeded=1, failed=1, audio_seconds=4000.0, pod=f"t-work-{i}",
        node="n1", gpus=[contract.GpuIdentity(uuid=f"GPU-{i}", name="NVIDIA H100 80GB HBM3",
                                            memory_mib=81559, device_index=0)],
        failures=[contract.FileFailure(uri=long_key, reason="undecodable audio")],
    ).to_json() for i in range(2)]
    # A report far beyond what a termination message holds, every text oversized.
    huge = json.loads(reports[0])
    huge.update(shard=2, pod="p" * 300, node="n" * 300, error_reason="Storage Error!",
                error_message="m" * 40000,
                gpus=[{"uuid": f"GPU-{i}-" + "u" * 200, "name": "N" * 300, "memory_mib": -1,
                       "device_index": i} for i in range(40)],
                failures=[{"uri": f"s3://media/in/{i}-" + "k" * 5000, "reason": "r" * 5000}
                          for i in range(30)])
    reports.append(json.dumps(huge))
    pods = [{"metadata": {"name": f"t-work-{i}", "annotations": {
                "batch.kubernetes.io/job-completion-index": str(i)}},
             "spec": {"nodeName": "n1"},
             "status": {"phase": "Succeeded", "containerStatuses": [
                 {"state": {"terminated": {"message": report, "finishedAt": now}}}]}}
            for i, report in enumerate(reports)]
    worker_job = {"metadata": {"name": "t-work"}, "status": {
        "completedIndexes": "0-2", "completionTime": now,
        "conditions": [{"type": "Complete", "status": "True"}]}}
    running = st.running_status(job, planned, worker_job, pods, now)
    assert running["workers"] and len(running["failures"]) == 20
    running["progress"] = {"filesDone": 3, "audioSecondsDone": 8000.0, "throughput": 2.2,
                           "eta": "4m10s", "summary": "75%", "updateTime": now}
    invalid = st.invalid_spec_status({}, 1, "spec.input.uri must start with s3://", now)
    statuses = {"planned": planned, "running": running, "invalid": invalid}
    answers = {name: replace_status(admission, f"{tjs}/operator-status", status)
               for name, status in statuses.items()}
    assert {name: str(a) for name, a in answers.items() if not a.accepted} == {}
    # Nothing is pruned: a field the schema lacks would silently vanish (foldedShards
    # vanishing would make every reconcile count the finished shards again).
    for name, status in statuses.items():
        kept = answers[name].body["status"]
        assert set(kept) == set(status), name
        assert set(kept.get("progress") or {}) == set(status.get("progress") or {}), name


# --- the CEL cost budget --------------------------------------------------------------------------


def test_the_crd_is_established_with_its_names_accepted(served_crd: Obj) -> None:
    # The server refuses a CRD whose rules' estimated cost exceeds its budget: installed and
    # Established means the estimate fit.
    conditions = {c["type"]: c["status"] for c in served_crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert served_crd["status"]["acceptedNames"]["shortNames"] == ["tj"]


def test_the_server_keeps_every_field_of_the_crd_file(
    admission: Admission, served_crd: Obj,
) -> None:
    # A key the server does not know would be dropped on the way in (a misspelt
    # x-kubernetes-validations would silently disable its rules): what it holds must be
    # exactly the file, and a misspelling sent with strict field validation is refused.
    shipped = load_crd()
    assert served_crd["spec"]["versions"] == shipped["spec"]["versions"]
    assert served_crd["spec"]["names"] == shipped["spec"]["names"]
    misspelt = copy.deepcopy(shipped)
    workers = version_schema(misspelt)["properties"]["spec"]["properties"]["workers"]
    workers["x-kubernetes-validation"] = workers.pop("x-kubernetes-validations")
    answer = admission.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                              misspelt)
    assert answer.status == 400, answer
    assert 'unknown field "spec.versions[0].schema.openAPIV3Schema.properties.spec.properties' \
           '.workers.x-kubernetes-validation"' in answer.message


def test_a_maximal_object_stays_within_the_per_object_cost_budget(
    admission: Admission, tjs: str, schema: Obj,
) -> None:
    """Every list at maxItems, every map at maxProperties, strings outside lists at maxLength
    (about 1.5 MB, just under etcd's request limit): created for real, then updated so that
    the transition rules compare the whole of it."""
    body = {"apiVersion": API_VERSION, "kind": "TranscriptionJob",
            "metadata": {"name": "maximal"},
            "spec": maximal_value(schema["properties"]["spec"], "spec")}
    created = admission.create(tjs, body, dry_run=False)
    assert created.accepted, f"{len(json.dumps(body))} bytes: {str(created)[:2000]}"
    # parallelism may change: every rule runs on the maximal values and passes.
    answer = admission.merge_patch(f"{tjs}/maximal", {"spec": {"workers": {"parallelism": 7}}})
    assert answer.accepted, str(answer)[:2000]
    # An edit in the last item of the largest list: the equality ran to the end, and the
    # refusal is immutability, not the budget.
    affinity = copy.deepcopy(body["spec"]["workers"]["affinity"])
    affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][-1][
        "weight"] = 1
    answer = admission.merge_patch(f"{tjs}/maximal",
                                   {"spec": {"workers": {"affinity": affinity}}})
    assert refusal_problem(answer, "spec.workers.affinity", immutable("workers.affinity")) == ""


# --- kubectl: printer columns, explain, scale ---------------------------------------------------

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def test_kubectl_get_shows_the_printer_columns(
    cluster: LocalCluster, admission: Admission, namespace: str, tjs: str,
) -> None:
    admission.created(tjs, tj("shown"))
    # Not a dry run: the columns come from a stored status. (A running operator may write
    # its own status meanwhile; the cells are compared with the object they were read with.)
    answer = admission.json_patch(f"{tjs}/shown/status",
                                  [{"op": "add", "path": "/status", "value": operator_status()}],
                                  dry_run=False)
    assert answer.accepted, answer
    header = cluster.kubectl("get", "tj", "shown", "-n", namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "PHASE", "FILES", "FAILED", "AUDIO", "PROGRESS", "ETA",
                              "AGE", "MESSAGE"]
    wide = cluster.kubectl("get", "tj", "shown", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[9:] == ["THROUGHPUT", "WORKERS", "MODEL", "JOB"]

    table = admission.get(f"{tjs}/shown", accept=TABLE, params={"includeObject": "Object"})
    assert table.accepted, table
    names = [c["name"] for c in table.body["columnDefinitions"]]
    assert names == ["Name", "Phase", "Files", "Failed", "Audio", "Progress", "ETA", "Age",
                     "Message", "Throughput", "Workers", "Model", "Job"]
    [row] = table.body["rows"]
    cells = dict(zip(names, row["cells"], strict=True))
    obj = row["object"]
    status = obj.get("status") or {}
    assert cells["Name"] == "shown"
    assert cells["Phase"] == status.get("phase")
    assert cells["Files"] == status.get("filesSummary")
    assert cells["Failed"] == (status.get("files") or {}).get("failed")
    assert cells["Audio"] == status.get("audioDuration")
    assert cells["Progress"] == (status.get("progress") or {}).get("summary")
    assert cells["ETA"] == (status.get("progress") or {}).get("eta")
    running = [c for c in status.get("conditions") or [] if c["type"] == "Running"]
    assert cells["Message"] == (running[0]["message"] if running else None)
    assert cells["Throughput"] == status.get("throughput")
    assert cells["Workers"] == obj["spec"]["workers"]["parallelism"]
    assert cells["Model"] == status.get("model") and cells["Model"]  # ours, or the operator's
    assert cells["Job"] == status.get("jobName")


def test_kubectl_explain_prints_the_field_descriptions(cluster: LocalCluster,
                                                       schema: Obj) -> None:
    def flat(text: str) -> str:
        return " ".join(text.split())

    printed = flat(cluster.kubectl("explain", "tj.spec.workers").stdout)
    workers = node_at(schema, "spec.workers")
    assert flat(workers["description"]) in printed
    for name, field in workers["properties"].items():
        assert f"{name} <" in printed.replace("\t", " ")
        assert flat(field["description"]) in printed, name


def test_kubectl_scale_changes_the_worker_parallelism(
    cluster: LocalCluster, admission: Admission, namespace: str, tjs: str,
) -> None:
    # No Secret in this namespace: whatever an operator does with it, the spec is ours.
    admission.created(tjs, tj("scaled"))
    cluster.kubectl("scale", "tj", "scaled", "--replicas=3", "-n", namespace)
    stored = admission.get(f"{tjs}/scaled")
    assert stored.body["spec"]["workers"]["parallelism"] == 3
    scale = admission.get(f"{tjs}/scaled/scale").body
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)


# --- the schema walk itself ---------------------------------------------------------------------


def test_the_schema_walk_sees_every_rule_and_bound(schema: Obj) -> None:
    # The coverage tests above are only as good as the walk: compare with a count of the
    # keywords in the schema's text (no field of this schema is named like a keyword).
    text = json.dumps(schema)
    assert len(list(rules(schema))) == text.count('"rule": ')
    keywords = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minimum",
                "maximum", "enum", "pattern")
    # Bounds of a field refused whatever it holds have no case.
    refused = "".join(json.dumps(node_at(schema, path.rstrip("."))) for path in REFUSED_WHOLE)
    assert len(bound_cases(schema, "spec")) + len(bound_cases(schema, "status")) == sum(
        text.count(f'"{keyword}": ') - refused.count(f'"{keyword}": ') for keyword in keywords)
