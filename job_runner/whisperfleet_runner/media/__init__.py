"""Media: any audio or video file to 16 kHz mono samples, and those samples to Whisper's chunks.

Entry points: `audio.open_stream` (decode block by block, with specific reasons for bad or
damaged media: `header`, `damage`) and `speech_chunks.cut_windows` / `speech_chunks.ChunkJoiner`
(VAD over bounded windows cut at silence; speech joined into chunks of at most 30 s).

Submodules are imported by name, never from here: importing this package loads nothing heavy.
"""
