"""Where a damaged file went wrong while decoding, and how much audio it lost.

`audio` feeds a `DamageLog` what PyAV 18 shows of damage (observed on real damaged files,
pinned by tests/runner/test_damaged_media.py), and `describe` words it for the user:
- a packet the decoder rejects (InvalidDataError from `packet.decode()`: garbage inside an
  mp3, AAC or mp4 stream). The audio lost is estimated from its size at the stream's bit
  rate, because the demuxer often swallows a whole run of garbage into one
  "frame" whose duration field is a single frame's (3 KB of junk in a 32 kbit/s mp3: one
  36 ms packet that stood for 0.8 s of audio).
- a jump forward in the decoded frames' timestamps: Ogg, Matroska/WebM and FLAC resync past
  garbage WITHOUT any error, dropping pages, clusters or frames (4.2 s of a WebM vanish);
  FLAC's parser also hands over frames without a timestamp where it lost sync. Ogg damage
  is caught by the declared duration first (its reason names the shortfall).
- an MPEG audio stream whose last packet is shorter than its own frame header says: the
  file was cut mid-frame. FFmpeg decodes what is there without an error; how much followed
  the cut is unknown.
- a stream that ends in a rejected packet: how much followed is unknown.
Junk BEFORE the first frame (or before an ID3 tag) is skipped by FFmpeg's probe without
losing audio, and an all-zero packet is padding: neither is damage.
"""

from __future__ import annotations

from dataclasses import dataclass

import av

# A timestamp jump shorter than this is container rounding or encoder jitter, not lost audio.
_GAP_SECONDS = 0.25
# Rejected frames closer than this are one damaged place, not several.
_PLACE_SECONDS = 1.0
_PLACES_NAMED = 3
_MPEG_AUDIO = ("mp1", "mp1float", "mp2", "mp2float", "mp3", "mp3float")


@dataclass
class _Place:
    at: float  # seconds into the audio as decoded (the partial transcript's time)
    lost: float | None  # None: unknown


class DamageLog:
    """Damage seen while decoding one audio stream, fed in stream order. Positions are in
    the audio as it decoded, so a kept partial transcript shows the seam at that time;
    `bit_rate` (bits per second, 0 when unknown) sizes what rejected packets stood for."""

    def __init__(self, bit_rate: int = 0) -> None:
        self.bit_rate = bit_rate
        self.decoded = 0.0  # seconds of audio decoded so far
        self.rejected: list[_Place] = []
        self.gaps: list[_Place] = []
        self.end: _Place | None = None  # the file ends here, in damage: the rest is unknown
        self.end_why = ""
        self._next: float | None = None  # the timestamp the next frame should have
        self._skipped = 0.0  # seconds of rejected packets since the last frame
        self._lost_at: float | None = None  # frames since then came without timestamps
        self._after_frame: list[bytes] = []  # heads of the packets rejected since the last frame

    def __bool__(self) -> bool:
        return bool(self.rejected or self.gaps or self.end)

    def reject(self, packet: av.Packet) -> bool:
        """`packet` was refused by the decoder; False when it held nothing but zero padding
        (e.g. after the last frame), which is no damage."""
        data = bytes(packet)
        if not data.strip(b"\0"):
            return False
        length = (float(packet.duration * packet.time_base)
                  if packet.duration and packet.time_base is not None else None)
        lost = length
        if self.bit_rate > 0:
            lost = max(lost or 0.0, len(data) * 8 / self.bit_rate)
        self._skipped += length or 0.0
        self.rejected.append(_Place(self.decoded, lost))
        self._after_frame.append(data[:16])
        return True

    def frame(self, frame: av.AudioFrame) -> None:
        """A decoded frame: a forward jump in timestamps is audio the demuxer dropped, and
        frames without one amid timestamped frames are where FLAC's parser lost sync."""
        seconds = frame.samples / frame.sample_rate if frame.sample_rate else 0.0
        if frame.pts is None or frame.time_base is None:
            if self._next is not None:
                if self._lost_at is None:
                    self._lost_at = self.decoded
                self._next += seconds
        else:
            at = float(frame.pts * frame.time_base)
            if self._next is not None:
                missing = at - self._next - self._skipped  # rejected packets count already
                if missing > _GAP_SECONDS or self._lost_at is not None:
                    where = self.decoded if self._lost_at is None else self._lost_at
                    self.gaps.append(_Place(where, max(0.0, missing)))
            self._next, self._lost_at = at + seconds, None
        self._skipped = 0.0
        self._after_frame = []
        self.decoded += seconds

    def ended(self, last: av.Packet | None, rejected: bool, codec: str) -> None:
        """At the end of the stream, `last` its last packet with data: when that one was
        `rejected`, or is an MPEG audio frame shorter than its header says (a file cut
        mid-frame), whatever followed it is unknown."""
        if last is None:
            return
        if rejected:
            heads = self._after_frame
            if codec in _MPEG_AUDIO and heads and _appended(heads[0]):
                # After the last frame comes a tag (Lyrics3) or text, which players ignore
                # too: nothing of the audio is lost. Random bytes there stay damage: a CBR
                # mp3 gives no way to tell a destroyed tail from junk appended to it.
                del self.rejected[len(self.rejected) - len(heads):]
                return
            self.end = _Place(self.decoded, None)
            self.end_why = "the file ends in undecodable data"
            return
        if codec not in _MPEG_AUDIO:
            return
        data = bytes(last)
        size = mpeg_frame_size(data[:4])
        if size is not None and len(data) < size:
            # The cut frame decodes (to noise at its end): the seam is where it starts.
            length = (float(last.duration * last.time_base)
                      if last.duration and last.time_base is not None else 0.0)
            at = max(0.0, self.decoded - length)
            self.end = _Place(at, None)
            self.end_why = f"the file ends mid-frame at {clock(at)} (cut short?)"

    def describe(self) -> str:
        """The reason a user reads, e.g. `damaged audio: 2 undecodable frames at 0:11.1;
        about 0.8 s lost`."""
        parts = []
        if self.rejected:
            count = len(self.rejected)
            parts.append(f"{count} undecodable frame{'s' if count > 1 else ''} at "
                         f"{_places(_merged(self.rejected))}")
        if self.gaps:
            parts.append(f"undecodable data skipped at {_places(self.gaps)}")
        if self.end is not None:
            parts.append(self.end_why)
        places = [*self.rejected, *self.gaps, *([self.end] if self.end else [])]
        known = sum(p.lost or 0.0 for p in places)
        if any(p.lost is None for p in places):
            lost = f"at least {known:.1f} s lost" if known >= 0.05 else "lost: unknown"
        else:
            lost = f"about {known:.1f} s lost" if known >= 0.05 else "under 0.1 s lost"
        return f"damaged audio: {'; '.join(parts)}; {lost}"


