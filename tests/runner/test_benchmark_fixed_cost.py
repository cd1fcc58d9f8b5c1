"""benchmarks/fixed_cost.py runs and says what it measured; corpus seeds draw held-out clips."""

from __future__ import annotations

import json
import re
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
    fastest = re.search(r"^fastest: whisperfleet ([\d.]+) s, bare ([\d.]+) s$", result.stdout,
                        re.M)
    assert fastest, result.stdout
    ours, bare = float(fastest.group(1)), float(fastest.group(2))
    # Idle (2-vCPU AMD EPYC): 0.93 s against 0.83 s, 1.12x; with a spawned worker it was
    # 1.94 s more, 3.3x. Bounded as the ratio of each side's fastest run, the one other work
    # slowed least, since that work slows both sides alike: at a load average of 10 on the
    # same machine the pairs' median difference was 1.64 s, the fastest runs 4.75 s against
    # 5.08 s (0.94x).
    assert 0.5 * bare <= ours <= 1.5 * bare, result.stdout
    assert float(values["fastest_difference_seconds"]) == pytest.approx(ours - bare, abs=0.011)
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
