import pytest

from facts.kernel import KernelFeatures
from tests.unit.facts_util import command_text

pytestmark = pytest.mark.unit


def test_process_all_states() -> None:
    lines = ["overlay builtin", "br_netfilter loadable", "vxlan loaded", "ip_vs missing"]
    assert KernelFeatures().process(lines) == {
        "overlay": "builtin",
        "br_netfilter": "loadable",
        "vxlan": "loaded",
        "ip_vs": "missing",
    }


def test_process_empty_output() -> None:
    assert KernelFeatures().process([]) == {}
    assert KernelFeatures.default() == {}


def test_process_ignores_noise() -> None:
    lines = ["modinfo: ERROR: something", "overlay builtin", "weird unknownstate", ""]
    assert KernelFeatures().process(lines) == {"overlay": "builtin"}


def test_one_command_names_quoted_as_arguments() -> None:
    text = command_text(KernelFeatures(), names=["overlay", "br_netfilter", "x; rm -rf /"])
    assert text.startswith("sh -c ")
    # the hostile name is one quoted argument, not part of the script
    assert "'x; rm -rf /'" in text
    # built-in br_netfilter: config symbol and probe path are passed along
    assert "BRIDGE_NETFILTER" in text and "/proc/sys/net/bridge/bridge-nf-call-iptables" in text
    # monolithic kernels: /proc/filesystems and /sys/module are consulted before modinfo
    assert text.index("/proc/filesystems") < text.index("modinfo")
    assert text.index("/sys/module") < text.index("modinfo")


def test_extra_symbols_and_probes() -> None:
    text = command_text(
        KernelFeatures(), names=["wireguard"], config_symbols={"wireguard": "WIREGUARD"}, probe_paths={}
    )
    assert "wireguard WIREGUARD ''" in text


def test_runs_locally_on_linux() -> None:
    from tests.unit.facts_util import run_locally

    result = run_locally(KernelFeatures(), names=["surely_not_a_module_xyz"])
    assert result == {"surely_not_a_module_xyz": "missing"}


def test_both_spellings_passed_without_forks_in_the_script() -> None:
    text = command_text(KernelFeatures(), names=["br-netfilter"])
    assert "br-netfilter br_netfilter br-netfilter" in text
    assert " tr " not in text  # no process per module just to respell its name
    # sysfs builtins first; the kernel config is only decompressed when those do not answer
    assert text.index("/sys/module/$u/initstate") < text.index("/proc/modules") < text.index("zcat")
