"""What a media file's first bytes and its container header say, read without the rest.

`audio` uses these facts to word its reasons: whether unopenable bytes are media at all,
and whether the length a header states can be trusted to expose a file cut short. Only the
head of the file is read (past an mp3's ID3 tag, however large), so a 10-hour recording
costs a few KiB here.
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
    """The first bytes of a file (`bytes`, empty for an empty file), and whether its first
    MPEG frame carries a Xing/Info/VBRI header (which counts the frames)."""

    bytes: bytes
    mp3_tag: bool


def read_head(file: BinaryIO) -> Head:
    """The head of `file`, read from its start; the file is left at its start."""
    file.seek(0)
    head = file.read(HEAD_BYTES)
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        # ID3v2 size is a 28-bit "syncsafe" integer; skip the tag so its text cannot match.
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        start = 10 + size + (10 if head[5] & 0x10 else 0)
    if start + _TAG_BYTES <= len(head):
        frame = head[start : start + _TAG_BYTES]
    else:  # cover art in the tag can make it megabytes long
        file.seek(start)
        frame = file.read(_TAG_BYTES)
    file.seek(0)
    return Head(head, any(tag in frame for tag in _MP3_DURATION_TAGS))


def declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream, head: Head
) -> float | None:
    """The audio stream's duration as its header states it; None when only estimated."""
    if stream.duration is None or stream.time_base is None:
        return None
    formats = set(container.format.name.split(","))
    if "mp3" in formats:
        if not head.mp3_tag:
            return None
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
