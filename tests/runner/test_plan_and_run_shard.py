"""`whisperfleet plan` + `run-shard` end to end: real tiny.en on CPU, local folders and moto S3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.support.paths import FAKES, WHISPERFLEET
from whisperfleet_runner import contract
from whisperfleet_runner.contract import OutputOptions, ShardReport, WorkOrder
from whisperfleet_runner.pipeline.ledger import FAILED, SUCCEEDED, merge, read_ledger
from whisperfleet_runner.pipeline.run import run_files
from whisperfleet_runner.pod.planner import plan, read_manifest
from whisperfleet_runner.pod.shard import run_shard
from whisperfleet_runner.storage import InputFile

GOOD = ["hello.wav", "nested/numbers.wav", "nested/deeper/hello.wav", "with space é.wav",
        "silence.wav"]
BAD = {  # key -> words its failure reason must hold
    "bad/empty.wav": "empty file (0 bytes)",
    "bad/truncated.mp3": "truncated",
    "bad/notes.mp3": "not an audio or video file",
    "hello.mp3": "output collision",  # hello.wav (larger, so first) owns out/hello.*
}


def stem(key: str) -> str:
    return key.rsplit(".", 1)[0]


def cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([WHISPERFLEET, *args], capture_output=True, text=True, timeout=300,
                          env=env or dict(os.environ))


def work_order(input_uri: str, output_uri: str, model: Path, shards: int = 2) -> WorkOrder:
    order = WorkOrder(job_uid="uid-1234", input_uri=input_uri,
                      output=OutputOptions(uri=output_uri), shards=shards, device="cpu")
    order.model.name = str(model)
    return order


def by_key(order: WorkOrder) -> dict[str, str]:
    """key -> merged ledger status of every file of the job."""
    records = merge(read_ledger(order.ledger_uri)).values()
    return {r.key: r.status for r in records}


@pytest.mark.slow
def test_local_job_plans_runs_and_reruns(tmp_path: Path, audio_dir: Path,
                                         tiny_model_path: Path) -> None:
    shutil.copytree(audio_dir, tmp_path / "in")
    out = tmp_path / "out"
    order = work_order(str(tmp_path / "in"), str(out), tiny_model_path)
    (tmp_path / "order.json").write_text(order.to_json())

    planned = cli(["plan", "--work-order", str(tmp_path / "order.json"),
                   "--termination-log", str(tmp_path / "plan.log")])
    assert planned.returncode == 0, planned.stderr
    report = contract.PlanReport.from_json((tmp_path / "plan.log").read_text())
    assert (report.files, report.shards, report.error_reason) == (9, 2, "")
    assert json.loads(planned.stdout) == json.loads((tmp_path / "plan.log").read_text())
    assert len(read_manifest(order.manifest_uri)) == 9

    # Shard 0 as a pod would run it: the index from the Indexed Job's env, order from env.
    env = {**os.environ, contract.ENV_WORK_ORDER: order.to_json(),
           contract.ENV_COMPLETION_INDEX: "0", "POD_NAME": "tj-0-abcde", "NODE_NAME": "node-a"}
    pod = cli(["run-shard", "--termination-log", str(tmp_path / "shard0.log")], env)
    message = (tmp_path / "shard0.log").read_bytes()
    assert len(message) <= contract.TERMINATION_MESSAGE_LIMIT
    first = ShardReport.from_json(message.decode())
    assert (first.pod, first.node, first.device) == ("tj-0-abcde", "node-a", "cpu")
    assert pod.returncode == (contract.EXIT_BAD_INPUT if first.failed else 0), pod.stderr
    second = run_shard(order, 1, {"POD_NAME": "tj-1-fghij"})
    reports = [first, second]

    assert sum(r.total for r in reports) == 9
    assert sum(r.succeeded for r in reports) == len(GOOD)
    assert sum(r.failed for r in reports) == sum(r.bad_input for r in reports) == len(BAD)
    reasons = {f.uri.split("/in/", 1)[1]: f.reason for r in reports for f in r.failures}
    for key, words in BAD.items():
        assert words in reasons[key], reasons[key]
    for key in GOOD:
        for fmt in contract.DEFAULT_FORMATS:
            assert (out / f"{stem(key)}.{fmt}").is_file(), (key, fmt)
    for key in ("bad/empty", "bad/truncated", "bad/notes"):
        assert not list(out.glob(f"{key}.*"))
    # The file's own words after its first: packed, a clip's frames are encoded with the
    # whole window, and beside these neighbours tiny.en hears "Hello" as "The low" (alone
    # or beside one of them, "Hello"). Over the short corpora packing gets more first words
    # right than --no-pack (benchmarks/README.md, "Measurements behind design choices").
    assert "world, this is a test of the transcription system" in \
        (out / "hello.txt").read_text().lower()
    assert (out / "silence.txt").read_text().strip() == ""
    assert json.loads((out / "silence.json").read_text())["segments"] == []
    statuses = by_key(order)
    assert {k: statuses[k] for k in GOOD} == dict.fromkeys(GOOD, SUCCEEDED)
    assert {k: statuses[k] for k in BAD} == dict.fromkeys(BAD, FAILED)

    # A re-run (a retried index) writes nothing new, and its reports (which the operator
    # counts) still say the job did every good file: the earlier attempt's records.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = [run_shard(order, i, {}) for i in (0, 1)]
    assert sum(r.skipped for r in again) == 0
    assert sum(r.succeeded for r in again) == len(GOOD)
    assert sum(r.audio_seconds for r in again) == pytest.approx(
        sum(r.audio_seconds for r in reports), abs=0.01)
    assert sum(r.failed for r in again) == len(BAD)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
             and ".whisperfleet" not in p.parts}
    assert after == {p: t for p, t in before.items() if ".whisperfleet" not in p.parts}
    assert by_key(order)["hello.wav"] == SUCCEEDED  # the later skip does not hide it


def test_climbing_key_fails_alone_and_no_model_loads_for_nothing(
    tmp_path: Path, audio_dir: Path
) -> None:
    out = tmp_path / "deep" / "out"
    order = work_order(str(audio_dir), str(out), Path("unused"))
    loads: list[int] = []

    def never() -> object:
        loads.append(1)
        raise AssertionError("the model must not load when no file needs it")

    files = [
        InputFile(uri=str(audio_dir / "hello.wav"), key="../../escape.wav", size=1),
        InputFile(uri=str(audio_dir / "hello.wav"), key="/etc/abs.wav", size=1),
        InputFile(uri=str(audio_dir / "bad" / "empty.wav"), key="bad/empty.wav", size=0),
    ]
    report = run_files(files, order.options, never, device="cpu")
    assert (report.total, report.failed, report.bad_input, report.succeeded) == (3, 3, 3, 0)
    assert "climb above" in report.failures[0].reason
    assert "absolute" in report.failures[1].reason
    assert loads == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_model_that_cannot_load_is_a_shard_error(tmp_path: Path, audio_dir: Path) -> None:
    result = cli(["run-shard", "--input", str(audio_dir / "hello.wav"), "--output",
                  str(tmp_path / "out"), "--device", "cpu", "--model", str(tmp_path / "nope"),
                  "--termination-log", str(tmp_path / "t.log")])
    assert result.returncode == contract.EXIT_USAGE, result.stderr
    report = ShardReport.from_json((tmp_path / "t.log").read_text())
    assert report.error_reason == "ModelNotFound"
    assert report.total == 1 and report.succeeded == 0  # the shard's file is still to do
    assert str(tmp_path / "nope") in report.error_message
    assert not (tmp_path / "out").exists()


def test_no_gpu_exit_code(tmp_path: Path, audio_dir: Path) -> None:
    env = {**os.environ, "NVIDIA_VISIBLE_DEVICES": "void"}
    result = cli(["run-shard", "--input", str(audio_dir / "hello.wav"), "--output",
                  str(tmp_path / "out"), "--device", "cuda"], env)
    assert result.returncode == contract.EXIT_NO_GPU
    report = ShardReport.from_json(result.stdout)
    assert report.error_reason == "NoGPU"
    assert "void" in report.error_message


def test_allocated_gpu_is_reported_without_loading_a_model(tmp_path: Path, audio_dir: Path
                                                           ) -> None:
    # Fake NVML: two GPUs visible (the `all` leak), the pod was allocated the second one.
    gpus = [{"uuid": f"GPU-0000000{i}-0000-4000-8000-000000000000", "name": "NVIDIA A100",
             "pci_bus_id": f"00000000:0{i}:00.0", "memory_total_mib": 40960, "cc": "8.0"}
            for i in (1, 2)]
    env = {**os.environ, "PYTHONPATH": str(FAKES), "WHISPERFLEET_FAKE_NVML": json.dumps(gpus),
           "NVIDIA_VISIBLE_DEVICES": gpus[1]["uuid"]}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = cli(["run-shard", "--input", str(audio_dir / "bad"), "--output",
                  str(tmp_path / "out"), "--device", "cuda"], env)
    report = ShardReport.from_json(result.stdout)
    assert result.returncode == contract.EXIT_BAD_INPUT, result.stderr
    assert [(g.uuid, g.device_index) for g in report.gpus] == [(gpus[1]["uuid"], 0)]
    assert report.device == "cuda:0" and report.failed == 3


def test_termination_message_stays_under_the_limit(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(60):  # many failures with long names: the report must still fit
        (folder / f"{i:02d}-{'x' * 180}.wav").write_bytes(b"")
    result = cli(["run-shard", "--input", str(folder), "--output", str(tmp_path / "out"),
                  "--device", "cpu", "--termination-log", str(tmp_path / "t.log")])
    assert result.returncode == contract.EXIT_BAD_INPUT, result.stderr
    message = (tmp_path / "t.log").read_bytes()
    assert len(message) <= contract.TERMINATION_MESSAGE_LIMIT
    report = ShardReport.from_json(message.decode())
    assert (report.total, report.failed) == (60, 60)
    assert 0 < len(report.failures) < 60


def upload(bucket: str, folder: Path, prefix: str) -> None:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}{path.relative_to(folder).as_posix()}")


@pytest.mark.slow
def test_s3_job_with_hostile_key(s3_env: dict[str, str], s3_bucket: str, audio_dir: Path,
                                 tiny_model_path: Path, tmp_path: Path) -> None:
    upload(s3_bucket, audio_dir, "in/")
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    s3.put_object(Bucket=s3_bucket, Key="in/evil/../../x.wav",
                  Body=(audio_dir / "hello.wav").read_bytes())
    order = work_order(f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/", tiny_model_path,
                       shards=1)
    planned = plan(order)
    assert (planned.files, planned.shards, planned.error_reason) == (10, 1, "")

    (tmp_path / "order.json").write_text(order.to_json())
    result = cli(["run-shard", "--work-order", str(tmp_path / "order.json"), "--index", "0",
                  "--termination-log", str(tmp_path / "t.log")], s3_env)
    assert result.returncode == contract.EXIT_BAD_INPUT, result.stderr
    report = ShardReport.from_json((tmp_path / "t.log").read_text())
    assert (report.succeeded, report.failed, report.bad_input) == (5, 5, 5)
    evil = [f.reason for f in report.failures if f.uri.endswith("evil/../../x.wav")]
    assert evil and "unsafe object key" in evil[0]

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    written = {k for k in keys if not k.startswith("in/")}
    assert all(k.startswith("out/") for k in written), written  # nothing escaped out/
    assert {f"out/{stem(k)}.{fmt}" for k in GOOD for fmt in contract.DEFAULT_FORMATS} <= written
    assert not any(k.startswith("out/x.") or "bad/" in k for k in written)
    ledger = [k for k in written if "/ledger/" in k]
    assert len(ledger) == 1
    assert ledger[0].startswith("out/.whisperfleet/uid-1234/ledger/shard-00000-")

    rerun = run_shard(order, 0, {})
    assert (rerun.skipped, rerun.succeeded, rerun.failed) == (0, 5, 5)
    assert by_key(order)["hello.wav"] == SUCCEEDED
    assert set(by_key(order).values()) == {SUCCEEDED, FAILED}  # a skip never hides a success


def test_options_the_model_cannot_honour_stop_the_shard_once(
    tmp_path: Path, audio_dir: Path
) -> None:
    # A multilingual model asked for a language it does not know would fail every file one
    # by one; the check after loading stops the shard with one reason instead.
    order = work_order(str(audio_dir), str(tmp_path / "out"), Path("unused"))

    class Picky:
        def unsupported(self, options: object) -> str:
            return "language 'xx' is not one model large-v3 knows"

    files = [InputFile(uri=str(audio_dir / "hello.wav"), key="hello.wav", size=1),
             InputFile(uri=str(audio_dir / "nested" / "numbers.wav"), key="n.wav", size=1)]
    report = run_files(files, order.options, Picky, device="cpu")
    assert report.error_reason == "UnsupportedOptions" and "'xx'" in report.error_message
    assert report.succeeded == 0 and report.failures == []
    assert not (tmp_path / "out").exists()
