"""Decoding a file block by block (`audio.open_stream`): the same samples as a whole-file
decode, blocks of a bounded length, damage raised only after the last block, and storage
failures that never pass for damaged media.

The reference samples come from faster-whisper's own decoder (`decode_audio`), which shares
no code with the runner's, on files of more than one 500,000-sample resampling group.
"""

from __future__ import annotations

import io
import re
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from faster_whisper import decode_audio

from tests.support import damaged_media as dm
from whisperfleet_runner import storage
from whisperfleet_runner.contract import Reason
from whisperfleet_runner.media.audio import (
    SAMPLE_RATE,
    BadMediaError,
    decode_media,
    duration,
    open_stream,
)
from whisperfleet_runner.storage.ranged import RangedReader

# (name, container, codec, sample rate, channels, seconds): each is longer than one group of
# 500,000 source samples, so the stream must cut blocks across group boundaries.
FORMATS = [
    ("tone.mp3", "mp3", "libmp3lame", 44100, 2, 14.0),
    ("tone.flac", "flac", "flac", 44100, 2, 14.0),
    ("tone.ogg", "ogg", "libopus", 48000, 2, 12.0),
    ("tone.m4a", "ipod", "aac", 22050, 1, 25.0),
    ("tone.wav", "wav", "pcm_s16le", 8000, 1, 65.0),
]


def media(fmt: str, codec: str, rate: int, channels: int, seconds: float) -> bytes:
    """A gliding tone with noise, different in each channel, encoded by FFmpeg (PyAV)."""
    layout = "stereo" if channels == 2 else "mono"
    rng = np.random.default_rng(3)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    voices = [np.sin(2 * np.pi * (220 + 40 * c + 10 * t) * t) * 0.3
              + 0.05 * rng.standard_normal(n) for c in range(channels)]
    pcm = (np.stack(voices, axis=1) * 32767).astype(np.int16)  # [n, channels]
    return dm.encode(pcm, fmt, codec, rate=rate, layout=layout)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {name: media(*spec) for name, *spec in FORMATS}


def blocks_of(source: BinaryIO | bytes, name: str, block_seconds: float,
              keep_partial: bool = False) -> list[np.ndarray]:
    with open_stream(source, name, block_seconds=block_seconds,
                     keep_partial=keep_partial) as stream:
        return list(stream)


@pytest.mark.parametrize("name", [f[0] for f in FORMATS])
@pytest.mark.parametrize("block_seconds", [0.7, 30.0])
def test_blocks_join_to_faster_whispers_whole_file_decode(files: dict[str, bytes], name: str,
                                                          block_seconds: float) -> None:
    data = files[name]
    whole = decode_audio(io.BytesIO(data))
    assert len(whole) > 500_000 * SAMPLE_RATE / 48000  # more than one group: not trivial
    blocks = blocks_of(data, name, block_seconds)
    joined = np.concatenate(blocks)
    assert joined.dtype == np.float32 and joined.ndim == 1
    np.testing.assert_array_equal(joined, whole)
    np.testing.assert_array_equal(decode_media(data, name).samples, whole)
    assert float(joined.min()) >= -1.0 and float(joined.max()) < 1.0


@pytest.mark.parametrize("name", [f[0] for f in FORMATS])
def test_blocks_read_from_a_file_a_few_kib_at_a_time(files: dict[str, bytes], name: str,
                                                     tmp_path: Path) -> None:
    # Tiny blocks: every probe, seek to the end and jump back crosses a block boundary.
    path = tmp_path / name
    path.write_bytes(files[name])
    with storage.open_input(str(path), block_bytes=5000) as fh:
        joined = np.concatenate(blocks_of(fh, name, 2.0))
    np.testing.assert_array_equal(joined, decode_audio(io.BytesIO(files[name])))


@pytest.mark.parametrize("name", ["hello.wav", "hello.mp3", "silence.wav"])
def test_fixtures_stream_like_faster_whisper(audio_dir: Path, name: str) -> None:
    data = (audio_dir / name).read_bytes()
    np.testing.assert_array_equal(np.concatenate(blocks_of(data, name, 1.0)),
                                  decode_audio(io.BytesIO(data)))


