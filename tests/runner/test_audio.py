"""Decoding real fixture files with PyAV, and the specific reason given for each bad input."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from faster_whisper import decode_audio

from tests.support import damaged_media as dm
from whisperfleet_runner.media.audio import SAMPLE_RATE, BadMediaError, decode, duration


def read(path: Path) -> bytes:
    return path.read_bytes()


def encode(fmt: str, codec: str, seconds: float, rate: int = 44100) -> bytes:
    """A real stereo 440 Hz tone encoded by FFmpeg (through PyAV) into `fmt`."""
    out = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        for i in range(0, len(tone), 16384):
            chunk = tone[i : i + 16384]
            interleaved = np.repeat(chunk, 2).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("name", ["hello.wav", "hello.mp3"])
def test_speech_fixture_decodes_like_faster_whisper(audio_dir: Path, name: str) -> None:
    data = read(audio_dir / name)
    samples = decode(data, name)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert duration(samples) == pytest.approx(3.99, abs=0.05)
    # Same samples as faster-whisper's own decoder: transcripts must not depend on the path.
    np.testing.assert_array_equal(samples, decode_audio(io.BytesIO(data)))


def test_silence_decodes_to_twelve_quiet_seconds(audio_dir: Path) -> None:
    samples = decode(read(audio_dir / "silence.wav"), "silence.wav")
    assert duration(samples) == pytest.approx(12.0, abs=0.01)
    assert float(np.abs(samples).max()) < 0.01


def test_stereo_44k_is_downmixed_and_resampled() -> None:
    samples = decode(encode("flac", "flac", 3.0), "tone.flac")
    assert samples.ndim == 1
    assert len(samples) == pytest.approx(3 * SAMPLE_RATE, abs=SAMPLE_RATE * 0.02)
    assert 0.2 < float(np.abs(samples).max()) < 0.4  # the tone's amplitude survives


def test_empty_file(audio_dir: Path) -> None:
    with pytest.raises(BadMediaError) as err:
        decode(read(audio_dir / "bad" / "empty.wav"), "empty.wav")
    assert err.value.reason == "empty file (0 bytes)"


def test_text_file_named_mp3(audio_dir: Path) -> None:
    with pytest.raises(BadMediaError) as err:
        decode(read(audio_dir / "bad" / "notes.mp3"), "notes.mp3")
    assert err.value.reason == (
        "not an audio or video file (Invalid data found when processing input)"
    )


def test_truncated_mp3_is_flagged_although_ffmpeg_decodes_its_start(audio_dir: Path) -> None:
    data = read(audio_dir / "bad" / "truncated.mp3")
    # FFmpeg itself reports no error: it returns the 0.4 s that are there.
    assert len(decode_audio(io.BytesIO(data))) / SAMPLE_RATE == pytest.approx(0.4, abs=0.05)
    with pytest.raises(BadMediaError) as err:
        decode(data, "truncated.mp3")
    assert err.value.reason == (
        "truncated or corrupt audio (decoded 0.40 s of the 3.99 s its header declares)"
    )


def test_truncated_flac_is_flagged() -> None:
    data = encode("flac", "flac", 6.0)
    with pytest.raises(BadMediaError, match=r"truncated or corrupt audio \(decoded [\d.]+ s of"):
        decode(data[: len(data) // 2], "cut.flac")


def test_mp4_cut_before_its_index_is_called_truncated_not_foreign() -> None:
    data = encode("mp4", "aac", 3.0)  # the moov index is written at the end
    with pytest.raises(BadMediaError) as err:
        decode(data[: len(data) // 2], "cut.m4a")
    assert err.value.reason.startswith("truncated or corrupt audio (")


def test_truncated_wav_decodes_what_remains(audio_dir: Path) -> None:
    # Known limit: FFmpeg clamps a WAV's declared length to the bytes present, so a cut WAV
    # cannot be told from a short one; it transcribes the part that is there.
    data = read(audio_dir / "hello.wav")
    samples = decode(data[: len(data) // 2], "cut.wav")
    assert duration(samples) == pytest.approx(2.0, abs=0.05)


def test_video_without_audio_stream() -> None:
    with pytest.raises(BadMediaError, match=r"^no audio stream \(container .* holds: video\)$"):
        decode(dm.video_without_audio(5), "slides.mp4")


def test_duration_of_decoded_audio() -> None:
    assert duration(np.zeros(SAMPLE_RATE * 3, np.float32)) == 3.0
    assert duration(np.zeros(0, np.float32)) == 0.0
