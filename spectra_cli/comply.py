"""``spectra comply``: the compliance suite (compliance/suite) on the hosts of an inventory, with reports.

Hosts, groups and connection data come from the inventory as pyinfra loads it (validated first). They
become an ssh_config file and a context file in a temporary directory; pytest with testinfra (and xdist
with ``-n``) runs every check on every host; waivers are applied to the results; JSON, JUnit XML and HTML
reports are written. Every host is logged in to once first (``ConnectTimeout`` bound): a host that cannot be
reached or logged in to (changed host key, timeout, authentication) is one connection error with its cause,
not a failure of each check, and the other hosts are checked as usual. Exit codes: 0 compliant; 1 a check
failed, a host could not be reached, a waiver expired, or the run broke;
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
    connect_timeout: int = 10  # seconds ssh waits for a host before it is reported as a connection error


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


# What ssh says (stderr, exit 255) -> the cause reported; the first match wins.
_CAUSES = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host key changed (known_hosts has another key for this host)"),
    (
        "has changed and you have requested strict checking",
        "host key changed (known_hosts has another key for this host)",
    ),
    ("host key is known for", "host key unknown (not in known_hosts)"),
    ("Host key verification failed", "host key not verified (unknown, or changed)"),
    ("timed out", "timed out after {timeout} s (no answer, packets dropped or host down)"),
    ("Permission denied", "authentication failed"),
    ("Too many authentication failures", "authentication failed"),
    ("Connection refused", "connection refused (nothing listens on the ssh port)"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("Could not resolve hostname", "host name does not resolve"),
    ("Connection closed", "connection closed by the host"),
    ("Connection reset", "connection reset by the host"),
)


def connection_cause(stderr: str, timeout: int) -> str:
    """The cause of a failed ssh connection, from what ssh printed: one short phrase, then ssh's own words."""
    text = " ".join(stderr.split())
    lines = [" ".join(line.split()) for line in stderr.splitlines() if line.strip() and not line.startswith("@")]
    detail = " ".join(lines[-2:])[-300:] if lines else "ssh exited 255 and printed nothing"
    for needle, cause in _CAUSES:
        if needle.lower() in text.lower():
            return f"{cause.format(timeout=timeout)}: {detail}"
    return f"cannot connect: {detail}"


def preflight_command(host: str, ssh_config: Path, timeout: int) -> list[str]:
    """One ssh login that runs ``true`` and leaves a master connection the suite's checks then reuse."""
    return [
        "ssh", "-F", str(ssh_config), "-o", f"ConnectTimeout={timeout}", "-o", "ConnectionAttempts=1",
        "-o", "ControlMaster=auto", "-o", "ControlPersist=120s", host, "true",
    ]  # fmt: skip


def connection_errors(targets: Sequence[comply_hosts.ComplyHost], ssh_config: Path, timeout: int) -> dict[str, str]:
    """Hosts that ssh cannot reach or log in to, each with its cause (all hosts tried at once)."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(host: comply_hosts.ComplyHost) -> tuple[str, str | None]:
        try:
            done = subprocess.run(
                preflight_command(host.name, ssh_config, timeout), capture_output=True, text=True,
                stdin=subprocess.DEVNULL, timeout=timeout + 20, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return host.name, f"timed out after {timeout + 20} s (ssh did not give up by itself)"
        if done.returncode == 255:
            return host.name, connection_cause(done.stderr, timeout)
        return host.name, None  # 0, or a login whose `true` failed: the suite will tell

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        found = dict(pool.map(attempt, targets))
    return {name: cause for name, cause in found.items() if cause is not None}


def run_suite(
    targets: Sequence[comply_hosts.ComplyHost], options: ComplyOptions, log: Path
) -> tuple[int, list, dict[str, str]]:
    """Connect to every host once, then run pytest on those that answered; (pytest exit code, raw results,
    connection errors: host -> cause). No reachable host: no pytest (exit 0, no results)."""
    with tempfile.TemporaryDirectory(prefix="spectra-comply-") as tmp:
        ssh_config = Path(tmp) / "ssh_config"
        ssh_config.write_text(comply_hosts.ssh_config(targets, control_dir=tmp), encoding="utf-8")
        ssh_config.chmod(0o600)
        try:
            errors = connection_errors(targets, ssh_config, options.connect_timeout)
            reachable = [host for host in targets if host.name not in errors]
            if not reachable:
                log.write_text("no host could be reached: the suite did not run\n", encoding="utf-8")
                return 0, [], errors
            context_file = Path(tmp) / "context.json"
            context_file.write_text(json.dumps(comply_hosts.context(reachable)), encoding="utf-8")
            results_file = Path(tmp) / "results.json"
            env = dict(os.environ, **{CONTEXT_ENV: str(context_file), RESULTS_ENV: str(results_file)})
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
            with log.open("w", encoding="utf-8") as out:
                process = subprocess.run(
                    pytest_command(reachable, ssh_config, options), cwd=REPO, env=env, stdout=out,
                    stderr=subprocess.STDOUT, check=False,
                )  # fmt: skip
        finally:
            close_connections(targets, ssh_config)
        raw = json.loads(results_file.read_text(encoding="utf-8")) if results_file.exists() else []
    return process.returncode, raw, errors


def print_summary(result_set: ResultSet, paths: dict[str, Path]) -> None:
    for host in result_set.hosts:
        if host in result_set.connection_errors:
            print(f"{host}: connection error, not checked")
            continue
        counts = result_set.counts(host)
        print(
            f"{host}: {counts['pass']} pass, {counts['fail']} fail, {counts['waived']} waived, "
            f"{counts['not_applicable']} not applicable"
        )
    for host, cause in result_set.connection_errors.items():
        print(f"ERROR {host}: cannot connect: {cause}")
    unreachable = set()
    for host in result_set.hosts:
        reasons = {result.reason for result in result_set.results if result.host == host and result.status == "fail"}
        if len(reasons) == 1 and result_set.counts(host)["fail"] == len(check_ids()):
            unreachable.add(host)  # lost during the run (reached at first): every check failed the same way
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
        code, raw, errors = run_suite(targets, options, log)
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
    checked = [name for name in host_groups if name not in errors]
    results, problems = apply_waivers(complete(raw, checked, check_ids()), waivers, host_groups, today)
    result_set = ResultSet(
        inventory=inventory_path, hosts=host_groups, results=results, waiver_problems=problems,
        connection_errors=errors,
        generated_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    paths = write_reports(result_set, report_dir)
    print_summary(result_set, paths)
    if result_set.ok and not broken:
        _err(f"COMPLIANT: {len(targets)} host(s), no failing check")
        return EXIT_OK
    _err(
        f"NOT COMPLIANT: {len(result_set.failures)} failing check(s)"
        + (f", {len(errors)} host(s) not reached" if errors else "")
        + (f", {len(problems)} expired waiver(s)" if problems else "")
        + (", the suite did not run cleanly" if broken else "")
    )
    return EXIT_FAILED
