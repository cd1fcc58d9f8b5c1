"""whisperfleet operator: kopf handlers, pure manifest builders, status aggregation."""
