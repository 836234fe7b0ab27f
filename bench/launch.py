"""Entry point of the runtime processes the bench starts: ``smartflow-runtime`` plus two bench-only switches.

``python -m bench.launch [--profile FILE] [--relay-without-notify] -- run --role relay``

- ``--profile FILE``: run under cProfile and write the stats to FILE when the process exits
  (the role drains on SIGTERM and returns, so the stats are complete).
- ``--relay-without-notify``: the runtime has no setting to turn off LISTEN/NOTIFY wake-ups, so
  for the "polling only" latency runs this launcher makes the relay ignore row notifications
  (``Relay._on_rows`` becomes a no-op); it then wakes only on its fallback poll. Shard-release
  notifications still work. Runtime code is not modified; the patch lives only in this process.
"""

from __future__ import annotations

import argparse
import cProfile
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launch")
    parser.add_argument("--profile", metavar="FILE")
    parser.add_argument("--relay-without-notify", action="store_true")
    parser.add_argument("runtime_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    runtime_args = list(args.runtime_args)
    if runtime_args and runtime_args[0] == "--":
        runtime_args = runtime_args[1:]
    if args.relay_without_notify:
        from smartflow_runtime.outbox.relay import Relay

        def ignore_row_notifications(self: Relay, *_: object) -> None:
            return None

        Relay._on_rows = ignore_row_notifications  # type: ignore[method-assign]

    from smartflow_runtime.cli import main as runtime_main

    if not args.profile:
        return runtime_main(runtime_args)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return runtime_main(runtime_args)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    sys.exit(main())
