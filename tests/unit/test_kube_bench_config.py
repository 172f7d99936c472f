"""compliance/kube-bench/: the layout kube-bench is told is the one the components write (defaults)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deploys.components import control_plane, etcd, kube_proxy, kubelet
from lab.tools import KUBE_BENCH_BENCHMARK, KUBE_BENCH_OVERLAY
from spectra import cluster_settings
from spectra.pki import layout

pytestmark = pytest.mark.unit

SETTINGS = cluster_settings.DEFAULTS


def overlay() -> dict[str, Any]:
    return dict(yaml.safe_load((KUBE_BENCH_OVERLAY / KUBE_BENCH_BENCHMARK / "config.yaml").read_text()))


def one(section: dict[str, Any], key: str) -> str:
    """The single path of list ``key``, which its ``default<key>`` repeats."""
    values = section[key]
    assert isinstance(values, list) and len(values) == 1, (key, values)
    default = section.get(f"default{key.rstrip('s')}" if key != "datadirs" else "defaultdatadir")
    assert default == values[0], (key, values, default)
    return str(values[0])


def test_control_plane_and_etcd_paths() -> None:
    master, etcd_target = overlay()["master"], overlay()["etcd"]
    for component, service in (("apiserver", "kube-apiserver"), ("scheduler", "kube-scheduler"),
                               ("controllermanager", "kube-controller-manager")):  # fmt: skip
        assert one(master[component], "confs") == control_plane.UNITS[service]
    assert one(master["scheduler"], "kubeconfig") == layout.kubeconfig_file(SETTINGS, "scheduler")
    assert one(master["controllermanager"], "kubeconfig") == layout.kubeconfig_file(SETTINGS, "controller-manager")
    for section in (master["etcd"], etcd_target["etcd"]):
        assert one(section, "confs") == etcd.UNIT
        assert one(section, "datadirs") == etcd.DEFAULTS["etcd_data_dir"]


def test_node_paths() -> None:
    node = overlay()["node"]
    assert one(node["kubelet"], "svc") == kubelet.UNIT
    assert one(node["kubelet"], "confs") == kubelet.DEFAULTS["kubelet_config_file"]
    assert one(node["kubelet"], "kubeconfig") == layout.kubeconfig_file(SETTINGS, "kubelet")
    assert one(node["kubelet"], "cafile") == layout.pki_file(SETTINGS, kubelet.TLS_FILES["kubelet_client_ca_file"])
    assert one(node["proxy"], "confs") == kube_proxy.DEFAULTS["kube_proxy_config_file"]
    assert one(node["proxy"], "kubeconfig") == layout.kubeconfig_file(SETTINGS, "kube-proxy")
    assert one(node["proxy"], "svc") == kube_proxy.UNIT


def test_paths_the_benchmark_names_itself() -> None:
    # CIS 1.1.13/1.1.14 (admin.conf) and 1.1.19-1.1.21 (the PKI) name their paths in the checks, not the config
    assert SETTINGS["kubernetes_pki_dir"] == "/etc/kubernetes/pki"
    assert layout.kubeconfig_file(SETTINGS, "admin") == "/etc/kubernetes/admin.conf"


def test_kube_bench_binary_is_built_once_and_cached(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab import tools

    builds: list[str] = []

    def build(cache: Any, version: str) -> dict[str, Any]:
        builds.append(version)
        (cache / "bin").mkdir(parents=True)
        (cache / "bin" / "kube-bench").write_text("binary")
        (cache / "cfg" / tools.KUBE_BENCH_BENCHMARK).mkdir(parents=True)
        (cache / "build.json").write_text('{"seconds": 1}')
        return {}

    monkeypatch.setattr(tools, "_build_kube_bench", build)
    binary = tools.kube_bench_binary(root=tmp_path)
    assert binary == tmp_path / "tools" / "kube-bench" / tools.KUBE_BENCH_VERSION / "bin" / "kube-bench"
    assert tools.kube_bench_cfg(root=tmp_path) == binary.parent.parent / "cfg"
    assert tools.kube_bench_record(root=tmp_path) == {"seconds": 1}
    assert builds == [tools.KUBE_BENCH_VERSION]  # a hit afterwards
