"""``smartflow-devstack demo``: the command line of the demo (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .scenario import DemoSettings, run_demo


def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole product on this machine: real node, operator pod, burst, scale up/down",
        description=(
            "Starts (or reuses) the local stack and its real node, builds and imports the images, "
            "installs the CRD and the operator (Helm chart, from its image), applies "
            "examples/runtime-split.yaml in a namespace enforcing restricted, sends a burst of chat "
            "messages through the api Service and shows the relay and consumer pods scaling from outbox "
            "lag until the lag is drained and they scale down."
        ),
    )
    defaults = DemoSettings()
    demo.add_argument(
        "--messages", type=int, default=defaults.messages, help="chat messages in the burst (3 events each)"
    )
    demo.add_argument("--concurrency", type=int, default=defaults.concurrency, help="parallel HTTP clients")
    demo.add_argument(
        "--scale-down-window",
        type=int,
        default=defaults.scale_down_window,
        help="scale-down stabilization (s)",
    )
    demo.add_argument("--poll-interval", type=int, default=defaults.poll_interval, help="autoscaler poll (s)")
    demo.add_argument("--timeout", type=float, default=defaults.timeout, help="give up watching after (s)")
    demo.add_argument("--keep-up", action="store_true", help="leave the local stack running afterwards")


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings(
        messages=args.messages,
        concurrency=args.concurrency,
        scale_down_window=args.scale_down_window,
        poll_interval=args.poll_interval,
        timeout=args.timeout,
        keep_up=args.keep_up,
        out=lambda line: print(line, flush=True),
    )
    summary = run_demo(settings)
    print(summary.render(), flush=True)
    ok = (
        summary.exactly_once
        and summary.relay_peak > summary.relay_start
        and summary.consumer_peak > summary.consumer_start
        and summary.scale_down_seconds is not None
        and not summary.pods_left
    )
    if not ok:
        print("demo: the loop did not complete as expected (see the summary above)", file=sys.stderr)
    return 0 if ok else 1
