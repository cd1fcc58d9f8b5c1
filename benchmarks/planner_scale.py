"""The planner at scale: its time and peak memory next to a bare s3fs listing of the same prefix.

    python benchmarks/planner_scale.py                       # 10,000 and 100,000 objects
    python benchmarks/planner_scale.py --counts 2000 --rounds 1   # quick smoke run

For each object count a fresh moto S3 server (its own process, no proxy) gets that many objects
(`in/dNN/…wav`, sizes varied), PUT from threads and not timed. Then, alternating which goes
first, two whole child processes run against it:

  bare     s3fs `find(…, detail=True)`: names and sizes of every object of the prefix, the
           listing the planner needs at the least;
  planner  `whisperfleet_runner.pod.planner.plan` for 4 workers: lists the input (and the
           empty output), balances, writes the manifest and uploads it.

Each child imports the same modules first (s3fs, numpy, the runner), then times only its
work (wall time, and the client's own CPU time: moto's cost per page grows with the bucket,
real S3's does not); memory is the process's peak RSS (VmHWM) and its growth over the RSS
after imports. The output ends with `planner_vs_bare_listing_time = …` per count (best of
each side) and the growth of each side's peak RSS from the smallest to the largest count.
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
sys.path.insert(0, str(REPO))
from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY  # noqa: E402
from tests.support.moto_process import moto_process, put_many  # noqa: E402

BUCKET = "planner-scale"


def memory_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, KiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        fields = dict(line.split(":", 1) for line in fh if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) for k, v in fields.items()}


def child(side: str) -> None:
    """One measured side, in this process; prints a JSON line."""
    import s3fs  # both sides import the same modules before measuring

    from whisperfleet_runner.contract import OutputOptions, WorkOrder
    from whisperfleet_runner.pod.planner import plan

    before = memory_kib()["VmRSS"]
    started, cpu = time.perf_counter(), time.process_time()
    if side == "bare":
        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
        objects = len(fs.find(f"{BUCKET}/in/", detail=True))
    else:
        order = WorkOrder(job_uid=f"bench-{os.getpid()}", input_uri=f"s3://{BUCKET}/in/",
                          output=OutputOptions(uri=f"s3://{BUCKET}/out/"))
        report = plan(order, workers=4)
        assert not report.error_reason, report
        objects = report.files
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = memory_kib()["VmHWM"]
    print(json.dumps({"side": side, "objects": objects, "seconds": seconds, "cpu": cpu,
                      "rss_after_imports_kib": before, "peak_rss_kib": peak}))


def run_child(side: str, env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--child", side], env=env,
                            capture_output=True, text=True, timeout=3600, check=False)
    if result.returncode:
        raise SystemExit(f"{side} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def seed(endpoint: str, count: int) -> float:
    import boto3

    client = {"aws_access_key_id": S3_ACCESS_KEY, "aws_secret_access_key": S3_SECRET_KEY,
              "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, **client).create_bucket(Bucket=BUCKET)
    started = time.monotonic()
    put_many(endpoint, BUCKET, ((f"in/d{i % 100:02d}/talk-{i:07d}.wav", b"\0" * (1 + i % 97))
                                for i in range(count)), threads=10, **client)
    return time.monotonic() - started


def measure(count: int, rounds: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="planner-scale-") as work, \
            moto_process(Path(work)) as moto:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": moto.server}  # straight to moto: no proxy timed
        print(f"{count} objects: seeded in {seed(moto.server, count):.0f} s", flush=True)
        best: dict[str, dict[str, float]] = {}
        for r in range(rounds):
            for side in (("bare", "planner") if r % 2 == 0 else ("planner", "bare")):
                run = run_child(side, env)
                assert run["objects"] == count, run
                print(f"  {side:8s} {run['seconds']:7.2f} s ({run['cpu']:6.2f} s CPU)  peak RSS "
                      f"{run['peak_rss_kib'] / 1024:6.1f} MiB (after imports "
                      f"{run['rss_after_imports_kib'] / 1024:6.1f} MiB)", flush=True)
                if side not in best or run["seconds"] < best[side]["seconds"]:
                    best[side] = run
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["bare", "planner"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    results = {count: measure(count, args.rounds) for count in sorted(args.counts)}
    for count, best in results.items():
        bare, planner = best["bare"], best["planner"]
        print(f"planner_vs_bare_listing_time[{count}] = "
              f"{planner['seconds'] / bare['seconds']:.2f}  "
              f"({planner['seconds']:.2f} s vs {bare['seconds']:.2f} s)")
        print(f"planner_vs_bare_listing_cpu[{count}] = {planner['cpu'] / bare['cpu']:.2f}  "
              f"(client CPU: {planner['cpu']:.2f} s vs {bare['cpu']:.2f} s)")
        for side, run in (("planner", planner), ("bare", bare)):
            growth = (run["peak_rss_kib"] - run["rss_after_imports_kib"]) / 1024
            print(f"peak_rss_{side}[{count}] = {run['peak_rss_kib'] / 1024:.1f} MiB "
                  f"(+{growth:.1f} MiB over imports)")
    low, high = min(results), max(results)
    if low != high:
        for side in ("planner", "bare"):
            delta = (results[high][side]["peak_rss_kib"]
                     - results[low][side]["peak_rss_kib"]) / 1024
            print(f"peak_rss_growth_{side}[{low}->{high}] = {delta:+.1f} MiB "
                  f"({delta * 1024 * 1024 / (high - low):.0f} bytes per object)")


if __name__ == "__main__":
    main()
