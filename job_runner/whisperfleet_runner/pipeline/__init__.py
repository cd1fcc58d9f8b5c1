"""The file pipeline on one device: fetch -> decode -> transcribe -> render -> publish -> ledger.

Entry point: `run.run_files`. Its stages: `intake` (fetch, decode and cut each file, as
`events`), `router` and `lanes` (the model stage: one lane per decoding mode), `formats`
(render), `outbox` (publish, complete or absent, and record), `ledger` (one record per file
per attempt), `overlap` (read ahead and publish behind the model, within a memory budget),
`failures` (how a file fails; when the store itself is lost).

Submodules are imported by name, never from here: importing this package loads nothing heavy.
"""
