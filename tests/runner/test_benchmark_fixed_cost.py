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
        [sys.executable, str(REPO / "benchmarks" / "fixed_cost.py"), "--pairs", "3"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pairs = [line for line in lines if line.startswith("pair ")]
    assert [p.split(":")[0] for p in pairs] == ["pair 1", "pair 2", "pair 3"], lines
    values = dict(line.split(" = ") for line in lines if " = " in line)
    # Measured 0.10 s on an idle 2-vCPU machine, where a spawned worker cost 1.9 s. Bounded
    # on the fastest run of each side, which other work on the machine slowed least: at a
    # load average of 10 on 2 vCPUs the pairs' median difference measured 1.64 s, the fastest
    # runs' -0.33 s.
    assert -1.0 < float(values["fastest_difference_seconds"]) < 1.0, result.stdout
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
