"""Pure builders of the objects a SmartflowRuntime owns: plain dicts from the spec, no cluster access."""
