"""Node converge benchmark: first converge and no-op re-run of deploys/node.py on the lab's nodes.

    SPECTRA_LAB_DIR=/var/lib/spectra-lab-perf python benchmarks/node_converge.py [--reuse] [--runs 5]

Steps:

1. Unless ``--reuse``: ``python -m lab down`` then ``python -m lab up`` with the lab's own subnet and
   bridge (read from ``$SPECTRA_LAB_DIR/state.json``, or ``--subnet``/``--bridge``), for fresh nodes.
2. The first converge of ``deploys/node.py`` (``pyinfra -y``), timed.
3. ``--runs`` no-op re-runs, timed (best and median), each checked for zero changes from pyinfra's own
   results (``state.ops[host][op_hash].operation_meta.did_change()``).
4. A plain ``pyinfra -y`` CLI re-run, timed from outside only, as a cross-check of the probe's overhead.

Each pyinfra run is a child process (``python benchmarks/node_converge.py --probe STATS -- <pyinfra args>``)
that runs pyinfra's own CLI in-process with its SSH connector's ``run_shell_command`` wrapped, so every
remote command is counted and timed per host, and the run's stages (import, inventory, connect, prepare,
execute) are timed. Wall times are measured around the child process: they include the interpreter start
and pyinfra's imports, as a user's ``pyinfra -y ...`` does.

Exits non-zero when a converge fails or a re-run changes anything. It does NOT fail on timing targets:
it reports them (targets of issue 3: no-op re-run under 1.5 s for 3 nodes, at most 40 commands per host).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_NOOP_SECONDS = 1.5
TARGET_COMMANDS_PER_HOST = 40
DEFAULT_LAB_DIR = "/var/lib/spectra-lab"


# --------------------------------------------------------------------------------------------------
# Probe: runs inside the child process, around pyinfra's CLI
# --------------------------------------------------------------------------------------------------


def probe(stats_path: str, pyinfra_args: list[str]) -> None:
    """Run ``pyinfra <pyinfra_args>`` in this process, counting remote commands; write stats as JSON."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    import pyinfra_cli.main  # first: monkey-patches the standard library for gevent, as the CLI does

    # isort: split
    import gevent
    import pyinfra.api.host as pyinfra_host
    from pyinfra.api.state import State, StateStage
    from pyinfra.connectors.ssh import SSHConnector

    imported = time.perf_counter()
    cpu_imported = time.process_time()
    commands: list[dict[str, Any]] = []
    reading: dict[Any, str] = {}  # greenlet -> fact being read (a label for its command)

    original_get_fact = pyinfra_host.get_fact

    def get_fact(state: Any, host: Any, cls: Any, *args: Any, **kwargs: Any) -> Any:
        parts = getattr(cls, "parts", None)
        label = f"{cls.name}[{', '.join(part[0].name for part in parts)}]" if parts else cls.name
        reading[gevent.getcurrent()] = label
        try:
            return original_get_fact(state, host, cls, *args, **kwargs)
        finally:
            reading.pop(gevent.getcurrent(), None)

    pyinfra_host.get_fact = get_fact  # type: ignore[assignment]

    def label_of(host: Any) -> str:
        fact = reading.get(gevent.getcurrent())
        if fact:
            return f"fact {fact}"
        op_hash = getattr(host, "current_op_hash", None)
        state = captured.get("state")
        if op_hash and state is not None and op_hash in state.op_meta:
            return f"op {', '.join(sorted(state.op_meta[op_hash].names))}"
        return "?"

    connects: dict[str, float] = {}
    stages: dict[str, float] = {}
    cpu_stages: dict[str, float] = {}
    captured: dict[str, Any] = {}

    original_run = SSHConnector.run_shell_command
    original_connect = SSHConnector.connect
    original_set_stage = State.set_stage

    def run_shell_command(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        ok = False
        try:
            result = original_run(self, command, *args, **kwargs)
            ok = bool(result[0])
            return result
        finally:
            text = command.get_masked_value() if hasattr(command, "get_masked_value") else str(command)
            commands.append(
                {
                    "host": self.host.name,
                    "seconds": time.perf_counter() - begin,
                    "start": begin - started,
                    "stage": StateStage(captured["state"].current_stage).name if "state" in captured else "?",
                    "ok": ok,
                    "what": label_of(self.host),
                    "command": text,
                }
            )

    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        try:
            return original_connect(self, *args, **kwargs)
        finally:
            connects[self.host.name] = time.perf_counter() - begin

    def set_stage(self: Any, stage: Any) -> None:
        captured["state"] = self
        stages.setdefault(StateStage(stage).name, time.perf_counter() - started)
        cpu_stages.setdefault(StateStage(stage).name, time.process_time() - cpu_started)
        original_set_stage(self, stage)

    SSHConnector.run_shell_command = run_shell_command  # type: ignore[method-assign]
    SSHConnector.connect = connect  # type: ignore[method-assign]
    State.set_stage = set_stage  # type: ignore[method-assign]

    sys.argv = ["pyinfra", *pyinfra_args]
    code: Any = 0
    try:
        pyinfra_cli.main.main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        finished = time.perf_counter()
        stats = {
            "import_seconds": imported - started,
            "total_seconds": finished - started,
            "stages": stages,
            "cpu_stages": cpu_stages,
            "cpu_import_seconds": cpu_imported - cpu_started,
            "cpu_total_seconds": time.process_time() - cpu_started,
            "connect_seconds": connects,
            "commands": commands,
            "exit_code": code if isinstance(code, int) else (0 if code is None else 1),
            **_results(captured.get("state")),
        }
        Path(stats_path).write_text(json.dumps(stats))
    sys.exit(code)


def _results(state: Any) -> dict[str, Any]:
    """Hosts, failed hosts, and the operations that changed something, from pyinfra's state."""
    if state is None or not getattr(state, "initialised", False):
        return {"hosts": [], "failed_hosts": [], "changed": {}, "ops_per_host": {}, "incomplete": {}}
    changed: dict[str, list[str]] = {}
    incomplete: dict[str, list[str]] = {}
    ops_per_host: dict[str, int] = {}
    for host in state.inventory:
        host_ops = state.ops.get(host, {})
        ops_per_host[host.name] = len(host_ops)
        for op_hash, op_data in host_ops.items():
            name = ", ".join(sorted(state.op_meta[op_hash].names)) if op_hash in state.op_meta else op_hash
            meta = op_data.operation_meta
            if not meta.is_complete():
                incomplete.setdefault(host.name, []).append(name)
            elif meta.did_change():
                changed.setdefault(host.name, []).append(name)
    return {
        "hosts": [host.name for host in state.inventory],
        "failed_hosts": sorted(host.name for host in state.failed_hosts),
        "changed": changed,
        "incomplete": incomplete,
        "ops_per_host": ops_per_host,
    }


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


class BenchmarkError(Exception):
    pass


def run_probed(pyinfra_args: list[str], log: Path) -> tuple[float, dict[str, Any]]:
    """(wall seconds, probe stats) of one pyinfra run in a child process; its output goes to ``log``."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        stats_path = handle.name
    try:
        command = [sys.executable, str(Path(__file__).resolve()), "--probe", stats_path, "--", *pyinfra_args]
        with log.open("w") as output:
            begin = time.perf_counter()
            completed = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, check=False)
            wall = time.perf_counter() - begin
        try:
            stats = json.loads(Path(stats_path).read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            stats = {}
        stats["returncode"] = completed.returncode
        return wall, stats
    finally:
        Path(stats_path).unlink(missing_ok=True)


def run_plain(pyinfra_args: list[str], log: Path) -> tuple[float, int]:
    pyinfra = Path(sys.executable).with_name("pyinfra")
    with log.open("w") as output:
        begin = time.perf_counter()
        completed = subprocess.run(
            [str(pyinfra), *pyinfra_args], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, check=False
        )
        return time.perf_counter() - begin, completed.returncode


def check_run(what: str, stats: dict[str, Any], log: Path, expected_hosts: int, must_be_noop: bool) -> list[str]:
    """Problems with a run (empty when it succeeded, on every host, and changed nothing if it had to)."""
    problems = []
    if stats.get("returncode") != 0:
        problems.append(f"{what}: pyinfra exited {stats.get('returncode')} (log: {log})")
    hosts = stats.get("hosts") or []
    if len(hosts) != expected_hosts:
        problems.append(f"{what}: ran on {len(hosts)} host(s), expected {expected_hosts} (log: {log})")
    if stats.get("failed_hosts"):
        problems.append(f"{what}: failed hosts {', '.join(stats['failed_hosts'])} (log: {log})")
    if stats.get("incomplete"):
        problems.append(f"{what}: operations not run: {stats['incomplete']} (log: {log})")
    if must_be_noop:
        for host, names in sorted((stats.get("changed") or {}).items()):
            problems.append(f"{what}: {host} changed {len(names)} operation(s): {'; '.join(names)}")
    return problems


def lab_cli(*args: str) -> float:
    begin = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise BenchmarkError(f"lab {' '.join(args)} failed:\n{completed.stdout}{completed.stderr}")
    return time.perf_counter() - begin


def lab_network(lab_dir: Path, subnet: str | None, bridge: str | None) -> tuple[str, str]:
    """The subnet and bridge to bring the lab up with: flags first, then the lab's own state file."""
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        state = json.loads((lab_dir / "state.json").read_text())
    subnet = subnet or state.get("subnet")
    bridge = bridge or state.get("bridge")
    if not subnet or not bridge:
        raise BenchmarkError(
            f"cannot tell the subnet and bridge of the lab in {lab_dir}: pass --subnet and --bridge "
            "(never the default lab's)"
        )
    return subnet, bridge


def fmt_ratio(value: float, target: float) -> str:
    return f"{value / target:.2f}x"


def summarise_commands(stats: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
    commands = stats.get("commands") or []
    per_host = {host: [c for c in commands if c["host"] == host] for host in hosts}
    return {
        "count": {host: len(items) for host, items in per_host.items()},
        "seconds": {host: sum(c["seconds"] for c in items) for host, items in per_host.items()},
        "by_stage": {
            host: {stage: sum(1 for c in items if c["stage"] == stage) for stage in ("Prepare", "Execute")}
            for host, items in per_host.items()
        },
        "slowest": sorted(commands, key=lambda c: c["seconds"], reverse=True)[:5],
    }


def stage_breakdown(stats: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(phase, wall seconds, CPU seconds of the pyinfra process) inside the probe: import, setup, connect,
    prepare, execute, finish. Wall well above CPU: waiting for the hosts (or for a busy machine's CPUs)."""
    stages = stats.get("stages") or {}
    cpu = stats.get("cpu_stages") or {}
    marks = [
        ("import", 0.0, 0.0),
        ("setup (CLI, inventory, group data)", stats.get("import_seconds", 0.0), stats.get("cpu_import_seconds", 0.0)),
    ]
    for stage, label in (("Connect", "connect"), ("Prepare", "prepare (deploy code, facts)"),
                         ("Execute", "execute (operations)"), ("Disconnect", "results, disconnect")):  # fmt: skip
        if stage in stages:
            marks.append((label, stages[stage], cpu.get(stage, 0.0)))
    end, cpu_end = stats.get("total_seconds", 0.0), stats.get("cpu_total_seconds", 0.0)
    phases = []
    for index, (label, begin, cpu_begin) in enumerate(marks):
        stop, cpu_stop = (marks[index + 1][1], marks[index + 1][2]) if index + 1 < len(marks) else (end, cpu_end)
        phases.append((label, max(0.0, stop - begin), max(0.0, cpu_stop - cpu_begin)))
    return phases


def short(command: str, width: int = 110) -> str:
    text = " ".join(command.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe"]:
        if len(argv) < 3 or argv[2] != "--":
            print("usage: node_converge.py --probe STATS -- PYINFRA-ARGS...", file=sys.stderr)
            return 2
        probe(argv[1], argv[3:])
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true", help="keep the running lab (no down/up, no fresh nodes)")
    parser.add_argument("--runs", type=int, default=5, help="no-op re-runs to time (default 5)")
    parser.add_argument("--subnet", help="lab subnet for `lab up` (default: the lab's own, from state.json)")
    parser.add_argument("--bridge", help="lab bridge for `lab up` (default: the lab's own, from state.json)")
    parser.add_argument("--inventory", default="inventories/lab.py")
    parser.add_argument("--deploy", default="deploys/node.py")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--logs", type=Path, default=None, help="directory for pyinfra output (default: a temp dir)")
    args = parser.parse_args(argv)

    lab_dir_text = os.environ.get("SPECTRA_LAB_DIR")
    if not lab_dir_text:
        print(
            "node_converge: set SPECTRA_LAB_DIR to your own lab's directory (this benchmark takes it down "
            f"and up; it refuses to guess and touch the default lab at {DEFAULT_LAB_DIR})",
            file=sys.stderr,
        )
        return 2
    lab_dir = Path(lab_dir_text)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="node-converge-"))
    logs.mkdir(parents=True, exist_ok=True)
    pyinfra_args = ["-y", args.inventory, args.deploy]
    report: dict[str, Any] = {"lab_dir": str(lab_dir), "logs": str(logs)}
    problems: list[str] = []

    try:
        if not args.reuse:
            subnet, bridge = lab_network(lab_dir, args.subnet, args.bridge)
            print(f"lab: down and up for fresh nodes ({lab_dir}, {subnet}, bridge {bridge})", flush=True)
            report["lab_down_seconds"] = lab_cli("down")
            report["lab_up_seconds"] = lab_cli("up", "--subnet", subnet, "--bridge", bridge)
        inventory = json.loads((lab_dir / "inventory.json").read_text())
    except (BenchmarkError, OSError, json.JSONDecodeError) as error:
        print(f"node_converge: {error}", file=sys.stderr)
        return 1
    expected_hosts = len(inventory.get("nodes") or [])

    print(f"first converge of {args.deploy} on {expected_hosts} node(s)...", flush=True)
    wall, first = run_probed(pyinfra_args, logs / "first.log")
    report["first_converge"] = {"wall_seconds": wall, "stats": first}
    problems += check_run("first converge", first, logs / "first.log", expected_hosts, must_be_noop=False)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1

    walls: list[float] = []
    runs: list[dict[str, Any]] = []
    for index in range(args.runs):
        log = logs / f"noop-{index + 1}.log"
        wall, stats = run_probed(pyinfra_args, log)
        walls.append(wall)
        runs.append(stats)
        problems += check_run(f"no-op re-run {index + 1}", stats, log, expected_hosts, must_be_noop=True)
        print(f"  no-op re-run {index + 1}: {wall:.2f} s", flush=True)
    plain_wall, plain_code = run_plain(pyinfra_args, logs / "plain.log")
    if plain_code != 0:
        problems.append(f"plain pyinfra re-run exited {plain_code} (log: {logs / 'plain.log'})")

    hosts = runs[0].get("hosts") or [] if runs else []
    median_index = sorted(range(len(walls)), key=lambda i: walls[i])[len(walls) // 2] if walls else 0
    typical = runs[median_index] if runs else {}
    commands = summarise_commands(typical, hosts)
    max_commands = max((summarise_commands(run, hosts)["count"].get(h, 0) for run in runs for h in hosts), default=0)
    best, median = (min(walls), statistics.median(walls)) if walls else (0.0, 0.0)
    report["noop"] = {
        "walls": walls,
        "best_seconds": best,
        "median_seconds": median,
        "plain_cli_seconds": plain_wall,
        "commands_per_host": commands["count"],
        "max_commands_per_host": max_commands,
        "remote_seconds_per_host": commands["seconds"],
        "slowest_commands": commands["slowest"],
        "stages_of_median_run": stage_breakdown(typical),
        "connect_seconds": typical.get("connect_seconds"),
    }

    first_wall = report["first_converge"]["wall_seconds"]
    first_counts = summarise_commands(first, hosts)["count"]
    print()
    print(f"nodes: {', '.join(hosts)}   (logs: {logs})")
    if "lab_up_seconds" in report:
        print(f"lab down + up: {report['lab_down_seconds']:.1f} s + {report['lab_up_seconds']:.1f} s")
    print(f"first converge: {first_wall:.2f} s ({', '.join(f'{h} {n} commands' for h, n in first_counts.items())})")
    print(
        f"no-op re-run: {median:.2f} s median, {best:.2f} s best of {len(walls)} "
        f"(target {TARGET_NOOP_SECONDS} s, median {fmt_ratio(median, TARGET_NOOP_SECONDS)}, "
        f"best {fmt_ratio(best, TARGET_NOOP_SECONDS)})"
    )
    print(f"no-op re-run, plain pyinfra CLI (no probe): {plain_wall:.2f} s")
    print(
        f"remote commands per host (no-op): max {max_commands} "
        f"(target <= {TARGET_COMMANDS_PER_HOST}, {fmt_ratio(max_commands, TARGET_COMMANDS_PER_HOST)}): "
        + ", ".join(
            f"{h} {commands['count'][h]} ({commands['by_stage'][h]['Prepare']} prepare + "
            f"{commands['by_stage'][h]['Execute']} execute)"
            for h in hosts
        )
    )
    print(
        "time in remote commands per host (median run): "
        + ", ".join(f"{h} {commands['seconds'][h] * 1000:.0f} ms" for h in hosts)
    )
    connect = typical.get("connect_seconds") or {}
    if connect:
        print("SSH connect per host: " + ", ".join(f"{h} {s * 1000:.0f} ms" for h, s in sorted(connect.items())))
    print("where the median run's time went (inside the pyinfra process, wall and CPU):")
    for label, seconds, cpu_seconds in stage_breakdown(typical):
        print(f"  {label:<38} {seconds * 1000:7.0f} ms wall {cpu_seconds * 1000:7.0f} ms CPU")
    outside = (walls[median_index] - typical.get("total_seconds", 0.0)) if walls else 0.0
    print(f"  {'(interpreter start and exit)':<38} {outside * 1000:7.0f} ms")
    print("slowest remote commands (median run):")
    for item in commands["slowest"]:
        what = item.get("what") or short(item["command"])
        print(f"  {item['seconds'] * 1000:6.0f} ms  {item['host']:<8} {item['stage']:<8} {short(what)}")

    changed_any = any(run.get("changed") for run in runs)
    print(f"no-op re-runs changed anything: {'YES' if changed_any else 'no'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if problems:
        print("\nFAILED:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
