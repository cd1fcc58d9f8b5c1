"""What a Kubernetes pod runs: the planner (`planner.plan`: list, balance, write the manifest,
with its working set in `partitions`) and a shard (`shard.run_shard`: its manifest lines on
the GPUs the pod was allocated). `manifest` is the format both share."""
