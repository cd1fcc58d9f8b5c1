"""What a local run (`whisperfleet transcribe`) adds: `inputs` (files, folders, globs and URIs
gathered), `progress` (the live display and summary) and `acceptance` (the GPU acceptance
check, `python -m whisperfleet_runner.local.acceptance`)."""
