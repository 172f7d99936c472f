"""What the lab tests of the cluster and its addons share: kubectl on the control plane, waiting for a
condition (the ``converged`` fixture, a converged site, is in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.lab.conftest import Lab, LabNode

KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"


def control_plane(lab: Lab) -> LabNode:
    return next(node for node in lab.nodes if "control_plane" in node.roles)


def kubectl(lab: Lab, args: str, check: bool = True, timeout: int = 600) -> str:
    return lab.ssh(control_plane(lab), f"{KUBECTL} {args}", check=check, timeout=timeout)


def until(what: str, check: Callable[[], Any], timeout: float = 180, every: float = 3) -> Any:
    """Call ``check`` (returning ``(done, value)``) until done; its value, or an AssertionError with the last."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last and last[0]:
            return last[1]
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout:.0f} s; last: {last}")
