"""benchmarks/fixed_cost.py runs and says what it measured; corpus seeds draw held-out clips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO


@pytest.mark.slow
def test_fixed_cost_benchmark_prints_each_pair_and_the_median(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fixed_cost.py"), "--pairs", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pairs = [line for line in lines if line.startswith("pair ")]
    assert len(pairs) == 1 and pairs[0].startswith("pair 1: whisperfleet "), lines
    values = dict(line.split(" = ") for line in lines if " = " in line)
    assert abs(float(values["fixed_cost_seconds"])) < 60  # whatever this machine measures
    assert values["target"].startswith("0.30 (")
    said = {line.split(":", 1)[0]: line.split(":", 1)[1].strip().lower() for line in lines
            if line.startswith(("whisperfleet said", "bare said"))}
    assert all("weather" in text for text in said.values()), said  # both did the work


def test_a_seed_draws_another_corpus_and_a_rebuild_notices_it(tmp_path: Path) -> None:
    from benchmarks import corpus

    folder = tmp_path / "short"
    tuned = corpus.build("short", folder, 3)
    held_out = corpus.build("short", folder, 3, seed=2026)
    assert tuned.keys() == held_out.keys() and tuned != held_out
    assert json.loads((folder / "references.json").read_text()) == held_out
    assert corpus.build("short", folder, 3) == tuned