@pytest.mark.parametrize("block_seconds", [0.1, 1.0, 2.5, 6.0])
def test_every_block_but_the_last_holds_exactly_block_seconds(files: dict[str, bytes],
                                                              block_seconds: float) -> None:
    data = files["tone.flac"]
    size = round(block_seconds * SAMPLE_RATE)
    with open_stream(data, "tone.flac", block_seconds=block_seconds) as stream:
        lengths = [len(b) for b in stream]
        assert stream.seconds == sum(lengths) / SAMPLE_RATE
        assert stream.damage == ""
        assert stream.declared == pytest.approx(14.0, abs=0.05)  # FLAC's STREAMINFO says so
    assert set(lengths[:-1]) == {size} and 0 < lengths[-1] <= size
    assert sum(lengths) == len(decode_audio(io.BytesIO(data)))


def test_a_wav_declares_no_duration_to_trust(files: dict[str, bytes]) -> None:
    with open_stream(files["tone.wav"], "tone.wav") as stream:
        assert stream.declared is None
        assert sum(len(b) for b in stream) == 65 * SAMPLE_RATE


def test_a_block_must_hold_a_sample(files: dict[str, bytes]) -> None:
    with pytest.raises(ValueError, match="holds no sample"):
        open_stream(files["tone.wav"], "tone.wav", block_seconds=0.00001)


