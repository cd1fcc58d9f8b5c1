#!/usr/bin/env bash
# Regenerates the bundled synthetic speech (examples/audio) and the test fixtures
# (tests/fixtures/audio). Needs Debian's espeak-ng, sox and ffmpeg. Output is committed;
# tests never run this script.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
ex="$here/examples/audio"
fx="$here/tests/fixtures/audio"
mkdir -p "$ex" "$fx/nested/deeper" "$fx/bad"

say() {  # say OUT.wav "text"  -> 16 kHz mono 16-bit WAV
  local tmp; tmp="$(mktemp --suffix=.wav)"
  espeak-ng -v en-us -s 150 -w "$tmp" "$2"
  sox "$tmp" -r 16000 -c 1 -b 16 "$1"
  rm -f "$tmp"
}

say "$ex/weather.wav" "The weather today is sunny with a light breeze from the west."
say "$ex/meeting.wav" "Please send the quarterly report to the finance team before Friday."
say "$ex/directions.wav" "Turn left at the second traffic light and the station is on your right."

say "$fx/hello.wav" "Hello world, this is a test of the transcription system."
say "$fx/nested/numbers.wav" "One two three four five six seven eight nine ten."
say "$fx/nested/deeper/hello.wav" "Good morning everyone, welcome to the meeting."
say "$fx/with space é.wav" "The quick brown fox jumps over the lazy dog."
ffmpeg -loglevel error -y -i "$fx/hello.wav" -codec:a libmp3lame -b:a 32k "$fx/hello.mp3"
sox -n -r 16000 -c 1 -b 16 "$fx/silence.wav" trim 0.0 12.0

: > "$fx/bad/empty.wav"
head -c 2000 "$fx/hello.mp3" > "$fx/bad/truncated.mp3"
echo "this is not audio at all, just text pretending to be an mp3" > "$fx/bad/notes.mp3"
