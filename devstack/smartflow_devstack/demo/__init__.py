"""``make demo``: the whole product on one machine (development tool).

Local stack and node -> images -> CRD -> operator (Helm, from its image) ->
``examples/runtime-split.yaml`` as pods -> a burst of business requests through the api Service ->
watch the relay and consumer pods scale up, drain the lag and scale back down -> summary -> clean
shutdown. The e2e test runs the same scenario with small
sizes (:func:`.scenario.run_demo`).
"""

from .scenario import DemoSettings, run_demo
from .view import DemoSummary

__all__ = ["DemoSettings", "DemoSummary", "run_demo"]
