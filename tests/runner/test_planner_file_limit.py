"""The planner under a low open-file limit: partitions are merged in rounds, never all at once.

The planner's sorted runs are one file per hash partition (65,536 files each); merging them
all at once opened every one, so past about 1,000 partitions (65 million files) a planner
with the default limit of 1,024 open files died with EMFILE. Here partitions hold 4 files,
so 1,200 files make 300 of them, and the planner runs in its own process under
`RLIMIT_NOFILE` 64 (set after its imports, as a container's limit would be).
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from whisperfleet_runner.contract import OutputOptions, WorkOrder
from whisperfleet_runner.pod import planner
from whisperfleet_runner.pod.manifest import read_manifest

FILES, PER_PARTITION, LIMIT = 1200, 4, 64
PLAN_UNDER_LIMIT = """
import resource, sys
from whisperfleet_runner.contract import OutputOptions, WorkOrder
from whisperfleet_runner.pod import partitions, planner

root, limit, open_runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
partitions.PARTITION, partitions.BLOCK, partitions.MAX_OPEN_RUNS = 4, 3, open_runs
order = WorkOrder(job_uid="fd", input_uri=root + "/in", device="cpu", shards=7,
                  output=OutputOptions(uri=root + "/out", formats=["json", "txt"]))
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
report = planner.plan(order)
print(report.files, report.shards, report.error_message or "planned")
"""


def order_for(root: Path) -> WorkOrder:
    """FILES files of many sizes in 12 folders; every fourth one done in both formats."""
    rng = random.Random(28)
    for i in range(FILES):
        name = f"d{i % 12}/talk-{i:05d}"
        (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "in" / f"{name}.wav").write_bytes(b"x" * rng.randint(0, 2000))
        if i % 4 == 0:
            (root / "out" / name).parent.mkdir(parents=True, exist_ok=True)
            for fmt in ("json", "txt"):
                (root / "out" / f"{name}.{fmt}").write_text("{}")
    return WorkOrder(job_uid="fd", input_uri=str(root / "in"), device="cpu", shards=7,
                     output=OutputOptions(uri=str(root / "out"), formats=["json", "txt"]))


def plan_in_a_process(root: Path, open_runs: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PLAN_UNDER_LIMIT, str(root), str(LIMIT),
                           str(open_runs)], capture_output=True, text=True, timeout=300)


def test_a_planner_with_more_partitions_than_open_files_plans_as_one_partition(
    tmp_path: Path,
) -> None:
    order = order_for(tmp_path)
    assert not planner.plan(order).error_reason  # here: one partition
    whole = read_manifest(order.manifest_uri)
    assert FILES // PER_PARTITION > LIMIT
    # 300 runs merged 16 at a time: 19 runs, then 2, then the last merge.
    result = plan_in_a_process(tmp_path, open_runs=16)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"{FILES} 7 planned", result.stdout
    assert read_manifest(order.manifest_uri) == whole
    assert sum(e.done for e in whole) == FILES // 4


def test_the_limit_is_real_one_merge_of_every_run_meets_it(tmp_path: Path) -> None:
    # The control: every run opened at once (as before rounds) fails under the same limit,
    # so the test above proves the rounds, not a limit that never bit.
    order_for(tmp_path)
    result = plan_in_a_process(tmp_path, open_runs=10**6)
    assert result.returncode != 0
    assert "Too many open files" in result.stdout + result.stderr, result.stderr[-3000:]
