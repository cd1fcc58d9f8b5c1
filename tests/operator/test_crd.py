"""The TranscriptionJob CRD: a valid structural CRD, in step with the runner's config, admitting
every example and refusing bad specs with a message that names the field."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cel
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.paths import REPO
from whisperfleet_operator.spec import parse as parse_tj
from whisperfleet_runner import config

CRD_PATH = REPO / "crds" / "transcriptionjob.yaml"
EXAMPLE_FILES = sorted((REPO / "examples").glob("*.yaml"))
K8S_VERSION = "1.37"
DELETE = object()  # a patch value that removes the field


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return cel.load_crd(CRD_PATH)


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return cel.version_schema(crd, "v1alpha1")


def job(**patches: Any) -> dict[str, Any]:
    """A minimal valid TranscriptionJob; patches are dotted spec paths, e.g. workers__gpu."""
    obj: dict[str, Any] = {
        "apiVersion": "whisperfleet.io/v1alpha1",
        "kind": "TranscriptionJob",
        "metadata": {"name": "t", "namespace": "default"},
        "spec": {"input": {"uri": "s3://media/in/"}, "output": {"uri": "s3://media/out/"}},
    }
    for dotted, value in patches.items():
        patch(obj["spec"], dotted.replace("__", "."), value)
    return obj


def patch(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    if value is DELETE:
        target.pop(leaf, None)
    else:
        target[leaf] = value


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a kubectl-style path: spec.workers.tolerations[], x.*."""
    yield path, node
    for key, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{key}" if path else key)
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def rules(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations") or []:
            yield path, rule


def resolve(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for key in dotted.strip(".").split("."):
        node = node["properties"][key]
    return node


# --- the CRD object itself ------------------------------------------------------------------


def test_crd_is_a_valid_apiextensions_v1_crd(crd: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(crd, K8S_VERSION, strict=True) == K8S_VERSION
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("whisperfleet.io", "Namespaced")
    assert spec["names"]["kind"] == "TranscriptionJob"
    assert spec["names"]["shortNames"] == ["tj"]
    assert spec["names"]["categories"] == ["whisperfleet"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"]["status"] == {}


def test_crd_validation_would_catch_a_misspelt_extension(crd: dict[str, Any]) -> None:
    broken = copy.deepcopy(crd)
    workers = cel.version_schema(broken)["properties"]["spec"]["properties"]["workers"]
    workers["x-kubernetes-validation"] = workers.pop("x-kubernetes-validations")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_schema_is_structural_and_bounded(schema: dict[str, Any]) -> None:
    problems = []
    for path, node in walk(schema):
        if path in ("apiVersion", "kind"):
            continue  # the apiserver checks these itself
        loose = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields")
        kind = node.get("type")
        if kind is None and not loose:
            problems.append(f"{path}: no type")
        if kind == "string" and not ({"maxLength", "enum"} & node.keys()
                                     or node.get("format") == "date-time"):
            problems.append(f"{path}: string without maxLength")
        if kind == "array" and not {"maxItems", "x-kubernetes-list-type"} <= node.keys():
            problems.append(f"{path}: array without maxItems or x-kubernetes-list-type")
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            problems.append(f"{path}: map without maxProperties")
        if path.startswith("spec") and node.get("x-kubernetes-preserve-unknown-fields"):
            # CEL cannot see preserved unknown fields: immutability would miss edits there.
            problems.append(f"{path}: x-kubernetes-preserve-unknown-fields in spec")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: both properties and additionalProperties")
        for key in node.get("x-kubernetes-list-map-keys") or []:
            item = node["items"]
            if key not in item.get("required", []) and "default" not in item["properties"][key]:
                problems.append(f"{path}: list-map key {key} is neither required nor defaulted")
        if "default" in node:
            value = cel.apply_defaults(node, node["default"])
            if cel.schema_violations(node, value):
                problems.append(f"{path}: default {node['default']!r} fails its own schema")
    assert problems == []


def test_every_spec_section_and_status_field_is_documented(schema: dict[str, Any]) -> None:
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    documented = [*spec["properties"].items(), *status["properties"].items()]
    for section in spec["properties"].values():
        documented += list((section.get("properties") or {}).items())
    assert [name for name, node in documented if not node.get("description")] == []


def test_rules_compile_name_their_field_and_stay_correlatable(schema: dict[str, Any]) -> None:
    nodes = dict(walk(schema))
    for path, rule in rules(schema):
        cel.compile_rule(rule["rule"])  # raises CELParseError on a syntax error
        field = path + rule.get("fieldPath", "")
        assert rule["message"].startswith(field), (field, rule["message"])
        assert "\n" not in rule["message"]
        if "fieldPath" in rule:
            resolve(nodes[path], rule["fieldPath"])  # KeyError if it names no field
        if re.search(r"\boldSelf\b", rule["rule"]):
            # The apiserver refuses transition rules below set or atomic lists.
            assert "[]" not in path, path


def test_printer_columns_and_scale_paths_point_at_schema_fields(
    crd: dict[str, Any], schema: dict[str, Any]
) -> None:
    [version] = crd["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Phase", "Files", "Failed", "Audio", "Age"]
    for column in columns:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        assert resolve(schema, column["jsonPath"])["type"] == column["type"], column
    scale = version["subresources"]["scale"]
    assert resolve(schema, scale["specReplicasPath"])["type"] == "integer"
    assert resolve(schema, scale["statusReplicasPath"])["type"] == "integer"


# --- in step with whisperfleet_runner.config --------------------------------------------------


def test_defaults_and_enums_match_the_runner_config(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]

    def at(dotted: str) -> dict[str, Any]:
        return resolve(spec, dotted)

    assert at("input.include")["default"] == list(config.DEFAULT_INCLUDE)
    assert at("output.formats")["default"] == list(config.DEFAULT_FORMATS)
    assert at("output.formats")["items"]["enum"] == list(config.FORMATS)
    assert at("output.formats")["maxItems"] == len(config.FORMATS)
    assert at("output.overwrite")["default"] is config.OutputOptions(uri="x").overwrite
    assert at("model.name")["default"] == config.DEFAULT_MODEL
    assert at("model.computeType")["default"] == config.ModelOptions().compute_type
    # The CRD allows a subset of what the runner understands.
    assert at("model.computeType")["enum"] == [
        "auto", "float16", "int8_float16", "int8", "float32", "bfloat16"]
    assert set(at("model.computeType")["enum"]) <= set(config.COMPUTE_TYPES)
    options = config.TranscriptionOptions()
    assert at("transcription.task")["enum"] == list(config.TASKS)
    assert at("transcription.task")["default"] == options.task
    assert at("transcription.beamSize")["default"] == config.DEFAULT_BEAM_SIZE
    assert at("transcription.batchSize")["default"] == config.DEFAULT_BATCH_SIZE
    assert at("transcription.vadFilter")["default"] is options.vad_filter
    assert at("transcription.wordTimestamps")["default"] is options.word_timestamps
    assert at("transcription.packShortClips")["default"] is options.pack_short_clips
    assert (at("transcription.language")["default"] or None) == options.language
    assert (at("transcription.initialPrompt")["default"] or None) == options.initial_prompt


def test_a_defaulted_minimal_job_becomes_the_default_work_order(crd: dict[str, Any]) -> None:
    from whisperfleet_operator.workorder import work_order_for

    stored, refused = cel.admit(crd, job())
    assert refused == []
    stored["metadata"]["uid"] = "0000-uid"
    order = work_order_for(parse_tj(stored))
    assert order.include == config.DEFAULT_INCLUDE
    assert order.output == config.OutputOptions(uri="s3://media/out/")
    assert order.model == config.ModelOptions()
    assert order.transcription == config.TranscriptionOptions()
    assert order.shards == 0


# --- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_is_admitted(crd: dict[str, Any], path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} holds no manifest"
    for doc in docs:
        if doc["kind"] == "TranscriptionJob":
            stored, refused = cel.admit(crd, doc)
            assert [str(v) for v in refused] == []
            # What the operator copies into worker pods must be valid pod fields.
            kubernetes_validate.validate(worker_pod(stored["spec"]["workers"]), K8S_VERSION,
                                         strict=True)
        else:
            assert doc["kind"] in ("Secret", "PersistentVolumeClaim"), (
                f"{path.name}: unexpected kind {doc['kind']}")
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # A PVC shipped with an example is the one its job mounts.
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    mounted = {d["spec"]["storage"]["volume"]["claimName"] for d in docs
               if d["kind"] == "TranscriptionJob" and "volume" in d["spec"].get("storage", {})}
    assert claims <= mounted


def worker_pod(workers: dict[str, Any]) -> dict[str, Any]:
    container = {"name": "runner", "image": workers.get("image", "runner"),
                 "resources": workers.get("resources", {})}
    spec: dict[str, Any] = {"containers": [container]}
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName",
                "imagePullSecrets"):
        if key in workers:
            spec[key] = workers[key]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"}, "spec": spec}


def test_examples_show_every_documented_scenario() -> None:
    jobs = [d for p in EXAMPLE_FILES for d in yaml.safe_load_all(p.read_text())
            if d and d["kind"] == "TranscriptionJob"]
    workers = [j["spec"].get("workers", {}) for j in jobs]
    assert any(w.get("gpusPerWorker", 1) > 1 for w in workers), "multi-GPU worker"
    assert any(w.get("gpu", {}).get("resourceName", "").startswith("nvidia.com/mig-")
               for w in workers), "MIG"
    assert any(w.get("gpu", {}).get("deviceClassName") for w in workers), "DRA"
    assert any(j["spec"].get("queueName") for j in jobs), "Kueue"
    assert any(j["spec"]["output"]["uri"].startswith("file://") for j in jobs), "PVC"
    names = [j["metadata"]["name"] for j in jobs]
    assert len(names) == len(set(names))


# --- refusals ---------------------------------------------------------------------------------

CEL_REFUSALS = [
    ("input.uri", "http://media/in/", "spec.input.uri", "spec.input.uri must start with"),
    ("input.uri", "s3:///in/", "spec.input.uri", "spec.input.uri must start with"),
    ("output.uri", "/tmp/out", "spec.output.uri", "spec.output.uri must start with"),
    ("output.uri", "s3://media/in/", "spec.output.uri", "spec.output.uri must not be"),
    ("output.uri", "s3://media/in/transcripts", "spec.output.uri", "spec.output.uri must not be"),
    ("storage.endpoint", "minio:9000", "spec.storage.endpoint", "spec.storage.endpoint must"),
    ("transcription.language", "EN", "spec.transcription.language",
     "spec.transcription.language must"),
    ("workers.gpusPerWorker", 0, "spec.workers.gpusPerWorker",
     "spec.workers.gpusPerWorker must be at least 1"),
    ("workers.gpu.resourceName", "gpu", "spec.workers.gpu.resourceName",
     "spec.workers.gpu.resourceName must be"),
    ("workers.gpu.minComputeCapability", "eight", "spec.workers.gpu.minComputeCapability",
     "spec.workers.gpu.minComputeCapability must be"),
    ("workers.resources", {"limits": {"nvidia.com/gpu": 1}}, "spec.workers.resources",
     "spec.workers.resources must not ask for nvidia.com/"),
    ("workers.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}],
     "spec.workers.tolerations[0].value", "spec.workers.tolerations[].value must be empty"),
    ("workers.tolerations", [{"key": "k", "operator": "Exists", "effect": "NoSchedule",
                              "tolerationSeconds": 60}],
     "spec.workers.tolerations[0].tolerationSeconds",
     "spec.workers.tolerations[].tolerationSeconds needs effect NoExecute"),
    ("workers.tolerations", [{"value": "v"}], "spec.workers.tolerations[0].operator",
     "spec.workers.tolerations[].operator must be Exists when key is empty"),
    ("storage.volume", {"claimName": "media", "mountPath": "data"},
     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must be an absolute path"),
    ("storage.volume", {"claimName": "media", "mountPath": "/"},
     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must be an absolute path"),
    ("storage.volume", {"claimName": "media", "mountPath": "/data/"},
     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must be an absolute path"),
    ("storage.volume", {"claimName": "media", "mountPath": "/data/../etc"},
     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must be an absolute path"),
    ("storage.volume", {"claimName": "media", "mountPath": "/tmp"},
     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must not be, contain"),
    ("storage.volume", {"claimName": "media", "mountPath": "/home"},
     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must not be, contain"),
    ("storage.volume", {"claimName": "media", "mountPath": "/var/run/media"},
     "spec.storage.volume.mountPath", "spec.storage.volume.mountPath must not be, contain"),
]


@pytest.mark.parametrize(("field", "value", "where", "message"), CEL_REFUSALS,
                         ids=[f"{c[0]}={c[1]}" for c in CEL_REFUSALS])
def test_cel_refuses_a_bad_value_naming_the_field(
    crd: dict[str, Any], field: str, value: Any, where: str, message: str
) -> None:
    _, refused = cel.admit(crd, job(**{field.replace(".", "__"): value}))
    assert [(v.path, v.message[: len(message)]) for v in refused] == [(where, message)]


def test_cel_refuses_cross_field_combinations(crd: dict[str, Any]) -> None:
    _, refused = cel.admit(crd, job(workers__gpusPerWorker=2,
                                    workers__gpu={"resourceName": "nvidia.com/mig-1g.10gb"}))
    assert [v.path for v in refused] == ["spec.workers.gpusPerWorker"]
    assert "MIG" in refused[0].message
    _, refused = cel.admit(crd, job(shards=2, retries={"maxFailedShards": 3}))
    assert [str(v) for v in refused] == [
        "spec.retries.maxFailedShards: spec.retries.maxFailedShards must not exceed spec.shards"]
    # An input object whose name is a prefix of the output is not "inside" it.
    _, refused = cel.admit(crd, job(input__uri="s3://media/in", output__uri="s3://media/in-out/"))
    assert refused == []


# --- file:// URIs and the PVC they point into (spec.storage.volume) ---------------------------

MEDIA = {"claimName": "media"}  # mountPath defaults to /data

VOLUME_REFUSALS = [
    ({"input__uri": "file:///data/in/"}, "spec.input.uri",
     "spec.input.uri is a file:// path, which needs spec.storage.volume"),
    ({"output__uri": "file:///data/out/", "storage": {"secretName": "s3"}}, "spec.output.uri",
     "spec.output.uri is a file:// path, which needs spec.storage.volume"),
    ({"input__uri": "file:///mnt/in/", "storage__volume": MEDIA}, "spec.input.uri",
     "spec.input.uri must be file://<spec.storage.volume.mountPath> or a path under it"),
    # A string prefix is not enough: /database is not under /data.
    ({"input__uri": "file:///database/in/", "storage__volume": MEDIA}, "spec.input.uri",
     "spec.input.uri must be file://<spec.storage.volume.mountPath> or a path under it"),
    ({"input__uri": "file:///data/../etc/", "storage__volume": MEDIA}, "spec.input.uri",
     "spec.input.uri must be file://<spec.storage.volume.mountPath> or a path under it"),
    ({"output__uri": "file:///data/out/../../root/", "storage__volume": MEDIA}, "spec.output.uri",
     "spec.output.uri must be file://<spec.storage.volume.mountPath> or a path under it"),
    ({"output__uri": "file:///srv/out/",
      "storage__volume": {"claimName": "media", "mountPath": "/srv/media"}}, "spec.output.uri",
     "spec.output.uri must be file://<spec.storage.volume.mountPath> or a path under it"),
    ({"output__uri": "file:///data/out/", "storage__volume": {**MEDIA, "readOnly": True}},
     "spec.storage.volume.readOnly",
     "spec.storage.volume.readOnly must be false when spec.output.uri is file://"),
]


@pytest.mark.parametrize(("patches", "where", "message"), VOLUME_REFUSALS,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(VOLUME_REFUSALS)])
def test_file_uris_need_the_volume_and_must_lie_under_its_mount_path(
    crd: dict[str, Any], patches: dict[str, Any], where: str, message: str
) -> None:
    _, refused = cel.admit(crd, job(**patches))
    assert [(v.path, v.message[: len(message)]) for v in refused] == [(where, message)]


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
], ids=["both", "whole-volume", "read-only-input", "mnt", "unused"])
def test_file_uris_under_the_mount_path_are_admitted(
    crd: dict[str, Any], patches: dict[str, Any]
) -> None:
    stored, refused = cel.admit(crd, job(**patches))
    assert [str(v) for v in refused] == []
    volume = stored["spec"]["storage"]["volume"]
    assert volume["mountPath"] == patches["storage__volume"].get("mountPath", "/data")
    assert volume["readOnly"] is patches["storage__volume"].get("readOnly", False)


def test_the_mount_path_may_not_shadow_any_path_the_pods_use(crd: dict[str, Any]) -> None:
    # Taken from the pods the operator builds, so a new mount there cannot be forgotten here.
    from whisperfleet_operator import jobs
    from whisperfleet_operator.settings import OperatorSettings

    tj, _ = cel.admit(crd, job(model={"cacheVolume": {"claimName": "models"}}))
    tj["metadata"]["uid"] = "u"
    worker = jobs.build_worker_job(parse_tj(tj), config.PlanReport(shards=1),
                                  OperatorSettings())
    [container] = worker["spec"]["template"]["spec"]["containers"]
    used = {m["mountPath"] for m in container["volumeMounts"]}
    used |= {str(Path(config.TERMINATION_MESSAGE_PATH).parent), config.MODEL_CACHE_MOUNT}
    assert {"/tmp", "/home/whisperfleet", "/models", "/dev"} <= used
    for path in used:
        _, refused = cel.admit(crd, job(storage__volume={"claimName": "m", "mountPath": path}))
        assert [v.path for v in refused] == ["spec.storage.volume.mountPath"], path


def test_every_value_rule_has_a_refusal_test(schema: dict[str, Any]) -> None:
    tested = {m for *_, m in CEL_REFUSALS} | {"spec.workers.gpusPerWorker must be 1",
                                               "spec.retries.maxFailedShards must not exceed"}
    tested |= {m for *_, m in VOLUME_REFUSALS}
    value_rules = [r["message"] for _, r in rules(schema) if "oldSelf" not in r["rule"]]
    assert [m for m in value_rules if not any(m.startswith(t) for t in tested)] == []


SCHEMA_REFUSALS = [
    ("output.formats", ["json", "pdf"], "spec.output.formats[1]", "'pdf' is not one of"),
    ("output.formats", ["json", "json"], "spec.output.formats", "non-unique"),
    ("output", DELETE, "spec", "'output' is a required property"),
    ("model.computeType", "int8_float32", "spec.model.computeType", "is not one of"),
    ("transcription.task", "summarize", "spec.transcription.task", "is not one of"),
    ("transcription.beamSize", 0, "spec.transcription.beamSize", "less than the minimum"),
    ("workers.parallelism", 0, "spec.workers.parallelism", "less than the minimum"),
    ("workers.gpus", 2, "spec.workers", "Additional properties are not allowed"),
    ("storage.secretName", "S3_Creds", "spec.storage.secretName", "does not match"),
    ("storage.volume", {"mountPath": "/data"}, "spec.storage.volume",
     "'claimName' is a required property"),
    ("input.include", [f"*.x{i}" for i in range(65)], "spec.input.include", "is too long"),
    ("workers.imagePullSecrets", [{"name": "a"}, {"name": "a"}],
     "spec.workers.imagePullSecrets[1]", "Duplicate value"),
    ("workers.resources", {"requests": {"cpu": "lots"}}, "spec.workers.resources.requests.cpu",
     "does not match"),
]


@pytest.mark.parametrize(("field", "value", "where", "message"), SCHEMA_REFUSALS,
                         ids=[c[0] for c in SCHEMA_REFUSALS])
def test_schema_refuses_a_bad_value_at_its_path(
    crd: dict[str, Any], field: str, value: Any, where: str, message: str
) -> None:
    _, refused = cel.admit(crd, job(**{field.replace(".", "__"): value}))
    assert [v.path for v in refused] == [where]
    assert message in refused[0].message


# --- updates: immutable except suspend and workers.parallelism ------------------------------

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
}


def test_the_immutability_cases_cover_every_spec_field(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    fields = {k for k in spec if k not in ("suspend", "workers")}
    fields |= {f"workers.{k}" for k in spec["workers"]["properties"] if k != "parallelism"}
    assert set(CHANGES) == fields


@pytest.mark.parametrize("field", list(CHANGES))
def test_changing_a_field_after_creation_is_refused(crd: dict[str, Any], field: str) -> None:
    old, refused = cel.admit(crd, job())
    assert refused == []
    changed = copy.deepcopy(old)
    patch(changed["spec"], field, CHANGES[field])
    _, refused = cel.admit(crd, changed, old)
    assert [(v.path, v.message.split(" (")[0]) for v in refused] == [
        (f"spec.{field}", f"spec.{field} is immutable")]
    # Adding it is refused, and so is removing it once set.
    _, refused = cel.admit(crd, old, cel.admit(crd, changed)[0])
    assert [v.path for v in refused] == [f"spec.{field}"]


def test_the_data_volume_cannot_be_swapped_after_creation(crd: dict[str, Any]) -> None:
    old, _ = cel.admit(crd, job(input__uri="file:///data/in/", storage__volume=MEDIA))
    for change in ({"claimName": "other"}, {"mountPath": "/mnt"}, {"readOnly": True}):
        new = copy.deepcopy(old)
        new["spec"]["storage"]["volume"].update(change)
        new["spec"]["input"]["uri"] = f"file://{new['spec']['storage']['volume']['mountPath']}/"
        refused = cel.admit(crd, new, old)[1]
        assert "spec.storage" in [v.path for v in refused], change
        assert any(v.message.startswith("spec.storage is immutable") for v in refused)


def test_an_edit_deep_inside_affinity_is_refused(crd: dict[str, Any]) -> None:
    [example] = yaml.safe_load_all((REPO / "examples" / "multi-gpu.yaml").read_text())
    old, _ = cel.admit(crd, example)
    new = copy.deepcopy(old)
    terms = new["spec"]["workers"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    terms[0]["matchExpressions"][0]["values"] = ["eu-west-1a"]
    assert [v.path for v in cel.admit(crd, new, old)[1]] == ["spec.workers.affinity"]


def test_cel_cannot_see_preserved_unknown_fields_as_in_kubernetes() -> None:
    # Why affinity is fully typed: with a preserved blob, `self == oldSelf` misses edits.
    blob = {"type": "object", "properties": {"a": {"type": "object",
            "x-kubernetes-preserve-unknown-fields": True}},
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]}
    assert cel.cel_violations(blob, {"a": {"x": 2}}, {"a": {"x": 1}}) == []
    typed = {**blob, "properties": {"a": {"type": "object", "properties": {
        "x": {"type": "integer"}}}}}
    assert cel.cel_violations(typed, {"a": {"x": 2}}, {"a": {"x": 1}}) == [
        cel.Violation("", "immutable")]


def test_suspend_parallelism_and_status_may_change(crd: dict[str, Any]) -> None:
    old, _ = cel.admit(crd, job(input__include=["*.wav", "*.mp3"]))
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = True
    new["spec"]["workers"]["parallelism"] = 9
    new["spec"]["input"]["include"].reverse()  # a set: order is not a change
    new["status"] = {"phase": "Suspended", "files": {"total": 3, "succeeded": 1}}
    _, refused = cel.admit(crd, new, old)
    assert refused == []


# --- status -----------------------------------------------------------------------------------


def operator_status() -> dict[str, Any]:
    return {
        "phase": "PartiallySucceeded", "observedGeneration": 1,
        "conditions": [{"type": "Complete", "status": "True", "reason": "SomeFilesFailed",
                        "message": "1 of 3 files failed", "observedGeneration": 1,
                        "lastTransitionTime": "2024-11-02T10:00:00Z"}],
        "files": {"total": 3, "succeeded": 2, "failed": 1, "skipped": 0},
        "filesSummary": "2/3", "audioSeconds": 3725.5, "audioDuration": "1h02m",
        "shards": {"total": 2, "succeeded": 1, "failed": 1, "active": 0},
        "workers": [{"pod": "w-0", "node": "n1", "gpus": [
            {"uuid": "GPU-1", "name": "NVIDIA H100", "memoryMiB": 81559, "deviceIndex": 0}]}],
        "failures": [{"uri": "s3://media/in/bad.mp3", "reason": "undecodable audio"}],
        "jobName": "t-work", "manifestUri": "s3://media/out/.whisperfleet/u/manifest.jsonl",
        "startTime": "2024-11-02T09:00:00Z", "completionTime": "2024-11-02T10:00:00Z",
    }


def test_an_operator_status_is_valid_and_bounded(crd: dict[str, Any]) -> None:
    status = operator_status()
    assert cel.admit(crd, {**job(), "status": status})[1] == []
    # Whatever fits a shard's termination message fits the status.
    longest = "x" * config.TERMINATION_MESSAGE_LIMIT
    status["failures"] = [{"uri": longest, "reason": longest}]
    assert cel.admit(crd, {**job(), "status": status})[1] == []
    too_many = {**status, "failures": status["failures"] * 21}
    assert [v.path for v in cel.admit(crd, {**job(), "status": too_many})[1]] == [
        "status.failures"]
    with pytest.raises(jsonschema.ValidationError, match="is not one of"):
        schema_status = cel.version_schema(crd)["properties"]["status"]
        jsonschema.validate({"phase": "Done"}, cel.to_json_schema(schema_status))


def test_statuses_the_operator_writes_fit_the_schema(crd: dict[str, Any]) -> None:
    # The apiserver refuses a status patch that breaks the schema; kmock does not check it.
    from whisperfleet_operator import status as st

    stored, _ = cel.admit(crd, job())
    stored["metadata"].update(generation=1, uid="u")
    now = "2024-11-02T10:00:00Z"
    plan = config.PlanReport(files=4, bytes=10, shards=2, manifest_uri="s3://media/out/m.jsonl")
    job_ = parse_tj(stored)
    planned = st.planning_status(job_, {}, st.PlannerOutcome("succeeded", plan), "t-plan", now)
    long_key = "s3://media/in/" + "k" * 3000 + ".mp3"
    reports = [config.ShardReport(
        shard=i, total=2, succeeded=1, failed=1, audio_seconds=4000.0, pod=f"t-work-{i}",
        node="n1", gpus=[config.GpuIdentity(uuid=f"GPU-{i}", name="NVIDIA H100 80GB HBM3",
                                            memory_mib=81559, device_index=0)],
        failures=[config.FileFailure(uri=long_key, reason="undecodable audio")],
    ) for i in range(2)]
    pods = [{"metadata": {"name": r.pod, "annotations": {
                "batch.kubernetes.io/job-completion-index": str(r.shard)}},
             "spec": {"nodeName": "n1"},
             "status": {"phase": "Succeeded", "containerStatuses": [
                 {"state": {"terminated": {"message": r.to_json(), "finishedAt": now}}}]}}
            for r in reports]
    worker_job = {"metadata": {"name": "t-work"}, "status": {
        "completedIndexes": "0-1", "completionTime": now,
        "conditions": [{"type": "Complete", "status": "True"}]}}
    running = st.running_status(job_, planned, worker_job, pods, now)
    assert running["workers"] and running["failures"]
    invalid = st.invalid_spec_status({}, 1, "spec.input.uri must start with s3://", now)
    for status in (planned, running, invalid):
        assert [str(v) for v in cel.admit(crd, {**stored, "status": status})[1]] == []
