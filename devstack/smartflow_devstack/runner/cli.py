"""``smartflow-devstack runner``: run the local runner in the foreground until SIGTERM/SIGINT.

Registered on the ``smartflow-devstack`` parser by :func:`add_parser`; :func:`run` is its command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .. import stack
from ..errors import StackError
from ..versions import REPO_ROOT
from .kubeapi import KubeApi
from .loop import LocalRunner, RunnerSettings, local_base_env
from .spec import MANAGED_BY_SELECTOR, ImageMap

DEFAULT_STATE = REPO_ROOT / ".local" / "runner"


def default_runtime_command() -> list[str]:
    """The image's ``ENTRYPOINT`` locally: ``smartflow-runtime`` of the virtualenv running us."""
    beside = Path(sys.executable).parent / "smartflow-runtime"
    return [str(beside if beside.exists() else REPO_ROOT / ".venv" / "bin" / "smartflow-runtime")]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "runner",
        help="DEV/TEST ONLY: run the operator's Deployments as local processes (no kubelet here)",
        description=(
            "The local runner, a development and test tool: watches Deployments labelled "
            f"{MANAGED_BY_SELECTOR} and keeps spec.replicas local processes running for each, "
            "started the way the container would start; writes the Deployments' status and "
            "<state>/endpoints.json. Stops every process it started on SIGTERM/SIGINT."
        ),
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, else the running local stack's admin one")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="logs/ and endpoints.json go here")
    parser.add_argument(
        "--image-map",
        action="append",
        default=[],
        metavar="IMAGE=COMMAND",
        help="run COMMAND for IMAGE (IMAGE with or without tag, or '*'); default: * = smartflow-runtime",
    )
    parser.add_argument("--selector", default=MANAGED_BY_SELECTOR, help="label selector of the Deployments")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes (and probes)")
    parser.add_argument("--backoff-max", type=float, default=30.0, help="longest crash-restart delay")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT, help="working directory of the processes")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        image_map = ImageMap.parse(args.image_map, default=default_runtime_command())
    except ValueError as error:
        raise StackError(str(error)) from error
    settings = RunnerSettings(
        state=args.state.resolve(),
        image_map=image_map,
        namespaces=tuple(args.namespace),
        selector=args.selector,
        interval=args.interval,
        backoff_max=args.backoff_max,
        workdir=args.workdir.resolve(),
        base_env=local_base_env(os.environ),
    )
    asyncio.run(serve(settings, kubeconfig=_kubeconfig(args.kubeconfig)))
    return 0


async def serve(settings: RunnerSettings, *, kubeconfig: str | None) -> None:
    """Run until SIGTERM or SIGINT, then stop every replica before returning."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeApi.from_kubeconfig(kubeconfig) as api, LocalRunner(api=api, settings=settings) as runner:
        await runner.run(stop)


def _kubeconfig(given: str | None) -> str | None:
    if given or os.environ.get("KUBECONFIG"):
        return given or os.environ["KUBECONFIG"]
    running = stack.load()
    if running is not None and running.kube is not None:
        return running.kube.kubeconfig
    return None
