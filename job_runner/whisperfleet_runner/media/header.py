"""What a media file's first bytes and its container header say, read without the rest.

`audio` uses these facts to word its reasons: whether unopenable bytes are media at all,
and whether the length a header states can be trusted to expose a file cut short. Only the
head of the file is read (past an mp3's ID3 tag, however large), so a 10-hour recording
costs a few KiB here.

An mp3's length is stated by the Xing/Info/VBRI header in its first frame (the frame count).
FFmpeg reads it when the file starts with that frame or with an ID3 tag; with other bytes in
front (junk, a tag written by a broken tool) it skips to the first frame it can sync on,
decodes the header frame as silence and only estimates the length from the file's size, so a
file cut short would pass as whole. The header is therefore also found and read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import av

HEAD_BYTES = 4096  # signatures, and an mp3's first frame unless an ID3 tag comes first
# Formats whose stream duration comes from a header or index rather than a bitrate estimate
# (FFmpeg's estimate for VBR streams can be far off, which would flag good files).
_DECLARED_DURATION_FORMATS = ("mov", "mp4", "m4a", "matroska", "webm", "flac", "asf", "ogg")
_MP3_DURATION_TAGS = (b"Xing", b"Info", b"VBRI")
_TAG_BYTES = 256  # where a Xing/Info/VBRI tag sits in an mp3's first frame
_MEDIA_SIGNATURES = (  # leading bytes: WAV/AVI, mp3 ID3, FLAC, Ogg, Matroska/WebM, AIFF, ASF
    b"RIFF", b"ID3", b"fLaC", b"OggS", b"\x1a\x45\xdf\xa3", b"FORM",
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",
)


@dataclass(frozen=True)
class Head:
    """The first bytes of a file (`bytes`, empty for an empty file); whether its first MPEG
    frame, where FFmpeg looks for it, carries a Xing/Info/VBRI header (which counts the
    frames: `mp3_tag`); and the length such a header states wherever the first frame is
    (`mp3_seconds`, None without one)."""

    bytes: bytes
    mp3_tag: bool
    mp3_seconds: float | None = None


def read_head(file: BinaryIO) -> Head:
    """The head of `file`, read from its start; the file is left at its start."""
    file.seek(0)
    head = file.read(HEAD_BYTES)
    tag_at = head.find(b"ID3")  # at 0, or after bytes a broken tool put in front
    start = _after_id3(head, tag_at) if 0 <= tag_at < len(head) - 10 else 0
    if start + _TAG_BYTES <= len(head):
        frame = head[start : start + _TAG_BYTES]
    else:  # cover art in the tag can make it megabytes long
        file.seek(start)
        frame = file.read(_TAG_BYTES)
    at_front = tag_at in (0, -1)  # where FFmpeg reads the header from
    tagged = any(tag in frame for tag in _MP3_DURATION_TAGS)
    seconds = None
    if not (at_front and tagged):
        file.seek(start)
        seconds = _mp3_stated_seconds(file.read(HEAD_BYTES))
    file.seek(0)
    return Head(head, at_front and tagged, seconds)


def _after_id3(head: bytes, at: int) -> int:
    """Where the ID3v2 tag at `at` ends: its size is a 28-bit "syncsafe" integer (the tag is
    skipped so its text cannot match); `at` itself when these bytes are no such tag."""
    version, flags, size = head[at + 3], head[at + 5], head[at + 6: at + 10]
    if version == 0xFF or any(b & 0x80 for b in size):
        return at
    length = (size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3]
    return at + 10 + length + (10 if flags & 0x10 else 0)


# MPEG audio frame header fields: version (0: 2.5, 2: 2, 3: 1) -> sample rates by index;
# samples per Layer III frame by version.
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_LAYER3_SAMPLES = {3: 1152, 2: 576, 0: 576}


def _mp3_stated_seconds(data: bytes) -> float | None:
    """The length the Xing/Info/VBRI header of the first Layer III frame in `data` states
    (its frame count), or None when there is no such frame or header."""
    for at in range(len(data) - 4):
        b1, b2, b3 = data[at + 1], data[at + 2], data[at + 3]
        if data[at] != 0xFF or b1 & 0xE0 != 0xE0:
            continue
        version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
        bitrate, rate = b2 >> 4, (b2 >> 2) & 3
        if version == 1 or layer != 1 or bitrate in (0, 15) or rate == 3:
            continue  # not a Layer III frame header: keep looking
        mono = b3 >> 6 == 3
        side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
        frames = None
        xing = at + 4 + side
        if data[xing: xing + 4] in (b"Xing", b"Info") and len(data) >= xing + 12:
            flags = int.from_bytes(data[xing + 4: xing + 8], "big")
            if flags & 1:
                frames = int.from_bytes(data[xing + 8: xing + 12], "big")
        elif data[at + 36: at + 40] == b"VBRI" and len(data) >= at + 54:
            frames = int.from_bytes(data[at + 50: at + 54], "big")
        if not frames:
            return None
        return frames * _LAYER3_SAMPLES[version] / _RATES[version][rate]
    return None


def declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream, head: Head
) -> float | None:
    """The audio stream's duration as its header states it; None when only estimated."""
    if stream.duration is None or stream.time_base is None:
        return None
    formats = set(container.format.name.split(","))
    if "mp3" in formats:
        if not head.mp3_tag:
            return head.mp3_seconds  # FFmpeg did not read the header: only we did, if any
    elif not formats & set(_DECLARED_DURATION_FORMATS):
        return None
    return float(stream.duration * stream.time_base)


def looks_like_media(head: Head) -> bool:
    """Whether the file starts with the signature of a common audio/video container."""
    first = head.bytes
    if first[4:8] == b"ftyp" or first.startswith(_MEDIA_SIGNATURES):
        return True
    # An MPEG audio frame sync (raw mp3 / ADTS AAC without an ID3 tag).
    return len(first) > 1 and first[0] == 0xFF and first[1] & 0xE0 == 0xE0