# --- damage ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def damaged() -> tuple[bytes, bytes]:
    """A clean 32 kbit/s mp3 of the speech fixtures, and the same with garbage mid-file."""
    good = dm.mp3_cbr(dm.speech())
    return good, dm.overwrite(good, len(good) * 2 // 3, 3000)


def test_damage_is_raised_after_the_last_block(damaged: tuple[bytes, bytes]) -> None:
    good, bad = damaged
    blocks: list[np.ndarray] = []
    with open_stream(bad, "x.mp3", block_seconds=2.0) as stream:
        with pytest.raises(BadMediaError) as err:
            for block in stream:
                blocks.append(block)
        assert stream.damage == err.value.reason
    assert re.match(r"damaged audio: \d+ undecodable frames? at 0:", err.value.reason)
    # Every block came before the error, the audio after the damage included.
    joined = np.concatenate(blocks)
    assert stream.seconds == duration(joined) > 14.0
    tail = 3 * SAMPLE_RATE
    np.testing.assert_array_equal(joined[-tail:], decode_audio(io.BytesIO(good))[-tail:])


def test_kept_damage_ends_the_blocks_and_says_what_was_lost(
    damaged: tuple[bytes, bytes]
) -> None:
    _, bad = damaged
    with pytest.raises(BadMediaError) as err:
        blocks_of(bad, "x.mp3", 2.0)
    with open_stream(bad, "x.mp3", block_seconds=2.0, keep_partial=True) as stream:
        assert stream.damage == ""  # nothing known before the end
        kept = np.concatenate(list(stream))
        assert stream.damage == err.value.reason
        assert stream.seconds == duration(kept)


@pytest.mark.parametrize("keep", [False, True])
def test_a_file_cut_short_of_its_declared_length(audio_dir: Path, keep: bool) -> None:
    data = (audio_dir / "bad" / "truncated.mp3").read_bytes()
    reason = "truncated or corrupt audio (decoded 0.40 s of the 3.99 s its header declares)"
    with open_stream(data, "truncated.mp3", keep_partial=keep) as stream:  # opens fine
        assert stream.declared == pytest.approx(3.99, abs=0.01)
        blocks = []
        if keep:
            blocks = list(stream)
        else:
            with pytest.raises(BadMediaError, match=r"decoded 0\.40 s") as err:
                for block in stream:
                    blocks.append(block)
            assert err.value.reason == reason
        assert stream.damage == reason
    assert duration(np.concatenate(blocks)) == pytest.approx(0.4, abs=0.05)


@pytest.mark.parametrize("keep", [False, True])
def test_a_file_that_decodes_to_nothing_fails_even_when_kept(keep: bool) -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as header_only:
        header_only.setnchannels(1)
        header_only.setsampwidth(2)
        header_only.setframerate(SAMPLE_RATE)
    with open_stream(out.getvalue(), "header-only.wav", keep_partial=keep) as stream, \
            pytest.raises(BadMediaError) as err:
        next(stream)
    assert err.value.reason == "truncated or corrupt audio (no audio samples could be decoded)"


def test_what_cannot_be_opened_fails_at_open(audio_dir: Path, files: dict[str, bytes]) -> None:
    m4a = files["tone.m4a"]  # its index (moov) comes last
    cases = {
        "empty.wav": (b"", "empty file (0 bytes)"),
        "notes.mp3": ((audio_dir / "bad" / "notes.mp3").read_bytes(),
                      "not an audio or video file (Invalid data found when processing input)"),
        "cut.m4a": (m4a[: len(m4a) // 2], "truncated or corrupt audio ("),
        "slides.mp4": (dm.video_without_audio(), "no audio stream (container "),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(BadMediaError) as err:
            open_stream(data, name)  # no block asked for yet
        assert err.value.reason.startswith(reason), name


@pytest.mark.parametrize("name", ["tone.flac", "tone.wav"])
def test_opening_reads_the_head_not_the_file(files: dict[str, bytes], name: str) -> None:
    data = files[name]
    reader = RangedReader(name, len(data), lambda start, end: data[start:end],
                          block_bytes=64 << 10)
    with open_stream(reader, name) as stream:  # type: ignore[arg-type]
        assert reader.fetched <= 256 << 10 < len(data) // 3
        assert sum(len(b) for b in stream) > 0


def test_an_mp3s_duration_tag_is_found_behind_a_large_id3_tag() -> None:
    # Cover art can make an ID3 tag megabytes long, far beyond the head read at first: the
    # Xing header that declares the length is looked for past it.
    vbr = dm.mp3_vbr(dm.speech())
    size = 3 << 20
    syncsafe = bytes((size >> s) & 0x7F for s in (21, 14, 7, 0))
    data = b"ID3\x04\x00\x00" + syncsafe + bytes(size) + vbr
    with open_stream(data, "cover.mp3") as stream:
        assert stream.declared == pytest.approx(duration(decode_audio(io.BytesIO(vbr))),
                                                 abs=0.1)
        np.testing.assert_array_equal(np.concatenate(list(stream)),
                                      decode_audio(io.BytesIO(data)))


# --- storage failures -----------------------------------------------------------------------
@pytest.mark.parametrize("name", [f[0] for f in FORMATS])
@pytest.mark.parametrize("at", [0.0, 0.3, 0.9])
def test_a_read_that_fails_mid_file_is_a_storage_error_not_bad_media(
    files: dict[str, bytes], name: str, at: float
) -> None:
    data = files[name]
    cut = int(len(data) * at)

    def fetch(start: int, end: int) -> bytes:
        if end > cut:
            raise ConnectionError("connection reset by peer")
        return data[start:end]

    reader = RangedReader("s3://bucket/" + name, len(data), fetch, block_bytes=4096)
    with pytest.raises(storage.StorageError) as err, \
            open_stream(reader, name, keep_partial=True) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
    assert err.value.reason == Reason.UNREACHABLE and storage.store_lost(err.value.reason)
    # Nothing of the failure is left behind in PyAV for the next file to trip over.
    assert len(decode_media(files["tone.flac"], "next.flac").samples) > 0


class _BrokenDisk(io.BytesIO):
    """A file whose reads fail past `limit` bytes, as a disk with a bad sector does."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() + (size or 0) > self.limit:
            raise OSError(5, "Input/output error")
        return super().read(size)


def test_any_source_s_read_error_comes_through_as_itself(files: dict[str, bytes]) -> None:
    data = files["tone.mp3"]
    with pytest.raises(OSError, match="Input/output error"):
        blocks_of(_BrokenDisk(data, len(data) // 2), "tone.mp3", 30.0)
