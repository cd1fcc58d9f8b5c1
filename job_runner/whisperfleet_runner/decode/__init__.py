"""Decoding: the model and the ways it turns audio into segments.

Entry points: `protocols` (what the pipeline asks of a model: `Engine`, `ChunkDecoding`,
`ClipPacking`), `engine.get_engine` / `engine.load` (the faster-whisper engine, once per
process and device), `lazy_engine.LazyEngine` (loaded on first need), `models.resolve_model`
(a `--model` value to a local CTranslate2 folder), `chunk_batcher.ChunkBatcher` (chunks of
several files per batch; `transcribe_file` for one file), `packing.transcribe_packed` (short
clips sharing encoder windows). `chunk_decode`, `packed_decode` and `encoder` are the steps
below those.

Submodules are imported by name, never from here: importing this package loads nothing heavy
(the parent of spawned GPU workers must never import CTranslate2).
"""
