"""The CoreDNS image the lab builds from its Go module, pulled by its upstream name through containerd's
registry mirror on a converged node, and run as the addon manifest runs it (non-root, read-only root, no
capability but NET_BIND_SERVICE). The addon on a cluster (kubernetes plugin against an apiserver) is not
tested here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.images import coredns as coredns_image
from tests.lab.conftest import REPO, Lab

pytestmark = pytest.mark.lab

NAMESPACE = "spectra-test"
IMAGE = coredns_image.pinned_image()
# ctr's default capabilities, all dropped but NET_BIND_SERVICE (ctr 1.6 has no `--cap-drop ALL`).
DROPPED = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
           "SETPCAP", "SYS_CHROOT", "KILL", "AUDIT_WRITE")  # fmt: skip
CAP_NET_BIND_SERVICE = 1 << 10


@pytest.fixture(scope="module")
def node1(lab: Lab) -> str:
    # The node deploy gives containerd its mirrors (a no-op when an earlier module converged the node).
    result = subprocess.run(
        [str(Path(sys.executable).parent / "spectra"), "deploy", "inventories/lab.py", "deploys/node.py",
         "--limit", "node1"],
        cwd=REPO, capture_output=True, text=True, timeout=1800, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    node = lab.node("node1")
    pulled = lab.ssh(node, f"ctr -n {NAMESPACE} images pull --hosts-dir /etc/containerd/certs.d {IMAGE}")
    assert "done" in pulled or "elapsed" in pulled, pulled
    return node.name


def test_coredns_image_is_the_pinned_release(lab: Lab, node1: str) -> None:
    output = lab.ssh(lab.node(node1), f"ctr -n {NAMESPACE} run --rm {IMAGE} coredns-version /coredns -version")
    assert output.splitlines()[0] == f"CoreDNS-{coredns_image.version_of(IMAGE)}"
    plugins = lab.ssh(lab.node(node1), f"ctr -n {NAMESPACE} run --rm {IMAGE} coredns-plugins /coredns -plugins")
    assert {"kubernetes", "forward", "health", "ready", "prometheus", "loop"} <= {p.strip() for p in plugins.split()}


def test_coredns_serves_port_53_as_65532_with_only_net_bind_service(lab: Lab, node1: str) -> None:
    node = lab.node(node1)
    corefile = ".:53 {\\n    errors\\n    health\\n    ready\\n    whoami\\n}\\n"
    lab.ssh(node, f"mkdir -p /tmp/coredns-test && printf '{corefile}' > /tmp/coredns-test/Corefile")
    drops = " ".join(f"--cap-drop CAP_{cap}" for cap in DROPPED)
    lab.ssh(node, f"ctr -n {NAMESPACE} run -d --net-host --read-only {drops} "
                  "--mount type=bind,src=/tmp/coredns-test,dst=/etc/coredns,options=rbind:ro "
                  f"{IMAGE} coredns-test /coredns -conf /etc/coredns/Corefile")  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "coredns" not in lab.ssh(node, "ss -Hlnup 'sport = :53'") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "coredns" in lab.ssh(node, "ss -Hlnup 'sport = :53'")
        assert "coredns" in lab.ssh(node, "ss -Hlntp 'sport = :53'")
        status = lab.ssh(node, f"cat /proc/$(ctr -n {NAMESPACE} tasks ls | awk '/coredns-test/{{print $2}}')/status")
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split() == ["65532"] * 4 and fields["Gid"].split() == ["65532"] * 4
        assert int(fields["CapEff"], 16) == CAP_NET_BIND_SERVICE
        assert int(fields["NoNewPrivs"]) == 1
        health = lab.ssh(node, "python3 -c \"import urllib.request as u; "
                               "print(u.urlopen('http://127.0.0.1:8080/health').status)\"")  # fmt: skip
        assert health.strip() == "200"
    finally:
        ctr = f"ctr -n {NAMESPACE}"
        lab.ssh(node, f"{ctr} tasks kill -s SIGKILL coredns-test; sleep 1; {ctr} tasks delete coredns-test; "
                      f"{ctr} containers delete coredns-test; rm -rf /tmp/coredns-test", check=False)  # fmt: skip
