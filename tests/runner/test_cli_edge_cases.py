"""`whisperfleet` as a new user runs it on audio and folder shapes nobody prepared for.

Each test pins a problem found by doing exactly that (hostile names, transcripts next to the
audio, an unwritable --summary-json, a missing output bucket, run-shard on a laptop, short
clips packed together). Audio is made here from the committed fixtures with `wave`/numpy;
the console script runs in a subprocess with the bundled tiny.en model on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support.paths import WHISPERFLEET


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WHISPERFLEET), *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def _cut(src: Path, dst: Path, seconds: float) -> None:
    """The first `seconds` of a 16-bit PCM WAV (a clip that stops mid-sentence)."""
    with wave.open(str(src), "rb") as r:
        params, frames = r.getparams(), r.readframes(int(seconds * r.getframerate()))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(np.frombuffer(frames, dtype=np.int16).tobytes())


# Names that broke CLIs before: shell/URL metacharacters, a leading dash, unicode, a newline.
HOSTILE = ['sp ace ü "q".wav', "#h %p ?.wav", "st*ar [ab].wav", "-x.wav", "it's.WAV",
           "new\nline.Mp3", "a/b/c/d/e/f/g/h/deep.wav", "same/hello.wav", "other/hello.wav"]


@pytest.mark.slow
def test_hostile_folder_is_uneventful(tmp_path: Path, audio_dir: Path,
                                      tiny_model_path: Path) -> None:
    root = tmp_path / "in"
    for name in HOSTILE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(audio_dir / ("hello.mp3" if name.endswith(".Mp3") else "hello.wav"),
                    root / name)
    (root / "zero.wav").write_bytes(b"")
    (root / "x.wav").mkdir()  # a folder with an audio name is no input
    (root / ".whisperfleet").mkdir()
    shutil.copy(audio_dir / "hello.wav", root / ".whisperfleet" / "state.wav")
    (root / "link.wav").symlink_to(root / "-x.wav")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    # `--` lets INPUTs start with a dash; the folder itself does not, but say it as users do.
    # --no-pack: names are under test here; packing has its own test below.
    result = cli("transcribe", "--model", str(tiny_model_path), "--device", "cpu", "-q",
                 "--no-pack", "--formats", "json", "--summary-json", str(summary), "-o", str(out),
                 "--", str(root))
    assert result.returncode == 1, result.stderr  # exactly one bad file: zero.wav
    data = json.loads(summary.read_text(encoding="utf-8"))
    assert data["files"]["succeeded"] == len(HOSTILE) + 1  # + the symlink
    assert [f["uri"] for f in data["failures"]] == [str(root / "zero.wav")]
    assert "empty file" in data["failures"][0]["reason"]
    for name in [*HOSTILE, "link.wav"]:
        stem = name.rsplit(".", 1)[0]
        text = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))["text"]
        assert "world" in text.lower(), name  # hello.* says "Hello world, …"
    assert not (out / ".whisperfleet" / "state.json").exists()
    assert not (out / "x.json").exists()
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_transcripts_next_to_the_audio(tmp_path: Path, audio_dir: Path,
                                       tiny_model_path: Path) -> None:
    # `-o` the input folder itself used to fail with "no files match" (exit 2).
    root = tmp_path / "talks"
    root.mkdir()
    shutil.copy(audio_dir / "hello.wav", root / "hello.wav")
    args = ("transcribe", str(root), "-o", str(root), "--model", str(tiny_model_path),
            "--device", "cpu", "-q", "--formats", "json,txt")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "world" in (root / "hello.txt").read_text(encoding="utf-8").lower()
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stderr  # the re-run resumes instead of redoing the file
    # A file named inside the output folder is an input too.
    shutil.copy(audio_dir / "nested" / "numbers.wav", root / "numbers.wav")
    one = cli("transcribe", str(root / "numbers.wav"), "-o", str(root),
              "--model", str(tiny_model_path), "--device", "cpu", "-q", "--formats", "txt")
    assert one.returncode == 0, one.stderr
    assert (root / "numbers.txt").is_file()


@pytest.mark.parametrize("where", ["missing-folder/s.json", "is-a-dir"])
def test_unwritable_summary_json_is_refused_before_any_work(
    tmp_path: Path, audio_dir: Path, where: str
) -> None:
    (tmp_path / "is-a-dir").mkdir()
    out = tmp_path / "out"
    result = cli("transcribe", str(audio_dir / "hello.wav"), "-o", str(out),
                 "--model", "tiny.en", "--device", "cpu", "--summary-json",
                 str(tmp_path / where), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--summary-json" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()  # refused before transcribing anything


def test_missing_output_bucket_names_the_output_not_an_internal_key(
    s3_env: dict[str, str], audio_dir: Path
) -> None:
    result = cli("transcribe", str(audio_dir / "hello.wav"), "-o", "s3://no-such-bucket-wf/x/",
                 "--model", "tiny.en", "--device", "cpu", env=s3_env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "no-such-bucket-wf" in result.stderr and "does not exist" in result.stderr
    assert "preflight" not in result.stderr


def test_run_shard_input_on_a_machine_without_gpu_says_how_to_use_the_cpu(
    tmp_path: Path, audio_dir: Path, fake_nvml: object
) -> None:
    env = fake_nvml(None)  # type: ignore[operator]  # no driver, as on a laptop
    result = cli("run-shard", "--input", str(audio_dir / "hello.wav"), "--output",
                 str(tmp_path / "out"), "--model", "tiny.en", env=env, timeout=120)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["error_reason"] == "NoGPU"
    assert "--device cpu" in report["error_message"]


def test_transcribe_help_tells_how_to_name_dash_files_and_the_exit_codes() -> None:
    result = cli("transcribe", "--help", timeout=60)
    assert result.returncode == 0
    assert "-- -intro.wav" in result.stdout
    assert "130 interrupted" in " ".join(result.stdout.split())


@pytest.mark.slow
def test_packed_short_clips_each_keep_their_own_words(
    tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    root = tmp_path / "clips"
    _cut(audio_dir / "hello.wav", root / "a.wav", 2.0)  # "Hello world, this is …"
    _cut(audio_dir / "with space é.wav", root / "b.wav", 2.0)  # "The quick brown …"
    shutil.copy(audio_dir / "nested" / "numbers.wav", root / "c.wav")
    out = tmp_path / "out"
    result = cli("transcribe", str(root), "-o", str(out), "--model", str(tiny_model_path),
                 "--device", "cpu", "-q", "--formats", "txt")  # packing is the default
    assert result.returncode == 0, result.stderr
    texts = {n: (out / f"{n}.txt").read_text(encoding="utf-8").lower() for n in "abc"}
    assert "hello" in texts["a"] and "quick" not in texts["a"], texts
    assert "quick" in texts["b"] and "hello" not in texts["b"], texts
    # tiny.en writes the counting as digits or as words, depending on the host's kernels.
    assert ("5" in texts["c"] or "five" in texts["c"]) and "hello" not in texts["c"], texts
