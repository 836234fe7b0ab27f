"""Local development stack: real PostgreSQL, Kafka and Kubernetes control plane on loopback.

Used by ``make up``/``make down``, the pytest fixtures and ``make demo``. Nothing here is
shipped in the runtime image; it exists so that every I/O test runs against real servers
on a machine without Docker.
"""
