"""``smartflow-devstack``: start and stop the local stack (what ``make up``/``make down`` call)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import stack
from .demo import cli as demo_cli
from .errors import StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="smartflow-devstack",
        description=(
            "Local PostgreSQL, Kafka, a Kubernetes control plane and one real node (development only)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start every server (or reuse a running stack) and write .local/env")
    up.add_argument("--state", type=Path, default=stack.DEFAULT_STATE, help="state and log folder")
    down = sub.add_parser("down", help="stop the servers started by `up`")
    down.add_argument("--state", type=Path, default=stack.DEFAULT_STATE)
    sub.add_parser(
        "build",
        help="build/fetch the servers into the cache (kube, etcd, helm, kafka, postgres, node packages)",
    )
    sub.add_parser("images", help="build the runtime and operator images from their Dockerfiles (buildah)")
    with_stack = sub.add_parser(
        "with-stack",
        help="run a command (e.g. pytest) against the running stack, or one started and stopped for it",
    )
    with_stack.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    status = sub.add_parser("status", help="print the running stack's connection settings")
    status.add_argument("--state", type=Path, default=stack.DEFAULT_STATE)
    demo_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            from .build import build_all

            build_all()
        elif args.command == "images":
            from . import images

            for image in images.build_all():
                print(f"{image.name}: {image.reference}  ({image.archive})")
        elif args.command == "up":
            running = stack.up(args.state)
            for key, value in running.env().items():
                print(f"{key}={value}")
            print(f"logs: {Path(running.state) / 'logs'}\nsettings: {stack.ENV_FILE} (source it)")
        elif args.command == "with-stack":
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not command:
                parser.error("with-stack needs a command after --")
            return stack.run_with_stack(command)
        elif args.command == "demo":
            return demo_cli.run(args)
        elif args.command == "down":
            stack.down(args.state)
            print("stack stopped")
        else:
            found = stack.load(args.state)
            if found is None:
                print("no running stack")
                return 1
            for key, value in found.env().items():
                print(f"{key}={value}")
    except StackError as error:
        print(f"smartflow-devstack: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
