"""Render a Transcript as json, txt, srt, vtt or tsv text.

Every format renders a valid file for an empty transcript (silence). Segments whose text is
blank are left out of txt/srt/vtt/tsv (an empty cue is not valid SRT); json keeps them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from whisperfleet_runner.contract import FORMATS
from whisperfleet_runner.contract.transcript import Segment, Transcript


def _millis(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _clock(seconds: float, sep: str) -> str:
    """`HH:MM:SS<sep>mmm`; hours keep growing past 99 rather than wrapping."""
    ms = _millis(seconds)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    # A newline inside a cue would end it early (a blank line ends a cue): keep one line.
    return " ".join(text.split())


def _spoken(transcript: Transcript) -> list[tuple[Segment, str, float, float]]:
    """(segment, one-line text, start, end) for segments with text; end never before start."""
    out = []
    for seg in transcript.segments:
        text = _one_line(seg.text)
        if text:
            start = max(0.0, seg.start)
            out.append((seg, text, start, max(start, seg.end)))
    return out


def render_json(transcript: Transcript) -> str:
    return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n"


def render_txt(transcript: Transcript) -> str:
    return "".join(f"{text}\n" for _, text, _, _ in _spoken(transcript))


def render_srt(transcript: Transcript) -> str:
    cues = []
    for number, (_, text, start, end) in enumerate(_spoken(transcript), 1):
        cues.append(f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n")
    return "\n".join(cues)


def _vtt_escape(text: str) -> str:
    # WebVTT cue text is markup: bare & and < start entities/tags, and "-->" is forbidden
    # (escaping ">" removes it).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_vtt(transcript: Transcript) -> str:
    parts = ["WEBVTT\n"]
    for _, text, start, end in _spoken(transcript):
        parts.append(f"{_clock(start, '.')} --> {_clock(end, '.')}\n{_vtt_escape(text)}\n")
    return "\n".join(parts)


def render_tsv(transcript: Transcript) -> str:
    """openai-whisper's layout: header `start\\tend\\ttext`, integer milliseconds."""
    lines = ["start\tend\ttext\n"]
    for _, text, start, end in _spoken(transcript):
        lines.append(f"{_millis(start)}\t{_millis(end)}\t{text.replace(chr(9), ' ')}\n")
    return "".join(lines)


RENDERERS: dict[str, Callable[[Transcript], str]] = {
    "json": render_json,
    "txt": render_txt,
    "srt": render_srt,
    "vtt": render_vtt,
    "tsv": render_tsv,
}


def render(transcript: Transcript, fmt: str) -> str:
    try:
        renderer = RENDERERS[fmt.lower()]
    except KeyError:
        raise ValueError(
            f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}"
        ) from None
    return renderer(transcript)


def render_all(transcript: Transcript, formats: Sequence[str]) -> dict[str, str]:
    return {fmt: render(transcript, fmt) for fmt in formats}
