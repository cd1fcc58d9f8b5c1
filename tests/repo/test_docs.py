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
