"""Output formats, checked with the real `srt` and `webvtt-py` parsers."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import srt
import webvtt

from whisperfleet_runner.contract import FORMATS
from whisperfleet_runner.contract.transcript import Segment, Transcript, Word
from whisperfleet_runner.pipeline.formats import RENDERERS, render, render_all


def _transcript(segments: list[Segment]) -> Transcript:
    return Transcript(
        source="s3://media/podcasts/ep1.mp3", language="en", language_probability=0.98,
        duration=3725.5, model="tiny.en", compute_type="int8", device="cpu", segments=segments,
    )


@pytest.fixture
def talk() -> Transcript:
    return _transcript([
        Segment(0, 0.0, 1.5, " Hello there.", -0.2, 0.01,
                [Word(0.0, 0.6, " Hello", 0.9), Word(0.6, 1.5, " there.", 0.8)]),
        Segment(1, 1.5, 61.2346, " It's <ten> & counting", -0.3, 0.02),
        Segment(2, 3599.9996, 3725.0, " Over an hour\nlater.", -0.1, 0.0),
    ])


@pytest.fixture
def silence() -> Transcript:
    return _transcript([])


def test_every_configured_format_has_a_renderer() -> None:
    assert set(RENDERERS) == set(FORMATS)


def test_json_is_the_design_shape(talk: Transcript) -> None:
    data = json.loads(render(talk, "json"))
    assert list(data) == ["source", "language", "language_probability", "duration", "model",
                          "compute_type", "device", "segments", "text"]
    assert data["source"] == "s3://media/podcasts/ep1.mp3"
    assert data["segments"][0]["words"][1] == {
        "start": 0.6, "end": 1.5, "word": " there.", "probability": 0.8}
    assert "words" not in data["segments"][1]  # no word timestamps asked: no key at all
    assert set(data["segments"][1]) == {"id", "start", "end", "text", "avg_logprob",
                                        "no_speech_prob"}
    assert data["text"].startswith("Hello there. It's <ten> & counting")


def test_json_keeps_unicode_readable() -> None:
    t = _transcript([Segment(0, 0.0, 1.0, " Grüße, 東京")])
    text = render(t, "json")
    assert "Grüße, 東京" in text
    assert json.loads(text)["segments"][0]["text"] == " Grüße, 東京"


def test_txt_has_one_segment_per_line(talk: Transcript) -> None:
    assert render(talk, "txt") == (
        "Hello there.\nIt's <ten> & counting\nOver an hour later.\n"
    )


def test_srt_parses_with_exact_times(talk: Transcript) -> None:
    text = render(talk, "srt")
    cues = list(srt.parse(text))
    assert [c.index for c in cues] == [1, 2, 3]
    assert [c.content for c in cues] == [
        "Hello there.", "It's <ten> & counting", "Over an hour later."]
    assert cues[1].end == timedelta(seconds=61, milliseconds=235)  # 61.2346 s rounds to ,235
    assert cues[2].start == timedelta(hours=1)  # 3599.9996 rounds up over the hour
    starts = [c.start for c in cues]
    assert starts == sorted(starts) and all(c.end >= c.start for c in cues)
    assert re.findall(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$", text, re.M) == [
        "00:00:00,000 --> 00:00:01,500",
        "00:00:01,500 --> 00:01:01,235",
        "01:00:00,000 --> 01:02:05,000",
    ]


def test_vtt_parses_with_exact_times(talk: Transcript) -> None:
    text = render(talk, "vtt")
    assert text.startswith("WEBVTT\n\n")
    cues = webvtt.from_string(text).captions
    assert len(cues) == len(talk.segments)
    assert [(c.start, c.end) for c in cues] == [
        ("00:00:00.000", "00:00:01.500"),
        ("00:00:01.500", "00:01:01.235"),
        ("01:00:00.000", "01:02:05.000"),
    ]
    # Markup characters are escaped, so a player shows them instead of eating a "tag".
    assert cues[1].text == "It's &lt;ten&gt; &amp; counting"
    assert cues[2].text == "Over an hour later."
    assert [c.start_in_seconds for c in cues] == sorted(c.start_in_seconds for c in cues)


def test_tsv_matches_openai_whisper_layout(talk: Transcript) -> None:
    lines = render(talk, "tsv").splitlines()
    assert lines[0] == "start\tend\ttext"
    assert lines[1:] == [
        "0\t1500\tHello there.",
        "1500\t61235\tIt's <ten> & counting",
        "3600000\t3725000\tOver an hour later.",
    ]


def test_tabs_and_blank_lines_cannot_break_cues() -> None:
    t = _transcript([Segment(0, 0.0, 1.0, "one\n\n2\n00:00:00,000 --> 00:00:09,000\ttwo"),
                     Segment(1, 1.0, 2.0, "three")])
    assert len(list(srt.parse(render(t, "srt")))) == 2
    assert len(webvtt.from_string(render(t, "vtt")).captions) == 2
    assert [line.count("\t") for line in render(t, "tsv").splitlines()] == [2, 2, 2]
    assert len(render(t, "txt").splitlines()) == 2


def test_blank_segments_are_left_out_of_cues() -> None:
    t = _transcript([Segment(0, 0.0, 1.0, "  "), Segment(1, 1.0, 2.0, " words")])
    cues = list(srt.parse(render(t, "srt")))
    assert [(c.index, c.content) for c in cues] == [(1, "words")]
    assert len(json.loads(render(t, "json"))["segments"]) == 2


def test_silence_renders_valid_empty_files(silence: Transcript) -> None:
    out = render_all(silence, FORMATS)
    assert set(out) == set(FORMATS)
    assert json.loads(out["json"])["segments"] == [] and json.loads(out["json"])["text"] == ""
    assert out["txt"] == ""
    assert list(srt.parse(out["srt"])) == []
    assert out["vtt"] == "WEBVTT\n"
    assert webvtt.from_string(out["vtt"]).captions == []
    assert out["tsv"] == "start\tend\ttext\n"


def test_unknown_format_names_the_choices(talk: Transcript) -> None:
    with pytest.raises(ValueError, match=r"unknown output format 'docx'.*json, txt, srt"):
        render(talk, "docx")


def test_render_all_returns_requested_formats_only(talk: Transcript) -> None:
    out = render_all(talk, ["srt", "json"])
    assert list(out) == ["srt", "json"]
    assert out["srt"] == render(talk, "srt")
