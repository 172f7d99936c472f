"""``spectra comply``: the compliance suite (compliance/suite) on the hosts of an inventory, with reports.

Hosts, groups and connection data come from the inventory as pyinfra loads it (validated first). They
become an ssh_config file and a context file in a temporary directory; pytest with testinfra (and xdist
with ``-n``) runs every check on every host; waivers are applied to the results; JSON, JUnit XML and HTML
reports are written. Exit codes: 0 compliant; 1 a check failed, a waiver expired, or the run broke;
2 invalid inventory, ``--limit`` or waivers file (nothing was run); 130 interrupted.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from compliance import hosts as comply_hosts
from compliance.checks import BY_ID, check_ids
from compliance.plugin import CONTEXT_ENV, RESULTS_ENV
from compliance.report import write_reports
from compliance.results import ResultSet, apply_waivers, complete
from compliance.waivers import Waiver, WaiverError, check_waivers, load_waivers
from inventories.grouping import zone_group
from spectra_cli.validation import ValidationResult, select_hosts

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "compliance" / "suite"
DEFAULT_WAIVERS = REPO / "compliance" / "waivers.yaml"
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class ComplyOptions:
    limit: Sequence[str] = ()
    exclude: Sequence[str] = ()
    report_dir: str = "compliance-report"
    waivers: str = str(DEFAULT_WAIVERS)
    workers: int = 4
    sudo: bool = False
    today: datetime.date | None = None


def _err(message: str) -> None:
    print(f"spectra comply: {message}", file=sys.stderr)


def zone_patterns(patterns: Sequence[str], inventory: object) -> list[str]:
    """``--limit`` takes groups, host globs and zone names (``lab-a`` means group ``az_lab_a``)."""
    groups = getattr(inventory, "groups", {})
    names = [host.name for host in inventory]  # type: ignore[attr-defined]
    mapped = []
    for pattern in patterns:
        if pattern not in groups and not any(_fnmatch(name, pattern) for name in names):
            zone = zone_group(pattern)
            if zone in groups:
                pattern = zone
        mapped.append(pattern)
    return mapped


def _fnmatch(name: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(name, pattern)


def select(result: ValidationResult, options: ComplyOptions) -> list[str]:
    limit = zone_patterns(options.limit, result.inventory)
    exclude = zone_patterns(options.exclude, result.inventory)
    return select_hosts(result, limit, exclude)


def read_waivers(path: str, result: ValidationResult) -> list[Waiver]:
    waivers = load_waivers(path)
    inventory = result.inventory
    check_waivers(waivers, set(inventory.groups), {host.name for host in inventory})
    return waivers


def pytest_command(targets: Sequence[comply_hosts.ComplyHost], ssh_config: Path, options: ComplyOptions) -> list[str]:
    command = [
        sys.executable, "-m", "pytest", "-p", "compliance.plugin", "-p", "no:cacheprovider", "-o", "addopts=",
        "-q", "--rootdir", str(REPO), str(SUITE), f"--hosts={','.join(host.spec for host in targets)}",
        f"--ssh-config={ssh_config}",
    ]  # fmt: skip
    if options.workers > 0:
        command += ["-n", str(options.workers)]
    if options.sudo:
        command.append("--sudo")
    return command


def close_connections(targets: Sequence[comply_hosts.ComplyHost], ssh_config: Path) -> None:
    for host in targets:
        subprocess.run(
            ["ssh", "-F", str(ssh_config), "-O", "exit", host.name], capture_output=True, timeout=10, check=False
        )


def run_suite(targets: Sequence[comply_hosts.ComplyHost], options: ComplyOptions, log: Path) -> tuple[int, list]:
    """Run pytest; (pytest exit code, raw results)."""
    with tempfile.TemporaryDirectory(prefix="spectra-comply-") as tmp:
        ssh_config = Path(tmp) / "ssh_config"
        ssh_config.write_text(comply_hosts.ssh_config(targets, control_dir=tmp), encoding="utf-8")
        ssh_config.chmod(0o600)
        context_file = Path(tmp) / "context.json"
        context_file.write_text(json.dumps(comply_hosts.context(targets)), encoding="utf-8")
        results_file = Path(tmp) / "results.json"
        env = dict(os.environ, **{CONTEXT_ENV: str(context_file), RESULTS_ENV: str(results_file)})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with log.open("w", encoding="utf-8") as out:
            try:
                process = subprocess.run(
                    pytest_command(targets, ssh_config, options), cwd=REPO, env=env, stdout=out,
                    stderr=subprocess.STDOUT, check=False,
                )  # fmt: skip
            finally:
                close_connections(targets, ssh_config)
        raw = json.loads(results_file.read_text(encoding="utf-8")) if results_file.exists() else []
    return process.returncode, raw


def print_summary(result_set: ResultSet, paths: dict[str, Path]) -> None:
    for host in result_set.hosts:
        counts = result_set.counts(host)
        print(
            f"{host}: {counts['pass']} pass, {counts['fail']} fail, {counts['waived']} waived, "
            f"{counts['not_applicable']} not applicable"
        )
    unreachable = set()
    for host in result_set.hosts:
        reasons = {result.reason for result in result_set.results if result.host == host and result.status == "fail"}
        if len(reasons) == 1 and result_set.counts(host)["fail"] == len(check_ids()):
            unreachable.add(host)
            print(f"FAIL {host}: all {len(check_ids())} checks: {reasons.pop()}")
    for result in result_set.failures:
        if result.host in unreachable:
            continue
        check = BY_ID[result.check]
        print(f"FAIL {result.host} {check.id} {check.title}\n     {result.reason}\n     fix: {check.fix}")
        if result.waiver:
            print(f"     {result.waiver}")
    for problem in result_set.waiver_problems:
        print(f"EXPIRED WAIVER {problem}")
    print(f"reports: {paths['html']} {paths['junit']} {paths['json']}")


def comply(result: ValidationResult, inventory_path: str, options: ComplyOptions) -> int:
    """``result`` is the validated inventory (loaded with no --limit); returns the exit code."""
    names = select(result, options)
    if not result.ok:
        for issue in result.errors:
            print(issue, file=sys.stderr)
        return EXIT_INVALID
    try:
        waivers = read_waivers(options.waivers, result)
        targets = comply_hosts.resolve_hosts(result.inventory, names)
    except (WaiverError, comply_hosts.HostError) as exc:
        _err(f"error: {exc}")
        _err("nothing was run")
        return EXIT_INVALID

    report_dir = Path(options.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    log = report_dir / "pytest.log"
    today = options.today or datetime.date.today()
    _err(f"{len(check_ids())} checks on {len(targets)} host(s): {', '.join(host.name for host in targets)}")
    try:
        code, raw = run_suite(targets, options, log)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    if code == 2:
        _err("interrupted")
        return EXIT_INTERRUPTED
    broken = code not in (0, 1)
    if broken:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        _err(f"pytest exited {code} (internal or usage error); its output ends:\n{tail}")

    host_groups = {host.name: host.groups for host in targets}
    results, problems = apply_waivers(complete(raw, list(host_groups), check_ids()), waivers, host_groups, today)
    result_set = ResultSet(
        inventory=inventory_path, hosts=host_groups, results=results, waiver_problems=problems,
        generated_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    paths = write_reports(result_set, report_dir)
    print_summary(result_set, paths)
    if result_set.ok and not broken:
        _err(f"COMPLIANT: {len(targets)} host(s), no failing check")
        return EXIT_OK
    _err(
        f"NOT COMPLIANT: {len(result_set.failures)} failing check(s)"
        + (f", {len(problems)} expired waiver(s)" if problems else "")
        + (", the suite did not run cleanly" if broken else "")
    )
    return EXIT_FAILED
