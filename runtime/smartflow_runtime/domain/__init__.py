"""Smartflow's business side of the runtime: event types, commands the api role calls, read queries."""
