"""GPUs and CPUs: what this process may use, and how faster-whisper is told.

Entry points: `nvml` (the ONLY module that talks to NVML), `devices` (the GPUs a pod was
allocated -> `device_index`, compute type, the model's placement), `choice` (the local CLI's
`--gpus` and `--min-free-memory`), `cpus` (CPUs under the affinity mask and cgroup quota).
"""
