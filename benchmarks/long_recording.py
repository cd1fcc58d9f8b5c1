"""Long recordings: time and peak memory of whisperfleet vs bare faster-whisper, by length.

    python benchmarks/long_recording.py                     # 10 min, 1 h, 3 h; bare up to 1 h
    python benchmarks/long_recording.py --minutes 10 60 --bare-up-to 20
    python benchmarks/long_recording.py --minutes 2 --equal-minutes 2   # a quick smoke run

Each recording is made of espeak-ng talks (corpus.py, seeded) with pauses between them,
repeated to length, and written as a 64 kbit/s mp3 a few seconds at a time (so this script
itself stays small). Both sides run as whole processes, one after the other, with the same
model and settings (bundled tiny.en, int8 on CPU, beam 5, VAD on, batch 8):
- whisperfleet: `whisperfleet transcribe FILE -o OUT` (the file streamed: read in ranges,
  decoded block by block, cut at silence, so memory should not grow with length);
- bare: `bare.py batched`, faster-whisper's BatchedInferencePipeline on the whole file,
  as a user would write it (decode_audio reads and decodes it whole).
Peak RSS is the child's (wait4's ru_maxrss), which starts at this script's own peak at the
moment it starts the child: that floor is printed last, and is far below either side. For
the `--equal-minutes` recording it also prints the WER between whisperfleet's transcript and
the bare one (the cuts between windows are the only place they may differ) and each side's
WER against the script.
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
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

BIN = Path(sys.executable).parent
RATE = 16000
PAUSE_SECONDS = 2.0


def base_recording(work: Path) -> tuple[np.ndarray, str]:
    """Six talks with pauses between them (about 6 minutes), and their script."""
    folder = work / "talks"
    refs = corpus.build("long", folder, 6)
    parts, words = [], []
    for name in sorted(refs):
        with wave.open(str(folder / name)) as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), np.int16))
        parts.append(np.zeros(int(PAUSE_SECONDS * RATE), np.int16))
        words.append(refs[name])
    return np.concatenate(parts), " ".join(words)


def write_mp3(path: Path, base: np.ndarray, seconds: float) -> int:
    """`base` repeated to `seconds`, as mp3; returns how many times it was used (in part)."""
    import av

    total = int(seconds * RATE)
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=RATE, layout="mono")
        stream.bit_rate = 64000
        written, step = 0, 10 * RATE
        while written < total:
            at = written % base.shape[0]
            piece = base[at: at + min(step, total - written)]
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                out.mux(packet)
            written += piece.shape[0]
        for packet in stream.encode(None):
            out.mux(packet)
    return -(-total // base.shape[0])


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


def whisperfleet(path: Path, model: str, out: Path) -> tuple[float, float, str]:
    wall, rss = run([str(BIN / "whisperfleet"), "transcribe", str(path), "-o", str(out),
                     "--model", model, "--device", "cpu", "--compute-type", "int8",
                     "--formats", "json", "--overwrite", "--quiet"])
    text = json.loads((out / f"{path.stem}.json").read_text())["text"]
    return wall, rss, text


def bare(path: Path, model: str, work: Path) -> tuple[float, float, str]:
    folder = work / f"bare-{path.stem}"
    folder.mkdir(exist_ok=True)
    link = folder / f"{path.stem}.wav"  # bare.py globs *.wav; FFmpeg reads the mp3 inside
    if not link.exists():
        link.symlink_to(path)
    result = work / "bare.json"
    wall, rss = run([sys.executable, str(HERE / "bare.py"), "batched", str(folder),
                     str(result), "--model", model])
    return wall, rss, json.loads(result.read_text())[link.name]


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(corpus_normal(reference), corpus_normal(hypothesis)))


def corpus_normal(text: str) -> str:
    return " ".join("".join(c for c in w.lower() if c.isalnum()) for w in text.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 180])
    parser.add_argument("--bare-up-to", type=float, default=60,
                        help="run the bare side only on recordings up to this many minutes")
    parser.add_argument("--equal-minutes", type=float, default=20,
                        help="the recording whose transcripts are compared (0: none)")
    parser.add_argument("--model", default=None, help="default: bundled tiny.en")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wf-long")
    args = parser.parse_args()
    model = args.model or corpus_model()
    args.work.mkdir(parents=True, exist_ok=True)
    base, script = base_recording(args.work)
    print(f"base recording: {base.shape[0] / RATE:.0f} s of talks and pauses")
    lengths = sorted(set(args.minutes) | ({args.equal_minutes} if args.equal_minutes else set()))
    for minutes in lengths:
        path = args.work / f"recording-{minutes:g}min.mp3"
        uses = write_mp3(path, base, minutes * 60)
        reference = " ".join([script] * uses)
        wall, rss, ours = whisperfleet(path, model, args.work / "out")
        line = (f"{minutes:g} min: whisperfleet {wall:.1f} s, peak RSS {rss:.0f} MiB, "
                f"{minutes * 60 / wall:.1f}x real time")
        if minutes <= args.bare_up_to or minutes == args.equal_minutes:
            bare_wall, bare_rss, theirs = bare(path, model, args.work)
            line += (f" | bare {bare_wall:.1f} s, peak RSS {bare_rss:.0f} MiB"
                     f" | time ratio {bare_wall / wall:.2f}")
            if minutes == args.equal_minutes:
                print(f"{minutes:g} min: wer_between_sides = {wer(theirs, ours):.4f}; "
                      f"wer_whisperfleet = {wer_ref(reference, ours):.4f}; "
                      f"wer_bare = {wer_ref(reference, theirs):.4f}")
        print(line, flush=True)
    print(f"this script's own peak RSS (the floor of every figure above): {own_peak_mib():.0f} MiB")


def own_peak_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def wer_ref(reference: str, hypothesis: str) -> float:
    # The last repetition may be cut mid-talk: score against as much script as was spoken.
    ref_words = corpus_normal(reference).split()
    hyp_words = corpus_normal(hypothesis).split()
    return wer(" ".join(ref_words[: max(len(hyp_words), 1)]), " ".join(hyp_words))


def corpus_model() -> str:
    from whisperfleet_runner.decode import models

    return models.resolve_model("tiny.en")


if __name__ == "__main__":
    main()
