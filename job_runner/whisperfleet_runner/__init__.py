"""whisperfleet's runner: the work a transcription does, stage by stage.

`contract` (what the operator and the runner agree on) · `storage` (list, read, publish) ·
`gpu` (which devices, how faster-whisper is told) · `media` (decode, cut at silence) ·
`decode` (the model) · `pipeline` (one device's loop: fetch -> publish -> ledger) · `fleet`
(one worker per device) · `local` and `pod` (a local run; a pod's planner and shard) · `cli` ·
`__main__` (the program, started again for huge pages).
"""

__version__ = "0.1.0"
