"""Autoscaling of the relay and consumer roles from outbox lag: spec, probes, decision, loop."""
