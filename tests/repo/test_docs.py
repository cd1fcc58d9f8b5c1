"""User docs live in the repository and agree with what they describe."""

from __future__ import annotations

import re

import yaml

from tests.support import crd_reference
from tests.support.paths import CRD, REPO

ARCHITECTURE = REPO / "docs" / "architecture.md"
STAGES = ("list", "plan", "fetch", "decode", "chunk", "transcribe", "pack", "render",
          "publish", "ledger", "report")


def test_every_crd_field_is_documented_as_the_crd_says() -> None:
    doc = crd_reference.DOC.read_text(encoding="utf-8")
    assert crd_reference.documented(doc) == crd_reference.render(), (
        "docs/transcriptionjob.md is out of date with the CRD: run "
        "`python -m tests.support.crd_reference`")


def test_the_reference_has_a_row_with_a_description_for_every_field() -> None:
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    rows = crd_reference.fields(root["spec"], "spec") + crd_reference.fields(root["status"],
                                                                             "status")
    reference = crd_reference.render()
    assert len(rows) > 90
    for path, node in rows:
        assert f"| `{path}` |" in reference
        assert node.get("description"), f"{path} has no description (kubectl explain shows none)"


def test_each_stage_has_one_owning_module_that_exists() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+) \| `([^`]+)` \|", text, flags=re.M)
    assert [stage for stage, _ in rows] == list(STAGES)
    for stage, module in rows:
        assert (REPO / module).is_file(), f"{stage}: {module} does not exist"


def test_every_file_the_change_table_names_exists() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text[text.index("## To change X, edit Y"):]
    paths = re.findall(r"`((?:job_runner|operator|crds|tests|docs)/[^`]+?)`", table)
    assert len(paths) >= 10
    assert [p for p in paths if not (REPO / p).exists()] == []


def test_the_readme_points_at_the_docs_and_nothing_outside_the_repository() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for target in ("docs/architecture.md", "docs/transcriptionjob.md", "kubectl explain tj.spec"):
        assert target in readme
    for doc in (readme, ARCHITECTURE.read_text(encoding="utf-8"),
                crd_reference.DOC.read_text(encoding="utf-8")):
        # Relative links that climb out of the repository, and the team's design notes.
        assert not re.search(r"\]\(\.\./|`\.\./[^`]*\.md`", doc) and "DESIGN" not in doc


def test_the_readme_states_the_storage_patience_the_code_has() -> None:
    from whisperfleet_runner.storage import fs, patience, temporaries

    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"with {fs.MAX_ATTEMPTS} attempts in all" in text
    assert f"failed to connect for {patience.CONNECT_PATIENCE:.0f} s" in text
    assert f"untouched for {temporaries.STALE_SECONDS / 60:.0f} minutes" in text


def _status_schema() -> dict:
    (version,) = yaml.safe_load(CRD.read_text(encoding="utf-8"))["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["status"])


def _resolves(schema: dict, dotted: str) -> bool:
    node = schema
    for step in dotted.split("."):
        while node.get("type") == "array":
            node = node["items"]
        props = node.get("properties") or {}
        if step not in props:
            return False
        node = props[step]
    return True


def test_every_status_field_the_docs_name_is_in_the_schema() -> None:
    """`status.x.y` in the README or the docs (outside the generated reference) is a field
    the CRD's status holds, so no doc promises what `kubectl get tj -o yaml` never shows."""
    status = _status_schema()
    texts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    named = {(path.name, m) for path in texts
             for m in re.findall(r"\bstatus\.([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*)",
                                 path.read_text(encoding="utf-8").replace(
                                     crd_reference.documented(path.read_text(
                                         encoding="utf-8")), ""))}
    assert len(named) >= 5  # the scan finds the docs' mentions
    assert sorted((doc, f) for doc, f in named if not _resolves(status, f)) == []


# What the README says each worker GPU's status entry holds, and the field holding it.
README_GPU_FIELDS = {"UUID": "uuid", "name": "name", "PCI bus id": "pciBusId",
                     "memory": "memoryMiB", "compute capability": "computeCapability",
                     "MIG profile": "migProfile"}


def test_the_gpu_identity_the_readme_promises_is_in_the_status_schema() -> None:
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    promise = re.search(r"reports each GPU's ([^.]+?) in the TranscriptionJob's status", readme)
    assert promise, "the README no longer says what each GPU's status entry holds"
    listed = [p.strip() for p in re.split(r",| and ", promise.group(1)) if p.strip()]
    assert sorted(listed) == sorted(README_GPU_FIELDS)
    gpu = _status_schema()["properties"]["workers"]["items"]["properties"]["gpus"]["items"]
    assert set(README_GPU_FIELDS.values()) - set(gpu["properties"]) == set()
