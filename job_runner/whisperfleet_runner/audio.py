"""Decode any audio/video bytes into the 16 kHz mono float32 samples Whisper expects.

Decoding mirrors `faster_whisper.decode_audio` (PyAV, which bundles FFmpeg), but opens the
container once to also read what its header declares, so bad media fails with a specific
reason instead of an FFmpeg error code or, worse, a silently shortened transcript.

How PyAV 18 reports each kind of bad input (observed, and pinned by tests/runner/test_audio.py):
- 0 bytes: `av.open` raises InvalidDataError — checked before PyAV, as "empty file (0 bytes)".
- text (or any non-media) bytes: `av.open` raises InvalidDataError. So does a media file cut
  before its index (an mp4 whose moov atom comes last); a known container signature in the
  first bytes tells the two apart ("truncated or corrupt" vs "not an audio or video file").
- a truncated mp3 opens and decodes WITHOUT any error: FFmpeg returns the frames that are
  there (0.4 s of a 4 s file). It is only detectable because the mp3's Xing/Info header
  declares the full duration; we flag a decoded length well short of the declared one.
  FLAC (STREAMINFO) and mp4 (moov) declare it too. Where the duration is estimated from the
  bitrate (mp3 without a Xing header, raw AAC), read from the last page (Ogg) or clamped to
  the file size (WAV), FFmpeg derives it from the truncated file itself: a WAV or Ogg cut
  short is NOT detected, an mp3 cut mid-frame is (see `damage`).
- damage inside the stream (garbage, a cut mid-frame): see `damage`. `container.decode()`
  ENDS at the first packet the decoder rejects (PyAV 18), silently dropping the rest of
  the file, so packets are decoded one by one and decoding carries on past a bad one.
A damaged or truncated file fails with its reason, unless the caller keeps partial audio.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import av
import numpy as np

from whisperfleet_runner.damage import DamageLog

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# Decoded audio this much shorter than the header declares means the file was cut short.
# The slack absorbs encoder delay/padding (tens of ms) without masking real truncation.
_SHORTFALL_SECONDS = 1.0
_SHORTFALL_FRACTION = 0.05
# Formats whose stream duration comes from a header or index rather than a bitrate estimate
# (FFmpeg's estimate for VBR streams can be far off, which would flag good files).
_DECLARED_DURATION_FORMATS = ("mov", "mp4", "m4a", "matroska", "webm", "flac", "asf", "ogg")
_MP3_DURATION_TAGS = (b"Xing", b"Info", b"VBRI")
_GROUP_SAMPLES = 500_000
_MEDIA_SIGNATURES = (  # leading bytes: WAV/AVI, mp3 ID3, FLAC, Ogg, Matroska/WebM, AIFF, ASF
    b"RIFF", b"ID3", b"fLaC", b"OggS", b"\x1a\x45\xdf\xa3", b"FORM",
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",
)


class BadMediaError(ValueError):
    """The bytes are not decodable audio; `reason` is a short, specific, user-facing message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """Decoded audio; `damage` says what is missing from it ("" when it is all there)."""

    samples: np.ndarray
    damage: str = ""

    @property
    def partial(self) -> bool:
        return bool(self.damage)


def decode(data: bytes, name: str) -> np.ndarray:
    """Decode `data` (the file called `name`, used in messages) to float32 mono 16 kHz;
    damaged or truncated audio raises BadMediaError."""
    return decode_media(data, name).samples


