"""The lab's kube-router image, as the lab built and pushed it: its iptables (nf_tables), ipset and kube-router
run from the unpacked layer, policy-style rules load in a throwaway network namespace, and the binary links the
raised dependencies (``go version -m`` printed with ``pytest -s``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab.config import LabConfig
from lab.images import kube_router
from tests.lab.conftest import Lab
from tests.unit.test_lab_kube_router_image import LD, REFERENCE, _read_archive

pytestmark = pytest.mark.lab


CONFIG = LabConfig(nodes=[])


@pytest.fixture(scope="module")
def record(lab: Lab) -> dict[str, Any]:
    """The build record of the image the lab pushed (built here first if the cache lacks it: never skipped)."""
    return kube_router.build_record(CONFIG)


@pytest.fixture(scope="module")
def unpacked(record: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kube-router-image")
    _, layer = _read_archive(kube_router.archive_path(CONFIG, kube_router.module_version(REFERENCE)))
    layer.extractall(root, filter="fully_trusted")  # an absolute symlink (lib64/ld-linux) is part of it
    return root


def _run(*args: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout + result.stderr


def test_the_image_runs_iptables_nft_ipset_and_kube_router(unpacked: Path) -> None:
    assert "(nf_tables)" in _run("chroot", str(unpacked), "/usr/sbin/iptables", "-V")
    for tool in ("iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"):
        assert "(nf_tables)" in _run("chroot", str(unpacked), f"/usr/sbin/{tool}", "-V"), tool
    assert _run("chroot", str(unpacked), "/usr/sbin/ipset", "version").startswith("ipset v7.")
    version = _run(str(unpacked / "usr/local/bin/kube-router"), "--version")
    assert "version v2.1.0, built on 2024-03-02T21:45:54+0000, go1." in version


def test_policy_rules_load_in_a_throwaway_network_namespace(unpacked: Path) -> None:
    # the kinds of rules the policy controller writes: sets, comments, conntrack, marks, NFLOG, REJECT
    script = f"""set -e
c() {{ chroot {unpacked} "$@"; }}
c /usr/sbin/ipset create KUBE-SRC-TEST hash:ip family inet timeout 0 comment
c /usr/sbin/ipset add KUBE-SRC-TEST 10.0.0.1 comment "pod a"
c /usr/sbin/iptables -N KUBE-NWPLCY-TEST
c /usr/sbin/iptables -A KUBE-NWPLCY-TEST -m comment --comment "allow" -m set --match-set KUBE-SRC-TEST src \
  -m conntrack --ctstate RELATED,ESTABLISHED -j MARK --set-xmark 0x10000/0x10000
c /usr/sbin/iptables -A KUBE-NWPLCY-TEST -p tcp --dport 443 -m limit --limit 10/minute -j NFLOG --nflog-group 100
c /usr/sbin/iptables -A KUBE-NWPLCY-TEST -m mark ! --mark 0x10000/0x10000 -j REJECT
saved=$(c /usr/sbin/iptables-save)
c /usr/sbin/iptables -F KUBE-NWPLCY-TEST
echo "$saved" | c /usr/sbin/iptables-restore
c /usr/sbin/iptables -S KUBE-NWPLCY-TEST
c /usr/sbin/ip6tables -A INPUT -p ipv6-icmp -j ACCEPT
"""
    rules = _run("unshare", "--net", "bash", "-c", script)
    assert "-m set --match-set KUBE-SRC-TEST src" in rules
    assert "-j NFLOG --nflog-group 100" in rules
    assert "-j REJECT --reject-with icmp-port-unreachable" in rules


def test_the_binary_links_the_raised_dependencies(record: dict[str, Any]) -> None:
    print(record["go_version_m"])  # pytest -s shows it
    linked = kube_router.module_versions(CONFIG)
    assert linked == kube_router.parse_go_version_m(record["go_version_m"])
    for one in kube_router.raises("v2.1.0"):
        if one.module in linked:
            assert linked[one.module] == one.to_version, one.module
    assert "\tbuild\tCGO_ENABLED=0" in record["go_version_m"] and "-trimpath=true" in record["go_version_m"]
    assert "golang.org/x/net" in linked and "google.golang.org/grpc" in linked


def test_the_cached_layer_is_what_the_record_says(unpacked: Path, record: dict[str, Any]) -> None:
    files = sorted(path.relative_to(unpacked).as_posix() for path in unpacked.rglob("*") if not path.is_dir())
    assert files == record["layer_files"]
    interpreter, needed = kube_router.elf_dependencies((unpacked / "usr/sbin/xtables-nft-multi").read_bytes())
    assert interpreter == LD
    assert set(needed) == {"libxtables.so.12", "libmnl.so.0", "libnftnl.so.11", "libc.so.6"}
