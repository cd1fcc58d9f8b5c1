"""Decode any audio/video file into the 16 kHz mono float32 samples Whisper expects.

Decoding mirrors `faster_whisper.decode_audio` (PyAV, which bundles FFmpeg), to the sample,
but opens the container once to also read what its header declares, so bad media fails
with a specific reason instead of an FFmpeg error code or, worse, a silently shortened
transcript. `open_stream` decodes a file of any length in blocks, holding one group of
frames and one block (a 10-hour recording is 2.3 GB of samples); `decode_media` is the
same decoding with the blocks joined.

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
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from whisperfleet_runner.media.damage import DamageLog
from whisperfleet_runner.media.header import declared_seconds, looks_like_media, read_head

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# Decoded audio this much shorter than the header declares means the file was cut short.
# The slack absorbs encoder delay/padding (tens of ms) without masking real truncation.
_SHORTFALL_SECONDS = 1.0
_SHORTFALL_FRACTION = 0.05
_GROUP_SAMPLES = 500_000  # faster-whisper's group size


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
    in part comes back with `damage` set instead of raising. The whole file in memory:
    `open_stream` is the same decoding a block at a time."""
    with open_stream(data, name, keep_partial=keep_partial) as stream:
        blocks = list(stream)
    return Decoded(blocks[0] if len(blocks) == 1 else np.concatenate(blocks), stream.damage)


