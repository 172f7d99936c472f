"""`python -m lab up|down|status|ssh|stop|start|restart`: a lab of booted Debian nodes on this machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.config import LabConfig, LabError, default_nodes, load_config_file
from lab.lab import Lab


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="build (once) and boot the nodes; safe to repeat")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3); a larger number adds nodes")
    up.add_argument(
        "--suite",
        help="Debian release for every node: bookworm or trixie (default: node3 trixie, the rest bookworm)",
    )
    up.add_argument(
        "--node-suite",
        action="append",
        default=[],
        metavar="NODE=SUITE",
        help="Debian release for one node, e.g. node3=trixie (repeatable)",
    )
    up.add_argument("--config", type=Path, help="YAML file listing nodes (name, roles, zone, suite)")
    up.add_argument("--subnet", default=None, help="lab subnet inside 198.18.0.0/15 (default 198.18.0.0/24)")
    up.add_argument("--bridge", default=None, help="name of the lab bridge (default splab0)")

    commands.add_parser("down", help="remove every node and everything the lab made on this host")
    commands.add_parser("status", help="nodes, addresses and state")
    for name, text in (
        ("stop", "power off one node"),
        ("start", "boot one node"),
        ("restart", "power-cycle one node"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("node")
        if name != "start":
            sub.add_argument("--hard", action="store_true", help="cut the power instead of shutting down")
    ssh = commands.add_parser("ssh", help="open a root shell on a node, or run a command there")
    ssh.add_argument("node")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = LabConfig(nodes=[])
    lab = Lab(config)
    try:
        if args.command == "up":
            nodes = load_config_file(args.config) if args.config else default_nodes(args.nodes, args.suite)
            overrides = {}
            for item in args.node_suite:
                name, sep, suite = item.partition("=")
                if not sep:
                    raise LabError(f"--node-suite expects NODE=SUITE, got {item!r}")
                overrides[name] = suite
            unknown = set(overrides) - {n.name for n in nodes}
            if unknown:
                raise LabError(f"--node-suite names unknown node(s): {', '.join(sorted(unknown))}")
            for node in nodes:
                node.suite = overrides.get(node.name, node.suite)
            config.nodes = nodes
            if args.subnet:
                config.subnet = args.subnet
            if args.bridge:
                config.bridge = args.bridge
            lab.up(nodes)
            _print_status(lab)
            print(f"\ninventory: inventories/lab.py (state in {lab.inventory_path})")
            print(f"mirror:    {config.mirror_url}/   registry: {config.gateway}:{config.registry_port}")
            print(f"ssh:       ssh -F {config.state_dir}/ssh/config node1   (or: python -m lab ssh node1)")
            print("next:      .venv/bin/spectra deploy inventories/lab.py deploys/site.py")
        elif args.command == "down":
            lab.down()
        elif args.command == "status":
            _print_status(lab)
        elif args.command == "stop":
            lab.stop(args.node, hard=args.hard)
        elif args.command == "start":
            lab.start(args.node)
        elif args.command == "restart":
            lab.restart(args.node, hard=args.hard)
        elif args.command == "ssh":
            return lab.ssh(args.node, args.remote_command)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130
    return 0


def _print_status(lab: Lab) -> None:
    rows = lab.status()
    print(f"{'NODE':<10} {'ADDRESS':<15} {'ROLES':<22} {'ZONE':<7} {'DEBIAN':<9} STATE")
    for row in rows:
        print(
            f"{row['name']:<10} {row['address']:<15} {','.join(row['roles']):<22} {row['zone']:<7} "
            f"{row['suite']:<9} {row['state']}"
        )
