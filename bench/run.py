"""``python -m bench.run [--only NAME ...] [--smoke] [--no-report]``: run the benchmark sections.

Sections run one after another (they share a 2-core machine with the servers, so running them
together would measure contention, not the product). Each writes ``bench/results/<name>.json``;
at the end the report is regenerated from every result file present.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import servers as servers_module
from .context import Context
from .machine import load_average
from .results import BENCH_DIR, RESULTS_DIR

# The operator section last: its 1,000 runtimes are deleted when it ends, and the apiserver and the
# kube-controller-manager are busy with that for a while.
SECTIONS = ("relay", "consumer", "latency", "scaling", "pods_ready", "profile", "operator")
NEEDS_KUBE = frozenset({"scaling", "pods_ready", "operator"})
# Sections whose figures include the broker's CPU or latency: the broker is warmed before them.
USES_KAFKA = frozenset({"relay", "consumer", "latency", "scaling", "profile"})


async def _run(names: Sequence[str], smoke: bool, results_dir: Path, stack_file: Path | None) -> int:
    servers = servers_module.acquire(need_kube=any(n in NEEDS_KUBE for n in names), stack_file=stack_file)
    failures = 0
    try:
        if any(n in NEEDS_KUBE for n in names):
            servers.ensure_kube()
        ctx = Context(
            servers=servers, smoke=smoke, versions=await servers.versions(), results_dir=results_dir
        )
        for name in names:
            module = importlib.import_module(f"bench.sections.{name}")
            ctx.say(f"section {name} ({ctx.mode}) starting; load average {load_average()}")
            started = time.monotonic()
            try:
                result = await module.run(ctx)
            except Exception:
                failures += 1
                ctx.say(f"section {name} FAILED:\n{traceback.format_exc()}")
                continue
            path = result.write(ctx.results_dir)
            ctx.say(f"section {name} done in {time.monotonic() - started:.1f}s -> {path}")
    finally:
        servers.close()
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only NAME (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, not speed")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <name>.json files go")
    parser.add_argument(
        "--stack-file",
        type=Path,
        help="JSON describing servers to use (default: the running stack, else start one)",
    )
    parser.add_argument("--report-dir", type=Path, default=BENCH_DIR, help="where REPORT.md and plots/ go")
    args = parser.parse_args(argv)
    names = [s for s in SECTIONS if not args.only or s in args.only]
    if USES_KAFKA & set(names):
        names.insert(0, "warmup")  # bench/sections/warmup.py: why
    started = time.monotonic()
    failures = asyncio.run(_run(names, args.smoke, args.results_dir, args.stack_file))
    if not args.no_report:
        from .report import write_report

        print(f"[bench] report: {write_report(args.results_dir, args.report_dir)}", flush=True)
    print(f"[bench] {len(names) - failures}/{len(names)} sections ok in {time.monotonic() - started:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
