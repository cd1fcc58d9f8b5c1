"""Damaged media, decoded: it fails with where and how much, or is kept in part on request.

Files are damaged from the committed speech fixtures (tests/support/damaged_media.py). Where
the damage sits is taken from FFmpeg's frame map of the CLEAN file, and how much audio was
lost from comparing the clean and the damaged decode, so the reasons are checked against
facts the code under test did not produce.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from faster_whisper import decode_audio

from tests.support import damaged_media as dm
from whisperfleet_runner.media.audio import BadMediaError, Decoded, decode, decode_media, duration
from whisperfleet_runner.media.damage import clock, mpeg_frame_size

SR = dm.RATE
GARBAGE = 3000  # bytes written over the middle of a file


@pytest.fixture(scope="module")
def pcm() -> np.ndarray:
    return dm.speech()


@pytest.fixture(scope="module")
def clean(pcm: np.ndarray) -> dict[str, bytes]:
    """One clean encoding of the speech per format."""
    return {
        "cbr.mp3": dm.mp3_cbr(pcm), "vbr.mp3": dm.mp3_vbr(pcm),
        "flac": dm.encode(pcm, "flac", "flac"), "aac": dm.encode(pcm, "adts", "aac"),
        "m4a": dm.encode(pcm, "ipod", "aac"), "webm": dm.opus(pcm, "webm"),
        "ogg": dm.opus(pcm, "ogg"), "wav": dm.encode(pcm, "wav", "pcm_s16le"),
    }


def damaged_mid(data: bytes) -> tuple[bytes, int]:
    at = len(data) * 2 // 3
    return dm.overwrite(data, at, GARBAGE), at


def position(reason: str) -> float:
    """The first `at M:SS.s` of a reason, in seconds."""
    match = re.search(r" at (\d+):(\d\d\.\d)", reason)
    assert match, reason
    return int(match.group(1)) * 60 + float(match.group(2))


def lost(reason: str) -> float:
    match = re.search(r"about (\d+\.\d) s lost$", reason)
    assert match, reason
    return float(match.group(1))


def fails(data: bytes, name: str) -> str:
    """The reason decoding `data` fails with, by default."""
    with pytest.raises(BadMediaError) as err:
        decode(data, name)
    return err.value.reason


def kept(data: bytes, name: str) -> Decoded:
    decoded = decode_media(data, name, keep_partial=True)
    assert decoded.partial
    return decoded


@pytest.mark.parametrize("kind", ["cbr.mp3", "vbr.mp3"])
def test_garbage_inside_an_mp3_names_where_and_how_much(clean: dict[str, bytes],
                                                        kind: str) -> None:
    good = clean[kind]
    bad, at = damaged_mid(good)
    whole = duration(decode(good, kind))
    where = dm.frame_holding(good, at).at
    # PyAV's container.decode (faster-whisper's decoder) stops at the first rejected frame:
    # the rest of the file would silently be missing from the transcript.
    assert len(decode_audio(io.BytesIO(bad))) / SR == pytest.approx(where, abs=0.2)

    reason = fails(bad, kind)
    assert re.fullmatch(r"damaged audio: \d+ undecodable frames? at 0:\d\d\.\d; "
                        r"about \d+\.\d s lost", reason), reason
    assert position(reason) == pytest.approx(where, abs=0.15)

    partial = kept(bad, kind)
    assert partial.damage == reason
    assert lost(reason) == pytest.approx(whole - duration(partial.samples), abs=0.3)
    assert duration(partial.samples) > where + 3  # decoding went on past the damage


def test_audio_after_the_damage_is_decoded_exactly(clean: dict[str, bytes]) -> None:
    good = clean["cbr.mp3"]
    bad, _ = damaged_mid(good)
    tail = 3 * SR
    np.testing.assert_array_equal(kept(bad, "x.mp3").samples[-tail:],
                                  decode(good, "x.mp3")[-tail:])


@pytest.mark.parametrize("kind", ["flac", "aac", "m4a", "webm"])
def test_garbage_in_other_containers_fails_or_is_kept(clean: dict[str, bytes],
                                                      kind: str) -> None:
    # FLAC and WebM resync past garbage with no decoder error: the timestamps show the hole.
    good = clean[kind]
    bad, at = damaged_mid(good)
    reason = fails(bad, kind)
    assert reason.startswith("damaged audio: ")
    assert position(reason) == pytest.approx(dm.frame_holding(good, at).at, abs=0.5)
    partial = kept(bad, kind)
    assert partial.damage == reason
    actual = duration(decode(good, kind)) - duration(partial.samples)
    assert lost(reason) == pytest.approx(actual, abs=0.3)


def test_ogg_damage_is_caught_by_its_declared_duration(clean: dict[str, bytes]) -> None:
    bad, _ = damaged_mid(clean["ogg"])
    reason = fails(bad, "x.ogg")
    assert re.fullmatch(r"truncated or corrupt audio \(decoded [\d.]+ s of the [\d.]+ s its "
                        r"header declares\)", reason)
    assert kept(bad, "x.ogg").damage == reason


def test_wav_damage_is_a_known_limit(clean: dict[str, bytes]) -> None:
    # PCM has no structure to break: garbage decodes as noise of the same length.
    bad, _ = damaged_mid(clean["wav"])
    decoded = decode_media(bad, "x.wav")
    assert not decoded.partial and duration(decoded.samples) == duration(decode(clean["wav"],
                                                                                "x.wav"))


@pytest.mark.parametrize("keep", [False, True])
def test_mp3_cut_mid_frame_fails_or_keeps_what_is_there(clean: dict[str, bytes],
                                                        keep: bool) -> None:
    good = clean["cbr.mp3"]  # no Xing header: nothing declares how long it was
    frames = dm.frame_map(good)
    middle = frames[len(frames) // 2]
    cut = good[: middle.pos + middle.size // 2]
    if not keep:
        reason = fails(cut, "cut.mp3")
        assert reason == (f"damaged audio: the file ends mid-frame at {clock(middle.at)} "
                          "(cut short?); lost: unknown")
        assert position(reason) == pytest.approx(middle.at, abs=0.05)
    else:
        assert duration(kept(cut, "cut.mp3").samples) == pytest.approx(middle.at, abs=0.1)


def test_mp3_cut_on_a_frame_boundary_is_a_known_limit(clean: dict[str, bytes]) -> None:
    # Without a Xing header nothing says more was to come: it is a shorter, intact mp3.
    frames = dm.frame_map(clean["cbr.mp3"])
    middle = frames[len(frames) // 2]
    decoded = decode_media(clean["cbr.mp3"][: middle.pos], "cut.mp3")
    assert not decoded.partial
    assert duration(decoded.samples) == pytest.approx(middle.at, abs=0.1)


def test_vbr_mp3_cut_mid_frame_keeps_its_declared_duration_reason(
    clean: dict[str, bytes]
) -> None:
    good = clean["vbr.mp3"]
    frames = dm.frame_map(good)
    middle = frames[len(frames) // 2]
    cut = good[: middle.pos + middle.size // 2]
    reason = fails(cut, "cut.mp3")
    assert reason.startswith(f"truncated or corrupt audio (decoded {middle.at:.1f}")
    assert kept(cut, "cut.mp3").damage == reason


@pytest.mark.parametrize("keep", [False, True])
def test_junk_before_the_first_frame_loses_nothing(clean: dict[str, bytes],
                                                   keep: bool) -> None:
    good = clean["cbr.mp3"]
    decoded = decode_media(dm.junk(700) + good, "x.mp3", keep_partial=keep)
    assert not decoded.partial
    np.testing.assert_array_equal(decoded.samples, decode(good, "x.mp3"))


@pytest.mark.parametrize("keep", [False, True])
def test_junk_before_the_id3_tag_loses_nothing(audio_dir: Path, keep: bool) -> None:
    good = (audio_dir / "hello.mp3").read_bytes()
    decoded = decode_media(dm.junk(700) + good, "hello.mp3", keep_partial=keep)
    assert not decoded.partial
    # The tag is skipped as junk, so its Info frame decodes as 72 ms of silence in front.
    assert duration(decoded.samples) == pytest.approx(duration(decode(good, "x")), abs=0.1)


@pytest.mark.parametrize("kind", ["hello", "vbr"])
def test_an_mp3_cut_short_with_junk_before_its_id3_tag_is_truncated(
    audio_dir: Path, clean: dict[str, bytes], kind: str
) -> None:
    # FFmpeg skips the tag as junk and only estimates the length; the Info/Xing header of
    # the first frame still says how long the recording was.
    good = ((audio_dir / "hello.mp3").read_bytes() if kind == "hello"
            else dm.id3_tag() + clean["vbr.mp3"])
    frames = dm.frame_map(good)
    cut = dm.junk(700) + good[: frames[len(frames) // 4].pos]
    reason = fails(cut, "talk.mp3")
    assert re.fullmatch(r"truncated or corrupt audio \(decoded \d\.\d\d s of the "
                        r"\d+\.\d\d s its header declares\)", reason), reason
    whole = duration(decode(good, "talk.mp3"))
    declared = float(reason.split(" of the ")[1].split(" s ")[0])
    assert declared == pytest.approx(whole, abs=0.15)
    assert kept(cut, "talk.mp3").damage == reason


@pytest.mark.parametrize("keep", [False, True])
def test_an_mp3_named_wav_is_not_damage(clean: dict[str, bytes], keep: bool) -> None:
    decoded = decode_media(clean["cbr.mp3"], "talk.wav", keep_partial=keep)
    assert not decoded.partial
    np.testing.assert_array_equal(decoded.samples, decode_audio(io.BytesIO(clean["cbr.mp3"])))


def test_zero_padding_after_the_last_frame_is_not_damage(clean: dict[str, bytes]) -> None:
    good = clean["cbr.mp3"]
    decoded = decode_media(good + bytes(700), "x.mp3")
    np.testing.assert_array_equal(decoded.samples, decode(good, "x.mp3"))


def test_garbage_after_the_last_frame_leaves_the_loss_open(clean: dict[str, bytes]) -> None:
    # A CBR mp3 gives no way to tell random bytes appended from a destroyed tail.
    reason = fails(clean["cbr.mp3"] + dm.junk(700), "x.mp3")
    assert re.fullmatch(r"damaged audio: 1 undecodable frame at 0:16\.\d; the file ends in "
                        r"undecodable data; at least \d+\.\d s lost", reason), reason


LYRICS3 = b"LYRICSBEGININD0000210EAL00011hello worldLYRICS200"  # a Lyrics3v2 tag


@pytest.mark.parametrize("kind", ["cbr.mp3", "vbr.mp3"])
@pytest.mark.parametrize("tail", [LYRICS3, b"appended notes\n" * 8], ids=["lyrics3", "text"])
def test_a_tag_or_text_after_the_last_frame_is_no_damage(
        clean: dict[str, bytes], kind: str, tail: bytes) -> None:
    # Players ignore them; every frame of the audio decodes.
    decoded = decode_media(clean[kind] + tail, "x.mp3")
    assert not decoded.partial
    np.testing.assert_array_equal(decoded.samples, decode(clean[kind], "x.mp3"))


@pytest.mark.parametrize("kind", ["cbr.mp3", "vbr.mp3", "flac", "aac", "m4a", "webm", "ogg",
                                  "wav"])
def test_clean_files_are_never_partial(clean: dict[str, bytes], kind: str) -> None:
    decoded = decode_media(clean[kind], kind, keep_partial=True)
    assert not decoded.partial and duration(decoded.samples) > 16


def test_damage_in_several_places_names_each(clean: dict[str, bytes]) -> None:
    good = clean["cbr.mp3"]
    whole = duration(decode(good, "x.mp3"))
    offsets = [int(len(good) * f) for f in (0.2, 0.4, 0.6, 0.8)]
    expected, bad = [], good
    for i, offset in enumerate(offsets):
        # Positions are in the audio as decoded: the damage before shifts them by its loss.
        before = whole - duration(decode_media(bad, "x.mp3", keep_partial=True).samples)
        expected.append(dm.frame_holding(good, offset).at - before)
        bad = dm.overwrite(bad, offset, 600, seed=i)
    reason = fails(bad, "x.mp3")
    named = [int(m) * 60 + float(s) for m, s in re.findall(r"(\d+):(\d\d\.\d)", reason)]
    assert named == pytest.approx(expected[:3], abs=0.15)
    assert "and 1 more place" in reason


def test_mpeg_frame_sizes_agree_with_ffmpeg(clean: dict[str, bytes]) -> None:
    for kind in ("cbr.mp3", "vbr.mp3"):
        data = clean[kind]
        frames = dm.frame_map(data)[1:]  # the first VBR frame is the Xing header
        assert {mpeg_frame_size(data[f.pos : f.pos + 4]) - f.size for f in frames} == {0}


def test_positions_read_as_a_clock() -> None:
    assert [clock(s) for s in (0, 11.04, 71.96, 3723.44)] == [
        "0:00.0", "0:11.0", "1:12.0", "1:02:03.4"]
