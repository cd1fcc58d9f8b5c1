"""whisperfleet operator: kopf handlers, pure manifest builders, status aggregation.

`kopf run -m whisperfleet_operator` imports this package, which registers the handlers.
"""

from whisperfleet_operator import handlers as handlers
