"""Pure builders of what the operator creates, each a function from the parsed spec (and the
operator's settings) to plain dicts: `jobs` (the planner Job, the worker Job and the drift to
patch), `pods` (their pod templates: security, storage, models), `gpu` (how pods ask for GPUs:
node affinity on GPU Feature Discovery labels, or a DRA ResourceClaimTemplate), `workorder`
(the work order a pod reads from its environment)."""
