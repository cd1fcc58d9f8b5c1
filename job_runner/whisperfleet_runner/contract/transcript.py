"""Result dataclasses shared by the engine, the output formats and the shard runner."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] | None = None


@dataclass
class Transcript:
    source: str  # input URI
    language: str
    language_probability: float
    duration: float  # audio seconds
    model: str
    compute_type: str
    device: str  # e.g. "cpu", "cuda:0"
    segments: list[Segment] = field(default_factory=list)
    # Damaged media kept in part: `duration` is then what decoded, `damage` what is missing.
    partial: bool = False
    damage: str = ""

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for seg in data["segments"]:
            if seg["words"] is None:
                del seg["words"]
        del data["partial"], data["damage"]
        if self.partial:  # before the segments, which then cover only what decoded
            segments = data.pop("segments")
            data.update(partial=True, damage=self.damage, segments=segments)
        data["text"] = self.text
        return data