def open_stream(source: BinaryIO | bytes, name: str, *, keep_partial: bool = False,
                block_seconds: float = 30.0) -> AudioStream:
    """The audio of `source` (bytes, or a seekable binary file read from its start) as
    float32 mono 16 kHz blocks of `block_seconds` each (the last one shorter), the same
    samples `decode_media` gives. Media that cannot be opened raises BadMediaError here;
    damage found while decoding raises it after the last block (see AudioStream)."""
    block_samples = int(block_seconds * SAMPLE_RATE)
    if block_samples < 1:
        raise ValueError(f"block_seconds {block_seconds} holds no sample")
    file: BinaryIO = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    head = read_head(file)
    if not head.bytes:
        raise BadMediaError("empty file (0 bytes)")
    reads = _ReadOnce(file)
    try:
        container = av.open(reads, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        reads.raise_failure()
        if looks_like_media(head):  # e.g. an mp4 cut off before its index (moov) arrived
            raise BadMediaError(f"truncated or corrupt audio ({_ffmpeg_reason(exc)})") from exc
        raise BadMediaError(f"not an audio or video file ({_ffmpeg_reason(exc)})") from exc
    try:
        reads.raise_failure()
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise BadMediaError(
                f"no audio stream (container {container.format.name} holds: {', '.join(kinds)})"
            )
        stream = container.streams.audio[0]
        declared = declared_seconds(container, stream, head)
    except BaseException:
        container.close()
        raise
    return AudioStream(container, stream, reads, name, declared=declared,
                       keep_partial=keep_partial, block_samples=block_samples)


class AudioStream:
    """Decoded blocks of one opened file; a context manager that closes the container.

    Memory holds one group of decoded frames and one block, whatever the file's length.
    After the last block, damage (undecodable frames, a length well short of what the
    header declares, nothing decoded at all) raises BadMediaError, unless `keep_partial`
    (nothing decoded raises still): then iteration ends and `damage` says what was lost.
    `seconds` is the length yielded so far; `declared` what the header states, if it does.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.AudioStream,
                 reads: _ReadOnce, name: str, *, declared: float | None, keep_partial: bool,
                 block_samples: int) -> None:
        self.declared = declared
        self.damage = ""
        self.name = name
        self._container, self._stream, self._reads = container, stream, reads
        self._keep_partial = keep_partial
        self._samples = 0
        self._blocks = self._decode(_Blocks(block_samples))

    @property
    def seconds(self) -> float:
        return self._samples / SAMPLE_RATE

    def __iter__(self) -> AudioStream:
        return self

    def __next__(self) -> np.ndarray:
        block = next(self._blocks)
        self._samples += len(block)
        return block

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._blocks.close()
        self._container.close()

    def _decode(self, blocks: _Blocks) -> Generator[np.ndarray, None, None]:
        container, stream = self._container, self._stream
        damage = DamageLog(stream.bit_rate or container.bit_rate or 0)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        # Like faster-whisper, resample in large groups (its group size): per-frame calls
        # cost ~50% more time. Blocks are cut from the resampled groups, so the block
        # length changes no sample.
        fifo = av.AudioFifo()
        last: av.Packet | None = None  # the last packet that held data, and whether it decoded
        last_rejected = False
        try:
            # A demuxer error fails the file as corrupt: none of the damaged files tried
            # (mp3, AAC, mp4, FLAC, Ogg, Matroska/WebM, WAV, AVI) raised one mid-stream.
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
                    frame.pts = None  # the fifo rejects timestamp gaps; content is what matters
                    fifo.write(frame)
                    if fifo.samples >= _GROUP_SAMPLES:
                        yield from blocks.add(resampler.resample(fifo.read()))
            self._reads.raise_failure()
            damage.ended(last, last_rejected, stream.codec_context.name)
            if fifo.samples:
                yield from blocks.add(resampler.resample(fifo.read()))
            yield from blocks.add(resampler.resample(None))  # flush the resampler
        except av.error.FFmpegError as exc:
            self._reads.raise_failure()
            raise BadMediaError(f"truncated or corrupt audio ({_ffmpeg_reason(exc)})") from exc
        yield from blocks.rest()
        self._finish(damage, blocks.samples / SAMPLE_RATE)

    def _finish(self, damage: DamageLog, got: float) -> None:
        if got == 0.0:
            raise BadMediaError("truncated or corrupt audio (no audio samples could be decoded)")
        problem = damage.describe() if damage else ""
        declared = self.declared
        if declared is not None and declared - got > max(
            _SHORTFALL_SECONDS, _SHORTFALL_FRACTION * declared
        ):
            problem = (f"truncated or corrupt audio (decoded {got:.2f} s of the "
                       f"{declared:.2f} s its header declares)")
        self.damage = problem
        if problem and not self._keep_partial:
            raise BadMediaError(problem)
        if problem:
            log.warning("%s: %s; keeping the %.1f s that decoded", self.name, problem, got)


class _Blocks:
    """Resampled s16 frames cut into float32 blocks of `size` samples; `samples` counts all."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.samples = 0
        self._pending = np.empty(size, dtype=np.int16)
        self._filled = 0

    def add(self, frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
        for frame in frames:
            data = frame.to_ndarray().reshape(-1)
            self.samples += len(data)
            while len(data):
                take = min(self.size - self._filled, len(data))
                self._pending[self._filled : self._filled + take] = data[:take]
                self._filled += take
                data = data[take:]
                if self._filled == self.size:
                    yield self._take()

    def rest(self) -> Iterator[np.ndarray]:
        if self._filled:
            yield self._take()

    def _take(self) -> np.ndarray:
        block = self._pending[: self._filled].astype(np.float32)
        block /= 32768.0  # a power of two: exact, as faster-whisper's own division
        self._filled = 0
        return block


def duration(audio: np.ndarray) -> float:
    """Seconds of audio in a decoded 16 kHz array."""
    return float(audio.shape[-1]) / SAMPLE_RATE


class _ReadOnce:
    """`file` as FFmpeg reads it: a read that fails ends the file there, and the error is
    kept to be raised once FFmpeg is done. Raised into PyAV instead, it would be kept by
    PyAV for its next call (maybe the next file's), after more reads had failed and been
    dropped, each printing a traceback; and a demuxer may take it for short or bad media."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.failure: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        if self.failure is not None:
            return b""
        try:
            return self.file.read(size)
        except Exception as exc:
            self.failure = exc
            return b""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def raise_failure(self) -> None:
        """A storage failure must not pass for a damaged file: it is raised first."""
        if self.failure is not None:
            raise self.failure


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    # str(exc) carries "[Errno …]" and a '<none>' filename; the strerror alone is the reason.
    return str(exc.strerror or exc).strip() or type(exc).__name__
