"""Long recordings: time and peak memory of whisperfleet vs bare faster-whisper, by length.

    python benchmarks/long_recording.py                     # 10 min, 1 h, 3 h; bare up to 1 h
    python benchmarks/long_recording.py --minutes 10 60 --bare-up-to 20
    python benchmarks/long_recording.py --minutes 1 --equal-minutes 1 --rounds 2  # smoke run

Each recording is made of the committed talks (corpus.py: six of them, 30-90 s) with 2 s
pauses between them, repeated to length in whole talks (so it can run a little longer than
asked: the length written is printed), and written as a 64 kbit/s mp3 a few seconds at a
time (so this script itself stays small). Both sides run as whole processes with the same
model and settings (bundled tiny.en, int8 on CPU, beam 5, VAD on, batch 8, whisperfleet's
CPU thread count for both), `--rounds` times each (default 2), alternating which goes
first; each side's best time and highest peak RSS are printed:
- whisperfleet: `whisperfleet transcribe FILE -o OUT` (the file streamed: read in ranges,
  decoded block by block, cut at silence, so memory should not grow with length);
- bare: `bare.py batched`, faster-whisper's BatchedInferencePipeline on the whole file,
  as a user would write it (decode_audio reads and decodes it whole).
Peak RSS is the child's (wait4's ru_maxrss), which starts at this script's own peak at the
moment it starts the child: that floor is printed last, and is far below either side. For
the `--equal-minutes` recording it also prints the WER between whisperfleet's transcript and
the bare one (the cuts between windows are the only place they may differ) and each side's
WER against the script of every talk written (missing trailing speech counts).
With `--heap`, whisperfleet runs under `heap_sampler.py` (a thread in its process samples
RSS and glibc's heap every 50 ms), and each length also prints, at the highest RSS sampled,
the heap's size, what was in use in it and what it kept free, and the most ever in use:
what the run held, against what the allocator kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

BIN = Path(sys.executable).parent
RATE = corpus.RATE
PAUSE_SECONDS = 2.0


@dataclass(frozen=True)
class Talk:
    """One talk followed by its pause (16 kHz int16), and what it says."""

    samples: np.ndarray
    text: str


@dataclass
class Run:
    """One side's runs on one recording: best wall time, highest peak RSS, last transcript,
    and the heap figures (heap_sampler.py) of the run with the highest sampled RSS."""

    walls: list[float]
    peaks: list[float]
    text: str = ""
    heap: dict[str, float] | None = None

    def add(self, wall: float, peak: float, text: str,
            heap: dict[str, float] | None = None) -> None:
        self.walls.append(wall)
        self.peaks.append(peak)
        self.text = text
        if heap and (self.heap is None or heap["peak_rss"] > self.heap["peak_rss"]):
            self.heap = heap


def talks(work: Path) -> list[Talk]:
    """The six committed talks, each followed by its pause."""
    folder = work / "talks"
    refs = corpus.build("long", folder, 6)
    pause = np.zeros(int(PAUSE_SECONDS * RATE), np.int16)
    found = []
    for name in sorted(refs):
        with wave.open(str(folder / name)) as w:
            speech = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        found.append(Talk(np.concatenate([speech, pause]), refs[name]))
    return found


def recording_plan(talk_samples: Sequence[int], seconds: float) -> list[int]:
    """The talks (indices, cycling through them) of a recording at least `seconds` long,
    whole talks only: the script of the talks written is then exactly what was said."""
    plan: list[int] = []
    total = 0
    while total < seconds * RATE or not plan:
        plan.append(len(plan) % len(talk_samples))
        total += talk_samples[plan[-1]]
    return plan


def write_mp3(path: Path, pieces: Sequence[np.ndarray]) -> float:
    """`pieces` one after the other as one mp3, 10 s at a time; returns its seconds."""
    import av

    written = 0
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=RATE, layout="mono")
        stream.bit_rate = 64000
        for samples in pieces:
            for at in range(0, samples.shape[0], 10 * RATE):
                piece = samples[at: at + 10 * RATE]
                frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16",
                                                   layout="mono")
                frame.sample_rate = RATE
                for packet in stream.encode(frame):
                    out.mux(packet)
                written += piece.shape[0]
        for packet in stream.encode(None):
            out.mux(packet)
    return written / RATE


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a whole process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited {proc.returncode}:\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def cpu_threads() -> int:
    """whisperfleet's CPU thread count (`gpu.cpus`), which the bare side gets too."""
    from whisperfleet_runner.gpu import cpus

    return cpus.available_cpus()


def whisperfleet(path: Path, model: str, out: Path, heap: bool = False
                 ) -> tuple[float, float, str, dict[str, float] | None]:
    args = ["transcribe", str(path), "-o", str(out), "--model", model, "--device", "cpu",
            "--compute-type", "int8", "--formats", "json", "--overwrite", "--quiet"]
    figures = out.parent / "heap.json"
    command = ([sys.executable, str(HERE / "heap_sampler.py"), str(figures), *args] if heap
               else [str(BIN / "whisperfleet"), *args])
    wall, rss = run(command)
    text = json.loads((out / f"{path.stem}.json").read_text())["text"]
    return wall, rss, text, json.loads(figures.read_text()) if heap else None


