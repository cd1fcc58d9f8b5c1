"""What to do with every file of a batch: model, transcription and output options, with their
defaults, the same for a local run, a planner and a shard pod."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_INCLUDE: tuple[str, ...] = (
    "*.wav", "*.mp3", "*.flac", "*.ogg", "*.opus", "*.m4a", "*.aac", "*.wma", "*.webm",
    "*.mp4", "*.mkv", "*.mov", "*.avi", "*.mka",
)
FORMATS: tuple[str, ...] = ("json", "txt", "srt", "vtt", "tsv")
DEFAULT_FORMATS: tuple[str, ...] = ("json", "txt", "srt", "vtt")
COMPUTE_TYPES: tuple[str, ...] = ("auto", "float16", "int8_float16", "int8", "float32", "bfloat16",
                                  "int8_float32", "int8_bfloat16")
TASKS: tuple[str, ...] = ("transcribe", "translate")
# Every language code Whisper knows (faster-whisper 1.2.1's tokenizer; a test keeps them
# equal, and the CRD's enum of languageCandidates too). A model may know fewer (yue came
# with large-v3): the engine refuses a code its model has no token for, before any file.
WHISPER_LANGUAGES: tuple[str, ...] = (
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy",
    "da", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw",
    "he", "hi", "hr", "ht", "hu", "hy", "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn",
    "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi", "mk", "ml", "mn", "mr", "ms", "mt",
    "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si",
    "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl",
    "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo", "zh", "yue",
)
DEFAULT_MODEL = "large-v3"
DEFAULT_BEAM_SIZE = 5
DEFAULT_BATCH_SIZE = 8


@dataclass
class ModelOptions:
    name: str = DEFAULT_MODEL
    compute_type: str = "auto"
    cache_dir: str | None = None  # pre-staged model dir; also the download cache when writable


@dataclass
class TranscriptionOptions:
    language: str | None = None  # None = detect
    # Detection picks the likeliest of these (empty: any language); only without `language`.
    language_candidates: tuple[str, ...] = ()
    task: str = "transcribe"
    beam_size: int = DEFAULT_BEAM_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE  # 1 = sequential
    vad_filter: bool = True
    word_timestamps: bool = False
    initial_prompt: str | None = None
    hotwords: str | None = None  # words the decoder is primed to expect (faster-whisper's)
    pack_short_clips: bool = True


@dataclass
class OutputOptions:
    uri: str
    formats: tuple[str, ...] = DEFAULT_FORMATS
    overwrite: bool = False
    # Damaged or truncated media: False fails the file (BadMedia); True transcribes what
    # decodes and marks it partial (json "partial": true, counted apart as `partial`).
    keep_partial: bool = False


@dataclass
class JobOptions:
    """What to do with every file of a batch, wherever it runs: a shard pod or a local run."""

    output: OutputOptions
    model: ModelOptions = field(default_factory=ModelOptions)
    transcription: TranscriptionOptions = field(default_factory=TranscriptionOptions)


def from_dict(cls: type, data: Any) -> Any:
    """`cls` from a JSON object, refusing unknown fields (a newer or misspelt order)."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, not {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields in work order: {sorted(unknown)}")
    values = {
        k: tuple(v) if isinstance(v, list) and k in ("formats", "include",
                                                      "language_candidates") else v
        for k, v in data.items()
    }
    return cls(**values)
