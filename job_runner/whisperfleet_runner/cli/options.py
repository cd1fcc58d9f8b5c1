"""Click options shared by the commands that transcribe, defined once and mapped to contract.

The option names mirror the TranscriptionJob spec; each group reaches the command as one
config dataclass, so a command never re-states a default or a choice list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from whisperfleet_runner import contract

F = TypeVar("F", bound=Callable[..., Any])


def _formats(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in value.split(",") if f.strip()))
    unknown = [f for f in chosen if f not in contract.FORMATS]
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown format(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(contract.FORMATS)} (comma-separated)"
        )
    return chosen


def _includes(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
              ) -> tuple[str, ...]:
    # Accept both `--include '*.wav' --include '*.mp3'` and `--include '*.wav,*.mp3'`.
    patterns = tuple(p.strip() for v in value for p in v.split(",") if p.strip())
    return patterns or contract.DEFAULT_INCLUDE


def _language(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    text = (value or "").strip().lower()
    return None if text in ("", "auto", "detect") else text


def _candidates(_ctx: click.Context, _param: click.Parameter, value: str | None
                ) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(c.strip().lower() for c in (value or "").split(",")
                                 if c.strip()))
    unknown = [c for c in chosen if c not in contract.WHISPER_LANGUAGES]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)} {'is not a' if len(unknown) == 1 else 'are not'} Whisper "
            f"language code{'' if len(unknown) == 1 else 's'}; use codes such as en,de,fr "
            "(comma-separated)")
    return chosen


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    from whisperfleet_runner.gpu import choice as gpu_choice

    try:
        return gpu_choice.parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


_MODEL_OPTIONS = [
    click.option("--model", default=contract.DEFAULT_MODEL, show_default=True,
                 help="Size name (large-v3, tiny.en…), Hugging Face repo id, a local "
                      "CTranslate2 model directory, or a model staged by `whisperfleet "
                      "models pull` (s3://…, gs://…, az://…, file://…: copied once into "
                      "the local cache, never from a hub)."),
    click.option("--model-cache", type=click.Path(file_okay=False), default=None,
                 help=f"Folder of pre-staged models (<cache>/<name>/model.bin); also "
                      f"${contract.ENV_MODEL_CACHE}."),
    click.option("--compute-type", type=click.Choice(contract.COMPUTE_TYPES), default="auto",
                 show_default=True,
                 help="auto: float16 on GPUs with compute capability >= 7.0, int8 on CPU."),
]

_TRANSCRIPTION_OPTIONS = [
    click.option("--language", default=None, callback=_language,
                 help="Language code (en, de…); default: detect per file."),
    click.option("--language-candidates", default=None, callback=_candidates,
                 metavar="CODES",
                 help="Detect each file's language among these only (comma-separated, "
                      "e.g. en,de); not with --language."),
    click.option("--task", type=click.Choice(contract.TASKS), default="transcribe",
                 show_default=True),
    click.option("--beam-size", type=click.IntRange(min=1), default=contract.DEFAULT_BEAM_SIZE,
                 show_default=True),
    click.option("--batch-size", type=click.IntRange(min=1), default=contract.DEFAULT_BATCH_SIZE,
                 show_default=True, help="Batched inference size; 1 = sequential decoding."),
    click.option("--vad/--no-vad", "vad_filter", default=True, show_default=True,
                 help="Skip silence with the Silero VAD filter."),
    click.option("--word-timestamps", is_flag=True, default=False,
                 help="Add per-word timings to the json output."),
    click.option("--initial-prompt", default=None, help="Text to prime the decoder with."),
    click.option("--hotwords", default=None,
                 help="Words the decoder should expect (names, jargon), as faster-whisper's "
                      "hotwords."),
    click.option("--pack/--no-pack", "pack_short_clips", default=True, show_default=True,
                 help="Transcribe short clips packed together into shared 30 s windows "
                      "(with a multilingual model and no --language: one encoder pass per "
                      "clip, detecting its language and decoding it)."),
]

_OUTPUT_OPTIONS = [
    click.option("--formats", default=",".join(contract.DEFAULT_FORMATS), callback=_formats,
                 show_default=True, help=f"Comma-separated, from {', '.join(contract.FORMATS)}."),
    click.option("--overwrite", is_flag=True, default=False,
                 help="Redo files whose outputs all exist (default: skip them)."),
    click.option("--keep-partial", is_flag=True, default=False,
                 help="Damaged or truncated media: transcribe what decodes and mark it "
                      "partial (json \"partial\": true) instead of failing the file."),
    click.option("--include", "include", multiple=True, callback=_includes, metavar="GLOB",
                 help="Globs on keys relative to each input folder (repeatable; default: "
                      "common audio/video extensions)."),
]

_DEVICE_OPTIONS = [
    click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
                 show_default=True,
                 help="auto: every usable GPU, else the CPU (with a warning)."),
    click.option("--gpus", default="all", show_default=True,
                 help="GPUs to use: all, nvidia-smi indices (0,2), MIG addresses (0:1) or "
                      "UUIDs (GPU-…)."),
    click.option("--min-free-memory", "min_free_mib", default="0", callback=_size,
                 metavar="SIZE", help="Skip GPUs with less free memory (e.g. 4GiB)."),
]


@dataclass(frozen=True)
class OutputChoice:
    """--formats, --overwrite, --keep-partial, --include."""

    formats: tuple[str, ...]
    overwrite: bool
    keep_partial: bool
    include: tuple[str, ...]


@dataclass(frozen=True)
class DeviceChoice:
    """--device, --gpus, --min-free-memory."""

    device: str
    gpus: str
    min_free_mib: int


def _grouped(target: str, build: Callable[..., Any],
             decorators: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Add `decorators`' options to a command, which receives them built into ONE argument
    named `target` (a dataclass), instead of a long list of loose keyword arguments."""
    names = [_param_name(d) for d in decorators]

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            kwargs[target] = build(**{n: kwargs.pop(n) for n in names})
            return func(*args, **kwargs)

        for decorator in reversed(decorators):
            command = decorator(command)
        return command  # type: ignore[return-value]

    return wrap


