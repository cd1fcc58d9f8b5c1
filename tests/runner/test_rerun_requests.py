"""A re-run of a finished job decides every skip from listings: requests counted by the S3
server itself (moto's recorder, in its own process), for 2,000 finished files.

What may be asked to decide: the planner lists the input and the output (1,000 keys a page,
our outputs and the earlier job's state folder included), and each shard pod reads the
manifest once. No HEAD, no other read. S3's pages make the decision cost
⌈files/1000⌉ + ⌈(files × formats + state)/1000⌉ + shards requests.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import boto3
import pytest

from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.moto_process import MotoProcess, kinds, moto_process, put_many
from whisperfleet_runner import storage
from whisperfleet_runner.contract import DEFAULT_FORMATS, OutputOptions, WorkOrder
from whisperfleet_runner.pipeline.ledger import SKIPPED, merge, read_ledger
from whisperfleet_runner.pod.planner import plan
from whisperfleet_runner.pod.shard import run_shard

pytestmark = pytest.mark.slow  # a server process and 12,000 objects

FILES, WORKERS = 2000, 4
SPEAKERS = ("alice", "bob", "carol", "dave", "erin")
STATE = 17  # the earlier job's manifest and its 16 shards' ledgers
CREDENTIALS = {"aws_access_key_id": S3_ACCESS_KEY, "aws_secret_access_key": S3_SECRET_KEY,
               "region_name": "us-east-1"}


def use(moto: MotoProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the standard AWS environment at this test's server."""
    for key, value in {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto.endpoint
                       }.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoProcess]:
    with moto_process(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def finished(moto: MotoProcess) -> str:
    """A bucket after a finished job: inputs, every output in 1 and in 4 formats (two output
    prefixes), and that job's state folders."""
    bucket = f"wf-rerun-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto.server, **CREDENTIALS).create_bucket(Bucket=bucket)
    # Folders with different first letters: the outputs share no start, so the whole output
    # prefix is listed, the earlier job's state folder with it (the costliest case).
    stems = [f"{SPEAKERS[i % len(SPEAKERS)]}/talk-{i:05d}" for i in range(FILES)]
    objects = [(f"in/{s}.wav", b"\0" * (1 + i % 50)) for i, s in enumerate(stems)]
    for out, formats in (("out1", ("json",)), ("out4", DEFAULT_FORMATS)):
        objects += [(f"{out}/{s}.{fmt}", b"{}") for s in stems for fmt in formats]
        state = f"{out}/.whisperfleet/earlier-job"
        objects += [(f"{state}/manifest.jsonl", b"")]
        objects += [(f"{state}/ledger/shard-{i:05d}-pod.jsonl", b"") for i in range(STATE - 1)]
    put_many(moto.server, bucket, objects, **CREDENTIALS)  # around the proxy: not counted
    return bucket


@pytest.mark.parametrize("out", ["out1", "out4"])
def test_a_rerun_decides_every_skip_from_listings(
    moto: MotoProcess, finished: str, out: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(moto, monkeypatch)
    formats = ("json",) if out == "out1" else DEFAULT_FORMATS
    order = WorkOrder(job_uid=f"rerun-{out}", input_uri=f"s3://{finished}/in/", device="cpu",
                      output=OutputOptions(uri=f"s3://{finished}/{out}/", formats=formats))
    order.model.name = "no-model-is-loaded-for-skipped-files"

    with moto.recording() as planning:
        report = plan(order, workers=WORKERS)
    assert (report.files, report.shards, report.error_reason) == (FILES, 4 * WORKERS, "")
    with moto.recording() as running:
        reports = [run_shard(order, i, {"POD_NAME": f"{out}-{i}"}) for i in range(report.shards)]
    assert [r.error_reason for r in reports] == [""] * report.shards
    assert (sum(r.skipped for r in reports), sum(r.total for r in reports)) == (FILES, FILES)
    records = merge(read_ledger(order.ledger_uri)).values()
    assert {(r.status, r.reason) for r in records} == {(SKIPPED, "outputs exist")}
    assert len(records) == FILES

    pages = math.ceil(FILES / 1000) + math.ceil((FILES * len(formats) + STATE) / 1000)
    assert kinds(planning) == {"LIST": pages, "PUT": 1}  # the PUT: the manifest
    # Shard pods: one manifest read each; their only other requests record the skips.
    ledger = f"/{finished}/{out}/.whisperfleet/{order.job_uid}/ledger/"
    recording = [r for r in running if r.kind == "PUT" and r.path.startswith(ledger)]
    deciding = [r for r in running if r not in recording]
    assert kinds(deciding) == {"GET": report.shards}
    assert {r.path for r in deciding} == {f"/{finished}/{out}/.whisperfleet/{order.job_uid}"
                                          "/manifest.jsonl"}
    # One format: 2 + 3 + 16 = 21 for 2,000 files (files/500 + shards would be 20, but for
    # the earlier job's state keys); four formats: 2 + 9 + 16 = 27. No request per file.
    total = pages + report.shards
    print(f"\n{FILES} files, {len(formats)} format(s), {report.shards} shards: "
          f"{total} requests decide every skip "
          f"({dict(kinds(r for r in planning + deciding if r.kind != 'PUT'))}); "
          f"recording the skips: {len(recording)} ledger PUTs")


def test_one_file_into_a_big_output_lists_only_keys_that_begin_like_it(
    moto: MotoProcess, finished: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local run of one file into a prefix of 8,000 outputs: one request, not eight.
    use(moto, monkeypatch)
    files = [storage.InputFile(f"s3://{finished}/in/bob/talk-00001.wav", "bob/talk-00001.wav", 2),
             storage.InputFile(f"s3://{finished}/in/bob/talk-00002.wav", "bob/talk-0000x.wav", 2)]
    with moto.recording() as seen:
        marked = storage.mark_done(files, f"s3://{finished}/out4/", DEFAULT_FORMATS)
    assert [f.done for f in marked] == [True, False]
    assert [(r.kind, r.query >= {"prefix"}) for r in seen] == [("LIST", True)]