def decode_media(data: bytes, name: str, *, keep_partial: bool = False) -> Decoded:
    """Like `decode`; with `keep_partial`, damaged or truncated audio that still decodes
    in part comes back with `damage` set instead of raising."""
    if not data:
        raise BadMediaError("empty file (0 bytes)")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if _looks_like_media(data):  # e.g. an mp4 cut off before its index (moov) arrived
            raise BadMediaError(f"truncated or corrupt audio ({_ffmpeg_reason(exc)})") from exc
        raise BadMediaError(f"not an audio or video file ({_ffmpeg_reason(exc)})") from exc
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise BadMediaError(
                f"no audio stream (container {container.format.name} holds: {', '.join(kinds)})"
            )
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream, data)
        damage = DamageLog(stream.bit_rate or container.bit_rate or 0)
        try:
            audio = _decode_stream(container, stream, damage)
        except av.error.FFmpegError as exc:
            raise BadMediaError(f"truncated or corrupt audio ({_ffmpeg_reason(exc)})") from exc
    got = duration(audio)
    if got == 0.0:
        raise BadMediaError("truncated or corrupt audio (no audio samples could be decoded)")
    problem = damage.describe() if damage else ""
    if declared is not None and declared - got > max(
        _SHORTFALL_SECONDS, _SHORTFALL_FRACTION * declared
    ):
        problem = (f"truncated or corrupt audio (decoded {got:.2f} s of the {declared:.2f} s "
                   "its header declares)")
    if problem and not keep_partial:
        raise BadMediaError(problem)
    if problem:
        log.warning("%s: %s; keeping the %.1f s that decoded", name, problem, got)
    return Decoded(audio, problem)


def duration(audio: np.ndarray) -> float:
    """Seconds of audio in a decoded 16 kHz array."""
    return float(audio.shape[-1]) / SAMPLE_RATE


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, damage: DamageLog
) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    # Like faster-whisper, resample in large groups: per-frame calls cost ~50% more time.
    fifo = av.AudioFifo()
    chunks: list[np.ndarray] = []
    last: av.Packet | None = None  # the last packet that held data, and whether it decoded
    last_rejected = False

    def drain(frame: av.AudioFrame | None) -> None:
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))

    # A demuxer error propagates (the file fails as corrupt): none of the damaged files
    # tried (mp3, AAC, mp4, FLAC, Ogg, Matroska/WebM, WAV, AVI) raised one mid-stream.
    for packet in container.demux(stream):
        try:
            frames = packet.decode()  # the last, empty packet flushes the decoder
        except av.error.FFmpegError:
            if damage.reject(packet):
                last, last_rejected = packet, True
            continue
        if packet.size:
            last, last_rejected = packet, False
        for frame in frames:
            damage.frame(frame)
            frame.pts = None  # the fifo rejects timestamp gaps; content is all that matters
            fifo.write(frame)
            if fifo.samples >= _GROUP_SAMPLES:
                drain(fifo.read())
    damage.ended(last, last_rejected, stream.codec_context.name)
    if fifo.samples:
        drain(fifo.read())
    drain(None)  # flush the resampler
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def _declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream, data: bytes
) -> float | None:
    """The audio stream's duration as its header states it; None when only estimated."""
    if stream.duration is None or stream.time_base is None:
        return None
    formats = set(container.format.name.split(","))
    if "mp3" in formats:
        if not _has_mp3_duration_tag(data):
            return None
    elif not formats & set(_DECLARED_DURATION_FORMATS):
        return None
    return float(stream.duration * stream.time_base)


def _has_mp3_duration_tag(data: bytes) -> bool:
    """Whether the first MPEG frame carries a Xing/Info/VBRI header (frame count)."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        # ID3v2 size is a 28-bit "syncsafe" integer; skip the tag so its text cannot match.
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        start = 10 + size + (10 if data[5] & 0x10 else 0)
    head = data[start : start + 256]
    return any(tag in head for tag in _MP3_DURATION_TAGS)


def _looks_like_media(data: bytes) -> bool:
    """Whether the bytes start with the signature of a common audio/video container."""
    if data[4:8] == b"ftyp" or data.startswith(_MEDIA_SIGNATURES):
        return True
    # An MPEG audio frame sync (raw mp3 / ADTS AAC without an ID3 tag).
    return len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    # str(exc) carries "[Errno …]" and a '<none>' filename; the strerror alone is the reason.
    return str(exc.strerror or exc).strip() or type(exc).__name__
