"""`smartflow-operator`: run the operator, or generate the CRD from the spec models.

smartflow-operator run [--namespace NS]... | --all-namespaces  [--no-leader-elect] [--lease-...]
smartflow-operator crds --output crds
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .leadership import (
    DEFAULT_LEASE_DURATION_SECONDS,
    DEFAULT_LEASE_NAME,
    DEFAULT_RENEW_DEADLINE_SECONDS,
    DEFAULT_RETRY_PERIOD_SECONDS,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartflow-operator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="reconcile SmartflowRuntime resources")
    scope = run.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--namespace", "-n", action="append", dest="namespaces", metavar="NS", help="watch NS (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    run.add_argument("--health-address", default="0.0.0.0", help="bind address of liveness and metrics")
    run.add_argument("--health-port", type=int, default=8081, help="liveness endpoint port (/healthz)")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (/metrics)")
    run.add_argument("--resync-seconds", type=float, default=60.0, help="periodic reconcile interval")
    run.add_argument(
        "--config-check-seconds",
        type=float,
        default=5.0,
        help="how often each runtime's referenced Secrets/ConfigMaps are checked for changes (0: off)",
    )
    election = run.add_argument_group(
        "leader election", "a coordination.k8s.io/v1 Lease: only the replica holding it reconciles and writes"
    )
    election.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take part in leader election (default: on; --no-leader-elect for a single local process)",
    )
    election.add_argument("--lease-name", default=DEFAULT_LEASE_NAME, help="the Lease's name")
    election.add_argument(
        "--lease-namespace",
        help="the Lease's namespace (default: $POD_NAMESPACE, else the first --namespace)",
    )
    election.add_argument(
        "--lease-duration-seconds",
        type=float,
        default=DEFAULT_LEASE_DURATION_SECONDS,
        help="how long a candidate waits after the leader's last renewal before taking over",
    )
    election.add_argument(
        "--lease-renew-deadline-seconds",
        type=float,
        default=DEFAULT_RENEW_DEADLINE_SECONDS,
        help="the leader stops writing when it could not renew for this long (< lease duration)",
    )
    election.add_argument(
        "--lease-retry-period-seconds",
        type=float,
        default=DEFAULT_RETRY_PERIOD_SECONDS,
        help="how often the leader renews and a candidate retries",
    )
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    run.add_argument("--log-format", choices=("json", "text"), default="json")

    crds = commands.add_parser("crds", help="write the CRD YAML generated from the spec models")
    crds.add_argument("--output", type=Path, default=Path("crds"), help="directory to write into")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crds":
        from .crd import write_crds

        for path in write_crds(args.output):
            print(f"wrote {path}")
        return 0
    from .runner import OperatorConfig, run_operator

    config = OperatorConfig(
        namespaces=tuple(args.namespaces or ()),
        all_namespaces=bool(args.all_namespaces),
        kubeconfig=args.kubeconfig,
        health_address=args.health_address,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        resync_seconds=args.resync_seconds,
        config_check_seconds=args.config_check_seconds,
        log_level=args.log_level.upper(),
        log_format=args.log_format,
        leader_election=args.leader_elect,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace,
        lease_duration_seconds=args.lease_duration_seconds,
        lease_renew_deadline_seconds=args.lease_renew_deadline_seconds,
        lease_retry_period_seconds=args.lease_retry_period_seconds,
    )
    try:
        config.lease_settings()
    except ValueError as error:
        print(f"smartflow-operator: {error}", file=sys.stderr)
        return 2
    return run_operator(config)


if __name__ == "__main__":
    sys.exit(main())
