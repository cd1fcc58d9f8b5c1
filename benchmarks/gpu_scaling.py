"""Files per second of one shard pod with 1, 2 and 4 GPUs, side by side on the same files.

    python benchmarks/gpu_scaling.py              # fake GPUs on the CPU (no GPU here)
    python benchmarks/gpu_scaling.py --real       # the machine's own GPUs, through NVML

Each run is `whisperfleet run-shard` as a pod would run it, a whole process (start-up and
model loads included), with NVIDIA_VISIBLE_DEVICES naming its GPUs. With fake GPUs (the
test NVML and the GPU-on-CPU switch) every worker's model runs on the CPU and the runner
splits the CPU threads evenly between them (CPUs // N each, at least 1), so the total
compute is the same for every N that divides the CPU count: only those N run (the others
are named and left out: 4 workers on 2 CPUs would run 4 threads, twice N=1's 2), and the
ratio `throughput_N / throughput_1` measures the scheduling overhead (ideal 1.00). On real GPUs the
ideal is N: the script prints `scaling_N = throughput_N / (N x throughput_1)` (goal >= 0.9)
and each GPU's share of the files (no GPU idle while files remain).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

BIN = Path(sys.executable).parent
FAKE_GPU = {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "cc": "9.0"}


def fake_gpus(count: int) -> list[dict[str, object]]:
    return [{**FAKE_GPU, "uuid": f"GPU-{i:08x}-0000-4000-8000-000000000000",
             "pci_bus_id": f"00000000:{0x18 + i:02X}:00.0"} for i in range(count)]


def equal_compute(counts: list[int], cpus: int) -> tuple[list[int], list[int]]:
    """(counts of fake GPUs whose workers share out exactly `cpus` threads, the others): N
    workers get CPUs // N threads each (at least 1), the runner's split."""
    kept = [n for n in counts if n <= cpus and cpus % n == 0]
    return kept, [n for n in counts if n not in kept]


def real_gpu_uuids() -> list[str]:
    from whisperfleet_runner.gpu import nvml

    return [g.uuid for g in nvml.list_gpus()]


def run_pod(order: dict[str, object], uuids: list[str], env: dict[str, str], work: Path
            ) -> tuple[float, dict[str, object]]:
    log = work / "termination-log"
    pod_env = {**env, "WHISPERFLEET_WORK_ORDER": json.dumps(order),
               "JOB_COMPLETION_INDEX": "0", "NVIDIA_VISIBLE_DEVICES": ",".join(uuids),
               "POD_NAME": f"bench-{len(uuids)}"}
    started = time.perf_counter()
    subprocess.run([str(BIN / "whisperfleet"), "run-shard", "--overwrite",
                    "--termination-log", str(log)], env=pod_env, check=True,
                   capture_output=True)
    return time.perf_counter() - started, json.loads(log.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="use this machine's GPUs")
    parser.add_argument("--count", type=int, default=8, help="talks of 30-90 s")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gpus", default="1,2,4")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "wf-bench")
    args = parser.parse_args()
    folder = args.corpus / f"long-{args.count}"
    corpus.build("long", folder, args.count)
    counts = [int(n) for n in args.gpus.split(",")]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if args.real:
        uuids = real_gpu_uuids()
        counts = [n for n in counts if n <= len(uuids)]
        label = "real GPUs"
    else:
        from whisperfleet_runner.gpu import cpus

        threads = cpus.available_cpus()  # what the runner splits between its workers
        counts, unequal = equal_compute(counts, threads)
        if unequal:
            print(f"left out: {unequal} fake GPU(s), whose workers cannot share {threads} "
                  "CPU threads evenly (the compute would differ from 1 GPU's)")
        if not counts:
            raise SystemExit(f"no GPU count to compare on {threads} CPUs")
        fakes = fake_gpus(max(counts))
        uuids = [str(g["uuid"]) for g in fakes]
        env.update(PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "fakes"),
                                               env.get("PYTHONPATH", "")]),
                   WHISPERFLEET_FAKE_NVML=json.dumps(fakes), WHISPERFLEET_TEST_GPU_ON_CPU="1")
        label = f"fake GPUs sharing {threads} CPU threads"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        order = {"job_uid": "bench", "input_uri": str(folder), "shards": 1,
                 "output": {"uri": str(work / "out"), "formats": ["json"], "overwrite": True},
                 "model": {"name": "tiny.en", "compute_type": "auto"},
                 "include": ["*.wav"], "device": "cuda"}
        (work / "order.json").write_text(json.dumps(order))
        subprocess.run([str(BIN / "whisperfleet"), "plan", "--work-order",
                        str(work / "order.json")], env=env, check=True, capture_output=True)
        best: dict[int, float] = {}
        print(f"{args.count} talks, {label}")
        for round_ in range(args.rounds):
            for n in counts if round_ % 2 == 0 else counts[::-1]:
                wall, report = run_pod(order, uuids[:n], env, work)
                best[n] = min(best.get(n, wall), wall)
                shares = [g["files"] for g in report["gpus"]]
                print(f"round {round_ + 1} {n} GPU(s): wall {wall:6.1f} s  "
                      f"{report['total'] / wall:5.3f} files/s  files per GPU {shares}",
                      flush=True)
    for n in counts[1:]:
        ratio = best[counts[0]] / best[n]
        if args.real:
            print(f"scaling_{n} = {ratio / n:.2f}")
        else:
            print(f"throughput_{n}_vs_1 = {ratio:.2f}")


if __name__ == "__main__":
    main()
