"""The TranscriptionJob CRD as a contract, read from its YAML: its names, a structural and
bounded schema, documented fields, rule messages that name their field, and defaults and
enums in step with the runner's contract.

What the API server does with it (admission, defaults, refusals, the CEL cost budget, kubectl
columns and scaling) is tested on the real API server: tests/cluster/test_admission.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.crd_schema import walk
from tests.support.paths import CRD, REPO
from whisperfleet_runner import contract

EXAMPLE_FILES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD.read_text()))


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    [version] = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def rules(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations") or []:
            yield path, rule


def resolve(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The schema node at a printer column's JSONPath; a list filter (`[?(...)]`, as in
    `.status.conditions[?(@.type=="Running")].message`) steps into the list's items."""
    node = schema
    for key in re.sub(r"\[\?\(.*?\)\]", "[]", dotted).strip(".").split("."):
        node = node["properties"][key.removesuffix("[]")]
        if key.endswith("[]"):
            node = node["items"]
    return node


# --- the CRD object itself ------------------------------------------------------------------


def test_crd_names_scope_and_version(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("whisperfleet.io", "Namespaced")
    assert spec["names"]["kind"] == "TranscriptionJob"
    assert spec["names"]["shortNames"] == ["tj"]
    assert spec["names"]["categories"] == ["whisperfleet"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"]["status"] == {}


def test_schema_is_structural_and_bounded(schema: dict[str, Any]) -> None:
    # Bounds keep the API server's CEL cost estimate small (it refuses a CRD over budget)
    # and the stored objects finite.
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
            # Preserved fields escape the schema: no bounds, no types, no unknown-field errors.
            problems.append(f"{path}: x-kubernetes-preserve-unknown-fields in spec")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: both properties and additionalProperties")
        for key in node.get("x-kubernetes-list-map-keys") or []:
            item = node["items"]
            if key not in item.get("required", []) and "default" not in item["properties"][key]:
                problems.append(f"{path}: list-map key {key} is neither required nor defaulted")
    assert problems == []


def test_every_spec_section_and_status_field_is_documented(schema: dict[str, Any]) -> None:
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    documented = [*spec["properties"].items(), *status["properties"].items()]
    for section in spec["properties"].values():
        documented += list((section.get("properties") or {}).items())
    assert [name for name, node in documented if not node.get("description")] == []


def test_rule_messages_name_their_field_and_stay_correlatable(schema: dict[str, Any]) -> None:
    nodes = dict(walk(schema))
    for path, rule in rules(schema):
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
        "Phase", "Files", "Failed", "Audio", "Progress", "ETA", "Age", "Message"]
    for column in columns:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        assert resolve(schema, column["jsonPath"])["type"] == column["type"], column
    scale = version["subresources"]["scale"]
    assert resolve(schema, scale["specReplicasPath"])["type"] == "integer"
    assert resolve(schema, scale["statusReplicasPath"])["type"] == "integer"


# --- in step with whisperfleet_runner.contract --------------------------------------------------


def test_defaults_and_enums_match_the_runner_config(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]

    def at(dotted: str) -> dict[str, Any]:
        return resolve(spec, dotted)

    assert at("input.include")["default"] == list(contract.DEFAULT_INCLUDE)
    assert at("output.formats")["default"] == list(contract.DEFAULT_FORMATS)
    assert at("output.formats")["items"]["enum"] == list(contract.FORMATS)
    assert at("output.formats")["maxItems"] == len(contract.FORMATS)
    assert at("output.overwrite")["default"] is contract.OutputOptions(uri="x").overwrite
    assert at("output.keepPartial")["default"] is contract.OutputOptions(uri="x").keep_partial
    # No schema default (spec.model.uri excludes a name): the operator's, which the
    # description names.
    assert "default" not in at("model.name")
    assert f"Default {contract.DEFAULT_MODEL} when" in " ".join(
        at("model.name")["description"].split())
    assert at("model.computeType")["default"] == contract.ModelOptions().compute_type
    # The CRD allows a subset of what the runner understands.
    assert at("model.computeType")["enum"] == [
        "auto", "float16", "int8_float16", "int8", "float32", "bfloat16"]
    assert set(at("model.computeType")["enum"]) <= set(contract.COMPUTE_TYPES)
    options = contract.TranscriptionOptions()
    assert at("transcription.task")["enum"] == list(contract.TASKS)
    assert at("transcription.task")["default"] == options.task
    assert at("transcription.beamSize")["default"] == contract.DEFAULT_BEAM_SIZE
    assert at("transcription.batchSize")["default"] == contract.DEFAULT_BATCH_SIZE
    assert at("transcription.vadFilter")["default"] is options.vad_filter
    assert at("transcription.wordTimestamps")["default"] is options.word_timestamps
    assert at("transcription.packShortClips")["default"] is options.pack_short_clips
    assert (at("transcription.language")["default"] or None) == options.language
    assert (at("transcription.initialPrompt")["default"] or None) == options.initial_prompt
    assert (at("transcription.hotwords")["default"] or None) == options.hotwords
    candidates = at("transcription.languageCandidates")
    assert tuple(candidates["default"]) == options.language_candidates
    assert candidates["items"]["enum"] == list(contract.WHISPER_LANGUAGES)
    assert candidates["maxItems"] == len(contract.WHISPER_LANGUAGES)


def test_the_language_codes_are_faster_whispers() -> None:
    # The operator cannot import faster-whisper: the contract keeps its own copy.
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert tuple(_LANGUAGE_CODES) == contract.WHISPER_LANGUAGES


# --- examples -------------------------------------------------------------------------------


def test_examples_show_every_documented_scenario() -> None:
    jobs = [d for p in EXAMPLE_FILES for d in yaml.safe_load_all(p.read_text())
            if d and d["kind"] == "TranscriptionJob"]
    workers = [j["spec"].get("workers", {}) for j in jobs]
    assert any(w.get("gpusPerWorker", 1) > 1 for w in workers), "multi-GPU worker"
    assert any(w.get("gpu", {}).get("resourceName", "").startswith("nvidia.com/mig-")
               for w in workers), "MIG"
    assert any(w.get("gpu", {}).get("deviceClassName") for w in workers), "DRA"
    assert any("-MIG-" in p for w in workers for p in w.get("gpu", {}).get("products", [])), \
        "MIG single strategy"
    assert any(w.get("gpu", {}).get("sharing") == "Shared" for w in workers), "time-slicing"
    assert any(w.get("runtimeClassName") for w in workers), "runtimeClassName"
    assert any(w.get("volumeMounts") for w in workers), "a volume of the user's"
    assert any("kueue.x-k8s.io/queue-name" in (j["metadata"].get("labels") or {})
               for j in jobs), "Kueue"
    assert any(j["spec"]["output"]["uri"].startswith("file://") for j in jobs), "PVC"
    names = [j["metadata"]["name"] for j in jobs]
    assert len(names) == len(set(names))


KUEUE_KINDS = frozenset({"ResourceFlavor", "ClusterQueue", "LocalQueue", "WorkloadPriorityClass"})


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_a_pvc_shipped_with_an_example_is_the_one_its_job_mounts(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} holds no manifest"
    assert {d["kind"] for d in docs} <= {"TranscriptionJob", "Secret", "PersistentVolumeClaim",
                                         *KUEUE_KINDS}
    # Kueue v0.17 serves v1beta2 (v1beta1 only through its conversion webhook, deprecated).
    assert {d["apiVersion"] for d in docs if d["kind"] in KUEUE_KINDS} <= {"kueue.x-k8s.io/v1beta2"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    mounted = {d["spec"]["storage"]["volume"]["claimName"] for d in docs
               if d["kind"] == "TranscriptionJob" and "volume" in d["spec"].get("storage", {})}
    assert claims <= mounted


def test_no_key_of_the_crd_file_is_a_stray_null(crd: dict[str, Any]) -> None:
    """A comma inside an unquoted flow-mapping value ({description: a, b}) makes `b` a key
    with no value: the API server drops it, and the text the user reads is cut short."""
    def nulls(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if value is None:
                    yield f"{path}.{key}"
                yield from nulls(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                yield from nulls(item, f"{path}[{i}]")

    assert list(nulls(crd, "")) == []
