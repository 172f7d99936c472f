"""Lab boot benchmark: time to boot N nodes from the cached root, and memory of each idle node.

    python benchmarks/lab_boot.py [--nodes 3] [--from-nothing]

Memory is the proportional set size (PSS) of every process in the node's PID namespace, so shared pages
are split fairly between nodes. `--from-nothing` also deletes the cached Debian roots first.
The lab is left up afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab.config import LabConfig
from lab.lab import Lab


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def node_memory_kib(nspawn_pid: int) -> int:
    """PSS of all processes whose PID namespace is the node's (the children of systemd-nspawn)."""
    children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    if not children:
        return 0
    node_ns = os.readlink(f"/proc/{children[0]}/ns/pid")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns/pid") == node_ns:
                total += pss_kib(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def lab_cli(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "lab", *args], check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--from-nothing", action="store_true")
    args = parser.parse_args()
    config = LabConfig(nodes=[])
    lab_cli("down")
    if args.from_nothing:
        shutil.rmtree(config.cache_dir / "rootfs", ignore_errors=True)
    seconds = lab_cli("up", "--nodes", str(args.nodes))
    label = "from nothing (debootstrap + boot)" if args.from_nothing else "from cached root"
    print(f"boot {args.nodes} nodes {label}: {seconds:.1f} s")
    time.sleep(10)  # let boot-time jobs finish so the figure is an idle node
    state = Lab(config).load_state()
    assert state is not None
    sizes = [node_memory_kib(node["pid"]) / 1024 for node in state["nodes"]]
    for node, size in zip(state["nodes"], sizes, strict=True):
        print(f"idle memory {node['name']}: {size:.1f} MiB (PSS)")
    print(f"idle memory per node, mean: {sum(sizes) / len(sizes):.1f} MiB")


if __name__ == "__main__":
    main()
