"""``make demo``: the whole product on one machine (development tool).

Local stack -> CRD -> operator -> local runner -> ``examples/runtime-split.yaml`` -> a burst of
business requests to the api role -> watch the relay and the consumer scale up, drain the lag and
scale back down -> summary -> clean shutdown. The e2e test runs the same scenario with small
sizes (:func:`.scenario.run_demo`).
"""

from .scenario import DemoSettings, run_demo
from .view import DemoSummary

__all__ = ["DemoSettings", "DemoSummary", "run_demo"]
