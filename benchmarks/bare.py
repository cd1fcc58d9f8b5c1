"""The baseline: bare faster-whisper over a folder, as a user would write it.

    python benchmarks/bare.py loop FOLDER RESULT.json --model PATH      # per-file loop
    python benchmarks/bare.py batched FOLDER RESULT.json --model PATH   # BatchedInferencePipeline
    python benchmarks/bare.py loop FOLDER RESULT.json --model PATH --device cuda \
        --compute-type float16                                          # on CUDA device 0

Writes {file name: text} to RESULT.json (and {file name: detected language} to
`--languages PATH`). Settings match whisperfleet's defaults: beam 5,
VAD on, int8 on CPU, batch 8 (batched), CPU threads as whisperfleet counts them (the affinity
mask capped by the cgroup CPU quota), unless --threads.
`--device cuda` runs on CUDA device 0: choose the GPU with CUDA_VISIBLE_DEVICES (bench.py
passes the GPU's uuid, with CUDA_DEVICE_ORDER=PCI_BUS_ID).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["loop", "batched"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (default: whisperfleet's count, gpu.cpus)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--compute-type", default="int8",
                        help="int8 (CPU default), float16, int8_float16, ...")
    parser.add_argument("--languages", type=Path, default=None,
                        help="also write {file name: detected language} here")
    args = parser.parse_args()

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from whisperfleet_runner.gpu import cpus

    model = WhisperModel(args.model, device=args.device, compute_type=args.compute_type,
                         cpu_threads=args.threads or cpus.available_cpus())
    pipeline = BatchedInferencePipeline(model)
    texts: dict[str, str] = {}
    languages: dict[str, str] = {}
    for path in sorted(args.folder.glob("*.wav")):
        if args.mode == "loop":
            segments, info = model.transcribe(str(path), beam_size=args.beam_size,
                                              vad_filter=True)
        else:
            segments, info = pipeline.transcribe(str(path), beam_size=args.beam_size,
                                                 vad_filter=True, batch_size=args.batch_size)
        texts[path.name] = " ".join(s.text.strip() for s in segments)
        languages[path.name] = info.language
    args.result.write_text(json.dumps(texts, indent=1, ensure_ascii=False))
    if args.languages is not None:
        args.languages.write_text(json.dumps(languages, indent=1))


if __name__ == "__main__":
    main()
