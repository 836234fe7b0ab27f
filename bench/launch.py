"""Entry point of the runtime processes the bench starts: ``smartflow-runtime``, optionally profiled.

``python -m bench.launch [--profile FILE] -- run --role relay``

- ``--profile FILE``: run under cProfile and write the stats to FILE when the process exits
  (the role drains on SIGTERM and returns, so the stats are complete). A profiled process runs
  on asyncio's own loop (``SMARTFLOW_EVENT_LOOP=asyncio``): uvloop's loop is C code cProfile
  cannot see into, so its idle wait would be booked to whatever Python frame ran last.

The "polling only" latency runs use the runtime's own switch, ``SMARTFLOW_RELAY_LISTEN_NOTIFY=false``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launch")
    parser.add_argument("--profile", metavar="FILE")
    parser.add_argument("runtime_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    runtime_args = list(args.runtime_args)
    if runtime_args and runtime_args[0] == "--":
        runtime_args = runtime_args[1:]
    from smartflow_runtime.cli import main as runtime_main

    if not args.profile:
        return runtime_main(runtime_args)
    os.environ["SMARTFLOW_EVENT_LOOP"] = "asyncio"
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return runtime_main(runtime_args)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    sys.exit(main())
