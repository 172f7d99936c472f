"""``spectra``: validate inventories, then run pyinfra safely, whole or zone by zone.

    spectra validate INVENTORY [--limit ...] [--data k=v]
    spectra zones    INVENTORY
    spectra deploy   INVENTORY DEPLOY.py... [--limit ...] [--dry] [-v] [-- more pyinfra options]
    spectra rollout  INVENTORY DEPLOY.py... --by-zone [--zones a,b] [--pause S] [-- more pyinfra options]
    spectra comply   INVENTORY [--limit GROUP|ZONE|HOST] [--report-dir DIR] [--waivers FILE] [-n N]
    spectra drift    INVENTORY DEPLOY.py... [--limit ...]
    spectra render   INVENTORY --out DIR [--limit ...]
    spectra seal     INVENTORY --namespace NS --name NAME --from-literal KEY=VALUE... > secrets/NAME.yaml
    spectra checksums kubernetes --version vX.Y.Z [--from-url BASE] [--arch amd64,arm64] [--table PATH]
                                 [--dry-run]

comply: 0 compliant; 1 a check failed or a waiver expired; 2 invalid input (nothing run).
drift: 0 nothing would change; 3 something would change (listed); 1 the dry run failed.
seal: 0 sealed (printed); 1 kubeseal failed; 2 invalid arguments, no kubeseal (spectra_cli/seal.py).
render: 0 written (spectra_cli/render.py says what); 2 invalid inventory, a setting the manifests cannot take,
or an output directory it will not write into (nothing written).
checksums: 0 the table holds the sums; 1 the source failed or disagrees with the table (nothing written);
2 invalid arguments or table (see spectra_cli/checksums.py).

Exit codes: 0 success; 1 the pyinfra run failed (any failed host); 2 invalid inventory, group_data or
arguments, zero hosts; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from spectra import pyinfra_compat
from spectra_cli import checksums, seal
from spectra_cli.comply import DEFAULT_WAIVERS, ComplyOptions, comply
from spectra_cli.drift import report as drift_report
from spectra_cli.rollout import RolloutError, plan, rollout
from spectra_cli.runner import PyinfraRun, run_pyinfra
from spectra_cli.schema import DEFAULT_COMPONENTS_PACKAGE
from spectra_cli.validation import ValidationResult, validate

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

# pyinfra options that spectra handles itself (validated) or must not be changed.
OWN_OPTIONS = {"--limit", "--exclude", "--data", "--group-data", "--chdir", "-y", "--yes"}


def _parse_data(items: Sequence[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(_usage_error(f"--data expects key=value, got {item!r}"))
        data[key] = pyinfra_compat.parse_cli_value(value)
    return data


def _usage_error(message: str) -> int:
    print(f"spectra: error: {message}", file=sys.stderr)
    return EXIT_INVALID


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/aws_us_east_1.py")
    parser.add_argument("--limit", action="append", default=[], help="group or host glob (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], help="group or host glob (repeatable)")
    parser.add_argument("--data", action="append", default=[], help="override data key=value (repeatable)")
    parser.add_argument("--group-data", action="append", default=[], help="extra group_data directory")
    parser.add_argument(
        "--components",
        default=os.environ.get("SPECTRA_COMPONENTS", DEFAULT_COMPONENTS_PACKAGE),
        help="package whose modules define component settings (default: %(default)s)",
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("operations", nargs="+", help="deploy file(s), e.g. deploy.py")
    parser.add_argument("--dry", action="store_true", help="pyinfra --dry")
    parser.add_argument("--diff", action="store_true", help="pyinfra --diff")
    parser.add_argument("-v", dest="verbose", action="count", default=0, help="pyinfra -v (repeatable)")
    parser.add_argument("--serial", action="store_true", help="pyinfra --serial")
    parser.add_argument("--no-wait", action="store_true", help="pyinfra --no-wait (failures still count)")
    parser.add_argument("--parallel", type=int, help="pyinfra --parallel N")
    parser.add_argument("--fail-percent", type=int, help="pyinfra --fail-percent N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectra",
        description="Validate Spectra inventories and run pyinfra deploys, whole or zone by zone.",
        epilog="Options after `--` go to pyinfra unchanged.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    validate_parser = sub.add_parser("validate", help="check inventory and group_data, connect to nothing")
    _common(validate_parser)
    validate_parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")

    zones_parser = sub.add_parser("zones", help="list zone groups and their hosts")
    _common(zones_parser)

    deploy_parser = sub.add_parser("deploy", help="validate, then pyinfra -y on the selected hosts")
    _common(deploy_parser)
    _run_options(deploy_parser)

    rollout_parser = sub.add_parser("rollout", help="validate, then deploy one zone at a time")
    _common(rollout_parser)
    _run_options(rollout_parser)
    rollout_parser.add_argument("--by-zone", action="store_true", required=True, help="one az_* group at a time")
    rollout_parser.add_argument(
        "--zones", action="append", default=[], help="zone order, comma separated (default: sorted)"
    )
    rollout_parser.add_argument("--pause", type=float, default=0.0, help="seconds to wait between zones")
    rollout_parser.add_argument("--skip-unzoned", action="store_true", help="leave selected hosts without a zone out")

    comply_parser = sub.add_parser("comply", help="run the compliance checks on the selected hosts, write reports")
    _common(comply_parser)
    comply_parser.add_argument("--report-dir", default="compliance-report", help="where reports go (%(default)s)")
    comply_parser.add_argument("--waivers", default=str(DEFAULT_WAIVERS), help="waivers file (%(default)s)")
    comply_parser.add_argument("-n", dest="workers", type=int, default=4, help="parallel workers (0: none)")
    comply_parser.add_argument("--sudo", action="store_true", help="run the checks' commands with sudo")
    comply_parser.add_argument(
        "--connect-timeout", type=int, default=10, help="seconds to wait for a host's ssh (%(default)s)"
    )

    drift_parser = sub.add_parser("drift", help="dry-run a deploy; non-zero exit when anything would change")
    _common(drift_parser)
    drift_parser.add_argument("operations", nargs="+", help="deploy file(s), e.g. deploys/site.py")
    drift_parser.add_argument("-v", dest="verbose", action="count", default=0, help="pyinfra -v (repeatable)")

    render_parser = sub.add_parser("render", help="write the addon manifests and cluster files to a directory")
    _common(render_parser)
    render_parser.add_argument("--out", required=True, help="a new or empty directory (or one render wrote)")

    seal_parser = sub.add_parser("seal", help="seal a Secret for the cluster's key (kubeseal, offline)")
    _common(seal_parser)
    seal.add_arguments(seal_parser)

    checksums.add_parser(sub)
    return parser


def _validate(args: argparse.Namespace, quiet: bool = False) -> ValidationResult:
    result = validate(
        args.inventory,
        override_data=_parse_data(args.data),
        group_data=args.group_data,
        limit=args.limit,
        exclude=args.exclude,
        components_package=args.components or None,
    )
    for issue in result.issues:
        if issue.level == "error" or not quiet:
            print(issue, file=sys.stderr)
    if result.ok:
        total = len(result.inventory)
        zones = ", ".join(result.zones()) or "none"
        selected = len(result.selected)
        print(
            f"spectra: {args.inventory}: OK, {selected} of {total} hosts selected; zones: {zones}",
            file=sys.stderr,
        )
    else:
        print(f"spectra: {args.inventory}: {len(result.errors)} error(s), nothing was run", file=sys.stderr)
    return result


def _base_run(args: argparse.Namespace, extra: Sequence[str]) -> PyinfraRun:
    flags: list[str] = []
    for name in ("dry", "diff", "serial", "no_wait"):
        if getattr(args, name):
            flags.append("--" + name.replace("_", "-"))
    flags += ["-v"] * args.verbose
    if args.parallel is not None:
        flags += ["--parallel", str(args.parallel)]
    if args.fail_percent is not None:
        flags += ["--fail-percent", str(args.fail_percent)]
    return PyinfraRun(
        inventory=args.inventory,
        operations=args.operations,
        limit=args.limit,
        exclude=args.exclude,
        data=args.data,
        group_data=args.group_data,
        flags=flags,
        extra=extra,
    )


def _render(args: argparse.Namespace, result: ValidationResult) -> int:
    from pathlib import Path

    from spectra_cli import render

    try:
        files = render.everything(result.inventory, hosts=result.selected)
        written = render.write(Path(args.out), files)
    except (render.RenderError, OSError) as error:
        print(f"spectra: render: {error}; nothing was written", file=sys.stderr)
        return EXIT_INVALID
    print(f"spectra: render: {len(written)} files in {args.out}", file=sys.stderr)
    for path in written:
        print(path)
    return EXIT_OK


def _check_extra(extra: Sequence[str]) -> str | None:
    for item in extra:
        option = item.split("=", 1)[0]
        if option in OWN_OPTIONS:
            return f"pass {option} to spectra before `--`, not to pyinfra (spectra validates it)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, extra = argv[:index], argv[index + 1 :]
    args = build_parser().parse_args(argv)

    if extra and args.command not in ("deploy", "rollout"):
        return _usage_error(f"`spectra {args.command}` takes no pyinfra options")
    problem = _check_extra(extra)
    if problem:
        return _usage_error(problem)
    if args.command == "checksums":  # loads no inventory: no pyinfra, no gevent
        return checksums.run(args)

    # gevent-patch the stdlib before inventory files import boto3 & co., as the pyinfra CLI does
    pyinfra_compat.patch_stdlib_for_gevent()

    if args.command == "comply":
        # Hosts are selected after loading (zone names are accepted in --limit): load everything once.
        options = ComplyOptions(
            limit=args.limit, exclude=args.exclude, report_dir=args.report_dir, waivers=args.waivers,
            workers=args.workers, sudo=args.sudo, connect_timeout=args.connect_timeout,
        )  # fmt: skip
        args.limit, args.exclude = [], []
        result = _validate(args, quiet=True)
        if not result.ok:
            return EXIT_INVALID
        return comply(result, args.inventory, options)

    result = _validate(args, quiet=getattr(args, "quiet", False))
    if not result.ok:
        return EXIT_INVALID

    if args.command == "drift":
        run = PyinfraRun(
            inventory=args.inventory, operations=args.operations, limit=args.limit, exclude=args.exclude,
            data=args.data, group_data=args.group_data, flags=["--dry", *["-v"] * args.verbose], yes=False,
        )  # fmt: skip
        outcome = run_pyinfra(run)
        if outcome.exit_code != 0:
            reason = f": {outcome.reason}" if outcome.reason else ""
            print(f"spectra: drift: the dry run failed (exit {outcome.exit_code}){reason}", file=sys.stderr)
            return outcome.exit_code
        return drift_report(outcome.summary)

    if args.command == "validate":
        return EXIT_OK
    if args.command == "render":
        return _render(args, result)
    if args.command == "seal":
        return seal.run(args, result.inventory)
    if args.command == "zones":
        for zone, hosts in result.zones().items():
            print(f"{zone}\t{len(hosts)}\t{' '.join(hosts)}")
        return EXIT_OK

    base = _base_run(args, extra)
    if args.command == "deploy":
        outcome = run_pyinfra(base)
        if outcome.exit_code != 0:
            reason = f": {outcome.reason}" if outcome.reason else ""
            print(f"spectra: deploy failed (exit {outcome.exit_code}){reason}", file=sys.stderr)
        return outcome.exit_code

    zones = [zone for item in args.zones for zone in item.split(",") if zone.strip()]
    try:
        steps = plan(result, [zone.strip() for zone in zones], args.limit, args.skip_unzoned)
    except RolloutError as exc:
        return _usage_error(str(exc))
    report = rollout(steps, base, run_pyinfra, pause=args.pause)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