def _merged(places: list[_Place]) -> list[_Place]:
    """Rejected frames grouped into the damaged places they belong to."""
    merged: list[_Place] = []
    for place in sorted(places, key=lambda p: p.at):
        if not merged or place.at - merged[-1].at > _PLACE_SECONDS:
            merged.append(place)
    return merged


def _places(places: list[_Place]) -> str:
    named = ", ".join(clock(p.at) for p in places[:_PLACES_NAMED])
    more = len(places) - _PLACES_NAMED
    return f"{named} and {more} more place{'s' if more > 1 else ''}" if more > 0 else named


def clock(seconds: float) -> str:
    """A position in the audio as `M:SS.s`, or `H:MM:SS.s` from an hour on."""
    tenths = round(max(0.0, seconds) * 10)
    minutes, tenths = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    secs = f"{tenths // 10:02d}.{tenths % 10}"
    return f"{hours}:{minutes:02d}:{secs}" if hours else f"{minutes}:{secs}"


# MPEG audio frame headers (ISO 11172-3 / 13818-3): kbit/s by [MPEG-1?][layer][index].
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mpeg_frame_size(header: bytes) -> int | None:
    """Bytes of the MPEG audio frame that starts with `header`; None when it is not a valid
    header or a free-format one (whose size the header does not give)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or index in (0, 15) or rate_index == 3:
        return None
    layer, mpeg1 = 4 - layer_bits, version == 3
    bit_rate = _BITRATES[(mpeg1, layer)][index] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        return (12 * bit_rate // rate + padding) * 4
    if layer == 3 and not mpeg1:
        return 72 * bit_rate // rate + padding
    return 144 * bit_rate // rate + padding


_TRAILING_TAGS = (b"LYRICSBEGIN", b"APETAGEX", b"TAG")


def _appended(head: bytes) -> bool:
    """Whether data after an mp3's last frame is a known trailing tag or plain text."""
    return head.startswith(_TRAILING_TAGS) or all(
        32 <= b < 127 or b in b"\t\r\n" for b in head)