def _param_name(decorator: Callable[[F], F]) -> str:
    def probe() -> None: ...

    decorator(probe)  # type: ignore[arg-type]
    return str(probe.__click_params__[-1].name)  # type: ignore[attr-defined]


def _model(model: str, model_cache: str | None, compute_type: str) -> contract.ModelOptions:
    return contract.ModelOptions(name=model, compute_type=compute_type, cache_dir=model_cache)


def _transcription(language: str | None, language_candidates: tuple[str, ...], task: str,
                   beam_size: int, batch_size: int, vad_filter: bool, word_timestamps: bool,
                   initial_prompt: str | None, hotwords: str | None, pack_short_clips: bool
                   ) -> contract.TranscriptionOptions:
    if language and language_candidates:
        raise click.UsageError(
            f"--language {language} and --language-candidates "
            f"{','.join(language_candidates)} exclude each other: a given language is not "
            "detected")
    return contract.TranscriptionOptions(
        language=language, language_candidates=language_candidates, task=task,
        beam_size=beam_size, batch_size=batch_size, vad_filter=vad_filter,
        word_timestamps=word_timestamps, initial_prompt=initial_prompt or None,
        hotwords=(hotwords or "").strip() or None, pack_short_clips=pack_short_clips,
    )


model_options = _grouped("model", _model, _MODEL_OPTIONS)
transcription_options = _grouped("transcription", _transcription, _TRANSCRIPTION_OPTIONS)
output_options = _grouped("output_choice", OutputChoice, _OUTPUT_OPTIONS)
device_options = _grouped("device_choice", DeviceChoice, _DEVICE_OPTIONS)
