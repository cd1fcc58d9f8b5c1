"""whisperfleet job runner: devices, engine, formats, storage, ledger, shard runner, CLI."""

__version__ = "0.1.0"
