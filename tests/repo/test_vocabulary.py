"""Names that cross a boundary are spelled once: failure reasons in the runner's `contract.reasons`
(`Reason`), phases, condition types and condition reasons in the operator's `conditions`.
Anywhere else in production code such a string must come from those constants."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO
from whisperfleet_operator import conditions
from whisperfleet_runner.contract import Reason

HOMES = {REPO / "job_runner/whisperfleet_runner/contract/reasons.py",
         REPO / "operator/whisperfleet_operator/conditions.py"}
# Other parties' vocabularies that happen to share a word with ours, where they are read.
FOREIGN = {
    # S3's own error codes, translated into Reasons there.
    ("job_runner/whisperfleet_runner/storage/errors.py", "AccessDenied"),
    ("job_runner/whisperfleet_runner/storage/errors.py", "NotFound"),
    # The kubelet's waiting reasons, mapped to ours there.
    ("operator/whisperfleet_operator/status/stuck.py", "CreateContainerConfigError"),
    ("operator/whisperfleet_operator/status/stuck.py", "CreateContainerError"),
    ("operator/whisperfleet_operator/status/stuck.py", "ImagePullBackOff"),
    ("operator/whisperfleet_operator/status/stuck.py", "ErrImageNeverPull"),
    ("operator/whisperfleet_operator/status/stuck.py", "InvalidImageName"),
    # The Job API's podReplacementPolicy value, not a phase.
    ("operator/whisperfleet_operator/builders/jobs.py", "Failed"),
    # Kueue's Workload condition type, read there.
    ("operator/whisperfleet_operator/kueue.py", "Finished"),
    # A class exported by name (__all__), not a reason.
    ("job_runner/whisperfleet_runner/storage/__init__.py", "StorageError"),
}


def vocabulary() -> set[str]:
    words = {r.value for r in Reason}
    words |= {v for k, v in vars(conditions).items()
              if k.isupper() and isinstance(v, str) and v[:1].isupper()}
    return words


def spelled_out(path: Path, words: set[str]) -> list[str]:
    """Our words written as string literals in `path` (docstrings excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in words and id(node) not in docstrings
            and (str(path.relative_to(REPO)), node.value) not in FOREIGN]


def test_the_check_sees_a_literal_reason() -> None:
    sample = REPO / "tests" / "repo" / "vocabulary_sample.txt"
    try:
        sample.write_text('reason = "NoMatchingFiles"\nphase = "Succeeded"\n')
        assert len(spelled_out(sample, vocabulary())) == 2
    finally:
        sample.unlink()


def test_reasons_conditions_and_phases_are_spelled_only_where_declared() -> None:
    words = vocabulary()
    assert {"NoMatchingFiles", "GpuLost", "PodsHealthy", "PartiallySucceeded"} <= words
    found = []
    for package in ("job_runner/whisperfleet_runner", "operator/whisperfleet_operator"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path not in HOMES:
                found += spelled_out(path, words)
    assert found == []