def heap_line(heap: dict[str, float]) -> str:
    """What glibc's heap held at the highest RSS sampled (heap_sampler.py)."""
    if "heap_at_peak" not in heap:
        return f"sampled peak RSS {heap['peak_rss']:.0f} MiB (no glibc heap figures)"
    return (f"at the sampled peak RSS {heap['peak_rss']:.0f} MiB: heap "
            f"{heap['heap_at_peak']:.0f} MiB ({heap['in_use_at_peak']:.0f} in use, "
            f"{heap['free_at_peak']:.0f} free), {heap['mapped_at_peak']:.0f} MiB mapped "
            f"blocks; most in use at any time {heap['most_in_use']:.0f} MiB")


def bare(path: Path, model: str, work: Path) -> tuple[float, float, str]:
    folder = work / f"bare-{path.stem}"
    folder.mkdir(exist_ok=True)
    link = folder / f"{path.stem}.wav"  # bare.py globs *.wav; FFmpeg reads the mp3 inside
    if not link.exists():
        link.symlink_to(path)
    result = work / "bare.json"
    wall, rss = run(bare_command(folder, result, model))
    return wall, rss, json.loads(result.read_text())[link.name]


def bare_command(folder: Path, result: Path, model: str) -> list[str]:
    return [sys.executable, str(HERE / "bare.py"), "batched", str(folder), str(result),
            "--model", model, "--threads", str(cpu_threads())]


def wer(reference: str, hypothesis: str) -> float:
    """jiwer's WER over lower-cased words without punctuation: speech missing anywhere,
    the end included, counts as deleted words."""
    import jiwer

    return float(jiwer.wer(corpus_normal(reference), corpus_normal(hypothesis) or "<empty>"))


def corpus_normal(text: str) -> str:
    return " ".join("".join(c for c in w.lower() if c.isalnum()) for w in text.split())


def alternated(rounds: int, sides: list[str]) -> list[list[str]]:
    """The order of the sides in each round: reversed every other round."""
    return [sides if r % 2 == 0 else sides[::-1] for r in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 180])
    parser.add_argument("--bare-up-to", type=float, default=60,
                        help="run the bare side only on recordings up to this many minutes")
    parser.add_argument("--equal-minutes", type=float, default=20,
                        help="the recording whose transcripts are compared (0: none)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side per length")
    parser.add_argument("--model", default=None, help="default: bundled tiny.en")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wf-long")
    parser.add_argument("--heap", action="store_true",
                        help="sample whisperfleet's RSS and glibc heap (heap_sampler.py)")
    args = parser.parse_args()
    model = args.model or corpus_model()
    args.work.mkdir(parents=True, exist_ok=True)
    base = talks(args.work)
    print(f"{len(base)} talks with {PAUSE_SECONDS:g} s pauses: "
          f"{sum(t.samples.shape[0] for t in base) / RATE:.0f} s; {cpu_threads()} CPU threads "
          f"each side; {args.rounds} rounds, alternated")
    lengths = sorted(set(args.minutes) | ({args.equal_minutes} if args.equal_minutes else set()))
    for minutes in lengths:
        plan = recording_plan([t.samples.shape[0] for t in base], minutes * 60)
        path = args.work / f"recording-{minutes:g}min.mp3"
        seconds = write_mp3(path, [base[i].samples for i in plan])
        reference = " ".join(base[i].text for i in plan)
        sides = ["whisperfleet"]
        if minutes <= args.bare_up_to or minutes == args.equal_minutes:
            sides.append("bare")
        runs = {side: Run([], []) for side in sides}
        for number, order in enumerate(alternated(args.rounds, sides), 1):
            for side in order:
                runs[side].add(*(whisperfleet(path, model, args.work / "out", args.heap) if
                                 side == "whisperfleet" else bare(path, model, args.work)))
            print(f"{minutes:g} min round {number}: " + ", ".join(
                f"{side} {runs[side].walls[-1]:.1f} s" for side in order), flush=True)
        ours = runs["whisperfleet"]
        line = (f"{minutes:g} min ({seconds / 60:.1f} min written, {len(plan)} talks): "
                f"whisperfleet {min(ours.walls):.1f} s, peak RSS {max(ours.peaks):.0f} MiB, "
                f"{seconds / min(ours.walls):.1f}x real time")
        if "bare" in runs:
            theirs = runs["bare"]
            line += (f" | bare {min(theirs.walls):.1f} s, peak RSS {max(theirs.peaks):.0f} MiB"
                     f" | time ratio {min(theirs.walls) / min(ours.walls):.2f}")
            if minutes == args.equal_minutes:
                print(f"{minutes:g} min: wer_between_sides = {wer(theirs.text, ours.text):.4f}; "
                      f"wer_whisperfleet = {wer(reference, ours.text):.4f}; "
                      f"wer_bare = {wer(reference, theirs.text):.4f}")
        print(line, flush=True)
        if ours.heap is not None:
            print(f"{minutes:g} min whisperfleet heap: {heap_line(ours.heap)}", flush=True)
    print(f"this script's own peak RSS (the floor of every figure above): {own_peak_mib():.0f} MiB")


def own_peak_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def corpus_model() -> str:
    from whisperfleet_runner.decode import models

    return models.resolve_model("tiny.en")


if __name__ == "__main__":
    main()
