"""The fleet of devices: one worker per GPU (or the CPU) over one shared queue of files.

Entry points: `scheduler.run` (longest files first, fair shares, Ctrl-C, files handed back by a
worker that stops) and `scheduler.worker_specs` (one worker bound to each chosen GPU);
`worker` (a spawned process per GPU), `inprocess` (one device: a thread of this process, its
model loading early), `accounting` (the run's books), `metrics` (Prometheus, while it works).

Submodules are imported by name, never from here: the parent of spawned workers must never
import CTranslate2.
"""
