"""Memory jobs: the queue the ``memory.extract.requested`` handler fills and the memory worker drains."""
