"""Media damaged the ways real files get damaged, made from the committed speech fixtures.

Clean audio is the fixture WAVs read with `wave` (16 kHz mono, 16-bit) and encoded by
FFmpeg through PyAV; damage is done to the encoded bytes. Where a frame starts and which
time it holds comes from FFmpeg's demuxer on the CLEAN file (`frame_map`), so tests compare
what the runner reports with an account it did not produce.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import av
import numpy as np

from tests.support.paths import AUDIO, REPO

RATE = 16000
# About 16.5 s of speech; hello.wav ("hello world …") comes last.
SPEECH = [REPO / "examples" / "audio" / "meeting.wav", REPO / "examples" / "audio" / "weather.wav",
          REPO / "examples" / "audio" / "directions.wav", AUDIO / "hello.wav"]
# LAME's -V4: libmp3lame reads a VBR quality from global_quality in units of FF_QP2LAMBDA.
_VBR = {"flags": "+qscale", "global_quality": str(4 * 118)}


def speech() -> np.ndarray:
    """The SPEECH fixtures end to end, as int16 samples at 16 kHz."""
    parts = []
    for path in SPEECH:
        with wave.open(str(path), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2), path
            parts.append(np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16))
    return np.concatenate(parts)


def encode(samples: np.ndarray, fmt: str, codec: str, *, rate: int = RATE,
           layout: str = "mono", container_options: dict[str, str] | None = None,
           codec_options: dict[str, str] | None = None, bit_rate: int = 0) -> bytes:
    """`samples` (int16 at `rate`: [n], or [n, channels] for a layout of several channels)
    encoded by FFmpeg into `fmt` with `codec`."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout,
                                      options=codec_options or {})
        if bit_rate:
            stream.bit_rate = bit_rate
        for i in range(0, len(samples), 4096):
            chunk = np.ascontiguousarray(samples[i : i + 4096]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def mp3_cbr(samples: np.ndarray) -> bytes:
    """32 kbit/s CBR mp3 WITHOUT a Xing/Info header: FFmpeg only estimates its duration."""
    return encode(samples, "mp3", "libmp3lame", container_options={"write_xing": "0"},
                  bit_rate=32000)


def mp3_vbr(samples: np.ndarray) -> bytes:
    """VBR mp3 with a Xing header (which declares its frame count, so its duration)."""
    return encode(samples, "mp3", "libmp3lame", codec_options=_VBR)


def id3_tag(text: str = "a talk") -> bytes:
    """A minimal ID3v2.3 tag holding a title."""
    frame = b"TIT2" + (len(text) + 1).to_bytes(4, "big") + b"\x00\x00\x00" + text.encode()
    size = len(frame)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + syncsafe + frame


def opus(samples: np.ndarray, fmt: str) -> bytes:
    """Opus (48 kHz only) in `fmt`: ogg or webm."""
    return encode(np.repeat(samples, 3), fmt, "libopus", rate=48000)


def junk(size: int, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def overwrite(data: bytes, at: int, size: int, seed: int = 7) -> bytes:
    """`data` with `size` random bytes written over it from byte `at` (same length)."""
    return data[:at] + junk(size, seed) + data[at + size :]


@dataclass(frozen=True)
class Frame:
    pos: int  # byte offset in the file
    size: int
    at: float  # seconds from the audio's start


def frame_map(data: bytes) -> list[Frame]:
    """Every packet of the audio stream of `data`, as FFmpeg's demuxer sees it."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        start = float((stream.start_time or 0) * stream.time_base)
        return [Frame(p.pos, p.size, float(p.pts * p.time_base) - start)
                for p in container.demux(stream) if p.size]


def frame_holding(data: bytes, offset: int) -> Frame:
    """The packet of `data` that holds byte `offset`."""
    return next(f for f in frame_map(data) if f.pos <= offset < f.pos + f.size)


def video_without_audio(frames: int = 3) -> bytes:
    """An MP4 holding a few black video frames and no audio stream at all."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
