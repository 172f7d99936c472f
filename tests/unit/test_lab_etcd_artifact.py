from __future__ import annotations

import pytest

from deploys.components import etcd as etcd_component
from lab import artifacts

pytestmark = pytest.mark.unit


def test_build_module_requires_the_three_submodules_at_one_version() -> None:
    files = artifacts.etcd_module_files("3.6.16")
    go_mod = files["go.mod"]
    for module in ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3", "go.etcd.io/etcd/etcdutl/v3"):
        assert f"\t{module} v3.6.16\n" in go_mod
    assert "replace" not in go_mod
    assert sorted(files) == ["cmd/etcd/main.go", "cmd/etcdctl/main.go", "cmd/etcdutl/main.go", "go.mod"]


def test_mains_call_upstream_entry_points() -> None:
    files = artifacts.etcd_module_files("3.6.16")
    assert "etcdmain.Main(os.Args)" in files["cmd/etcd/main.go"]
    assert "ctlv3.MustStart()" in files["cmd/etcdctl/main.go"]
    etcdutl = files["cmd/etcdutl/main.go"]
    for command in ("Defrag", "Snapshot", "HashKV", "Version", "Completion", "Migrate"):
        assert f"etcdutl.New{command}Command()" in etcdutl


def test_version_ldflags_and_pinned_version() -> None:
    assert "-X go.etcd.io/etcd/api/v3/version.GitSHA=" in artifacts.etcd_ldflags()
    assert artifacts.pinned_versions()["etcd"] == etcd_component.DEFAULTS["etcd_version"]
