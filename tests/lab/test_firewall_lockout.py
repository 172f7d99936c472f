"""The firewall cannot lock the deploy out (issue 13), on real nodes.

- The lockout of the issue (admin CIDRs without the controller's address) is refused at prepare: non-zero
  exit, the setting and the address named, nothing applied, node3 still answers new SSH connections.
- A ruleset that passes the refusal but still cuts new connections (a deny rule placed before the SSH rule)
  fails the deploy on the reconnect check; the armed timer restores the previous table and new SSH
  connections get in again; the next run applies the wanted table and the one after changes nothing.
- The per-source SSH throttle drops most of a burst of 100 new connections in one second from one source
  (on node1, Debian 12), and ordinary use right after still logs in.

The firewall alone runs (tests/lab/deploys/firewall.py: the same component, preflight and guarded load as
deploys/node.py), with short rollback and reconnect bounds so the test stays short.
"""

from __future__ import annotations

import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.lab.conftest import Lab, LabNode, spectra_deploy

pytestmark = pytest.mark.lab

FIREWALL = "tests/lab/deploys/firewall.py"
ROLLBACK = 20  # firewall_rollback_seconds for the test
RECONNECT = 8  # firewall_reconnect_seconds


def controller(lab: Lab) -> str:
    """The address the nodes see the deploy come from: the lab bridge's (the mirror listens there too)."""
    return str(urlparse(lab.mirror_url).hostname)


def new_ssh(lab: Lab, node: LabNode, timeout: int = 3) -> bool:
    """Whether a NEW ssh connection logs in and runs ``true``."""
    args = lab.ssh_args(node, "true")
    args[args.index("ConnectTimeout=5")] = f"ConnectTimeout={timeout}"
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout + 5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def deploy(
    tmp_path: Path, name: str, *data: str, limit: str = "node3"
) -> tuple[subprocess.CompletedProcess[str], dict]:
    args = [arg for item in data for arg in ("--data", item)]
    return spectra_deploy(tmp_path / f"{name}.json", "inventories/lab.py", FIREWALL, "--limit", limit, *args)


def test_lockout_refused_before_any_change(lab: Lab, tmp_path: Path) -> None:
    node3 = lab.node("node3")
    before = lab.ssh(node3, "sha256sum /etc/nftables.d/spectra.nft 2>/dev/null; nft list tables 2>/dev/null; true")
    result, summary = spectra_deploy(
        tmp_path / "lockout.json", "inventories/lab.py", "deploys/node.py", "--limit", "node3",
        "--data", 'firewall_admin_cidrs=["203.0.113.0/24"]',
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "refused before any change" in output and "firewall_admin_cidrs=['203.0.113.0/24']" in output, output
    assert f"the deploy connects from {controller(lab)}" in output, output
    assert not any(summary.get("changed_operations", {}).values()), summary
    assert new_ssh(lab, node3), "node3 refuses new SSH after the refused deploy"
    after = lab.ssh(node3, "sha256sum /etc/nftables.d/spectra.nft 2>/dev/null; nft list tables 2>/dev/null; true")
    assert after == before


def test_cut_is_rolled_back_then_converges(lab: Lab, tmp_path: Path) -> None:
    node3 = lab.node("node3")
    deny = f'firewall_early_rules=["ip saddr {controller(lab)} tcp dport 22 drop"]'
    bounds = (f"firewall_rollback_seconds={ROLLBACK}", f"firewall_reconnect_seconds={RECONNECT}")
    started = time.monotonic()
    result, _ = deploy(tmp_path, "cut", deny, *bounds)
    failed_after = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "the new firewall refuses new SSH connections from this controller" in output, output[-3000:]
    # the cut was real: a new connection right after the failure does not get in
    assert not new_ssh(lab, node3, timeout=2), "the deny rule did not cut new connections"
    while not new_ssh(lab, node3, timeout=2):
        assert time.monotonic() - started < ROLLBACK + 30, "node3 still refuses new SSH after the rollback time"
    back_after = time.monotonic() - started
    print(f"rollback: deploy failed after {failed_after:.1f} s, new SSH accepted again {back_after:.1f} s after start")
    assert back_after >= ROLLBACK - 1
    assert "spectra-firewall-rollback" not in lab.ssh(node3, "systemctl list-timers --all --no-legend")
    assert "tcp dport 22 drop" not in lab.ssh(node3, "nft list table inet spectra 2>/dev/null || true")

    result, summary = deploy(tmp_path, "converge")  # the rollback left the old table: applied again
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert summary["changed_operations"]["node3"], summary
    assert "spectra-firewall-rollback" not in lab.ssh(node3, "systemctl list-timers --all --no-legend")
    result, summary = deploy(tmp_path, "again")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert summary["changed_operations"] == {"node3": []}, summary


def connect(address: str, delay: float) -> bool:
    time.sleep(delay)
    try:
        with socket.create_connection((address, 22), timeout=1.5):
            return True
    except OSError:
        return False


def test_ssh_throttle_drops_a_burst_from_one_source_on_debian_12(lab: Lab, tmp_path: Path) -> None:
    # Debian 12 (OpenSSH 9.2, no PerSourcePenalties) is where the firewall's throttle is the only one. On
    # Debian 13, sshd's own PerSourcePenalties also blocks a source whose connections never authenticate, for
    # a while: a burst there would shut the controller out of node3 for the tests after this one.
    node1 = lab.node("node1")
    assert node1.suite == "bookworm", node1
    result, _ = deploy(tmp_path, "converged", limit="node1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    time.sleep(12)  # the deploys above spent some of this source's burst: let it refill (50 at 5/s)
    burst = 100
    with ThreadPoolExecutor(burst) as pool:  # 100 new TCP connections to port 22 within one second
        accepted = sum(pool.map(connect, [node1.address] * burst, [i / burst for i in range(burst)]))
    print(f"throttle: {accepted} of {burst} new connections in 1 s accepted")
    # burst 50 plus 5/s for the second and the SYN retransmits: well under the 96 of 100 the issue measured
    assert 45 <= accepted <= 75, accepted
    time.sleep(2)
    assert new_ssh(lab, node1), "ordinary SSH after the burst is refused"
    assert "ssh_throttle_v4" in lab.ssh(node1, "nft list set inet spectra ssh_throttle_v4")
