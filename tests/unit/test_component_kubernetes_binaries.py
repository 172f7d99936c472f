from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyinfra import host
from pyinfra.api import DeployError, deploy

from deploys import checksums
from deploys.components import kubernetes_binaries as kb
from deploys.operations import managed
from deploys.operations.download import stamp_path
from deploys.prepare import prepared_facts
from facts.files import FileStates
from facts.platform import Platform
from tests.unit.component_facts import BOOKWORM, fresh
from tests.unit.pyinfra_harness import run_deploy

pytestmark = pytest.mark.unit

SUMS = {"kubelet": "1" * 64, "kube-apiserver": "2" * 64, "kubectl": "3" * 64}
TABLE = {"v1.36.3": {"amd64": SUMS}}
REPO = Path(__file__).resolve().parents[2]
BASE = "https://dl.k8s.io/release/v1.36.3/bin/linux/amd64"


@pytest.fixture(autouse=True)
def repository_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's table, as a file of the test's own (the real one holds few upstream sums)."""
    path = tmp_path / "kubernetes.yaml"
    checksums.write_table(path, TABLE)
    monkeypatch.setattr(checksums, "KUBERNETES_TABLE", path)
    return path


@deploy("Caller")
def caller(names: list[str]) -> None:
    """A component the way one calls this module: its own FileStates request, then the installs."""
    paths, contents, stat_only = kb.binary_paths(names)
    (files,) = prepared_facts((FileStates, managed.snapshot_files_kwargs(["/etc/own", *paths], contents, stat_only)))
    installs = kb.install_binaries(names, files)
    host.data.installs = installs  # for the test to look at


def run(names: list[str], data: dict[str, Any] | None = None, facts: dict[Any, Any] | None = None) -> Any:
    return run_deploy(caller, names, facts=fresh(facts), data=data or {})


def test_defaults_are_component_settings() -> None:
    assert kb.DEFAULTS == {
        "kubernetes_version": "v1.36.3",
        "kubernetes_download_base_url": "https://dl.k8s.io/release",
        "kubernetes_sha256": {},
        "kubernetes_bin_dir": "/usr/local/bin",
        "kubernetes_verify_binary": False,
    }


def test_settings_in_the_schema() -> None:
    from spectra_cli.schema import load_schema

    schema = load_schema()
    assert "deploys/components/kubernetes_binaries.py" in schema.components
    assert not [problem for problem in schema.problems if "kubernetes_binaries" in str(problem[0])]


def test_binary_paths_for_one_snapshot() -> None:
    def paths_of(names: list[str]) -> tuple[list[str], list[str], list[str]]:
        found: list[Any] = []
        run_deploy(lambda: found.append(kb.binary_paths(names)), facts=fresh(), data={})
        return found[0]

    paths, contents, stat_only = paths_of(["kubelet", "kubectl"])
    stamps = [stamp_path("/usr/local/bin/kubelet"), stamp_path("/usr/local/bin/kubectl")]
    assert paths == ["/usr/local/bin/kubelet", stamps[0], "/usr/local/bin/kubectl", stamps[1]]
    assert contents == stamps
    assert stat_only == ["/usr/local/bin/kubelet", "/usr/local/bin/kubectl"]  # never hashed on a no-op run


def test_install_from_upstream_with_repository_sums() -> None:
    result = run(["kubelet", "kube-apiserver"])
    for name in ("kubelet", "kube-apiserver"):
        command = result.op(f"Install {name} v1.36.3").commands[0]
        assert f"{BASE}/{name} /usr/local/bin/{name} {SUMS[name]} 755 root:root" in command
    # the caller's files and the binaries' in one remote command (Platform aside, read for the arch)
    assert [name for name, _ in result.fact_reads] == ["facts.files.FileStates", "facts.platform.Platform"]
    assert sorted(result.host.data.installs) == ["kube-apiserver", "kubelet"]


def test_setting_table_adds_and_wins() -> None:
    data = {
        "kubernetes_sha256": {"v1.36.3": {"amd64": {"kubelet": "a" * 64, "kube-proxy": "b" * 64}}},
        "kubernetes_download_base_url": "http://198.18.0.1:8080/release/",
        "kubernetes_bin_dir": "/opt/k8s/bin/",
    }
    result = run(["kubelet", "kube-proxy", "kubectl"], data)
    mirror = "http://198.18.0.1:8080/release/v1.36.3/bin/linux/amd64"
    assert f"{mirror}/kubelet /opt/k8s/bin/kubelet {'a' * 64}" in result.op("Install kubelet").commands[0]
    assert f"{mirror}/kube-proxy /opt/k8s/bin/kube-proxy {'b' * 64}" in result.op("Install kube-proxy").commands[0]
    # the repository's sum is kept for what the setting does not name
    assert f"{mirror}/kubectl /opt/k8s/bin/kubectl {'3' * 64}" in result.op("Install kubectl").commands[0]


def test_missing_sum_refused_before_anything() -> None:
    with pytest.raises(DeployError, match=r"no sha256 for kube-scheduler v1.36.3 linux/amd64") as error:
        run(["kubelet", "kube-scheduler"])
    assert "kubernetes_sha256['v1.36.3']['amd64']['kube-scheduler']" in str(error.value)


def test_other_arch_and_version() -> None:
    data = {"kubernetes_version": "v1.36.4", "kubernetes_sha256": {"v1.36.4": {"arm64": {"kubelet": "c" * 64}}}}
    result = run(["kubelet"], data, {Platform: {**BOOKWORM, "arch": "arm64"}})
    assert "release/v1.36.4/bin/linux/arm64/kubelet" in result.op("Install kubelet v1.36.4").commands[0]
    with pytest.raises(DeployError, match="no sha256 for kubelet v1.36.4 linux/amd64"):
        run(["kubelet"], data)


def test_bad_setting_table_and_version() -> None:
    with pytest.raises(DeployError, match=r"kubernetes_sha256: v1.36.3/amd64/kubelet: 'nope'"):
        run(["kubelet"], {"kubernetes_sha256": {"v1.36.3": {"amd64": {"kubelet": "nope"}}}})
    # the same, and the version's format, checked without a host (the components that install binaries list it)
    good = dict(kb.DEFAULTS)
    assert kb.check(good) == []
    problems = kb.check(
        {**good, "kubernetes_version": "1.36.3", "kubernetes_sha256": {"v1.36.3": {"amd64": {"kubelet": "nope"}}}}
    )
    assert problems[0] == "kubernetes_version='1.36.3': a release tag like v1.36.3"
    assert "kubernetes_sha256: v1.36.3/amd64/kubelet: 'nope'" in problems[1]


def test_installed_binaries_are_noops() -> None:
    installed: dict[str, Any] = {
        "/usr/local/bin/kubelet": {
            "type": "file", "mode": "755", "user": "root", "group": "root", "sha256": None,
            "size": 100, "mtime": "1.000000000", "ctime": "2.000000000", "inode": "7",
        },
        stamp_path("/usr/local/bin/kubelet"): {
            "type": "file", "content": f"{SUMS['kubelet']} {SUMS['kubelet']} 100 1.000000000 2.000000000 7\n",
        },
    }  # fmt: skip
    result = run(["kubelet"], facts={FileStates: lambda paths, **_: {path: installed.get(path) for path in paths}})
    assert result.op("Install kubelet").commands == []
    # a binary replaced behind our back (another inode) is installed again
    moved = {**installed, "/usr/local/bin/kubelet": {**installed["/usr/local/bin/kubelet"], "inode": "8"}}
    result = run(["kubelet"], facts={FileStates: lambda paths, **_: {path: moved.get(path) for path in paths}})
    assert result.op("Install kubelet").commands != []


def test_verify_hashes_installed_binaries() -> None:
    seen: list[dict[str, Any]] = []

    def files(paths: list[str], **kwargs: Any) -> dict[str, Any]:
        seen.append(kwargs)
        return {path: None for path in paths}

    run(["kubelet"], {"kubernetes_verify_binary": True}, {FileStates: files})
    assert "/usr/local/bin/kubelet" not in seen[0]["stat_only"]


def test_lab_group_data_points_at_the_mirror_and_its_table(tmp_path: Path) -> None:
    """group_data/lab.py, loaded by pyinfra for a lab inventory: the mirror's release root and the lab's table."""
    lab_dir = tmp_path / "lab"
    node = {"name": "node1", "address": "198.18.20.11", "roles": ["control_plane", "etcd"], "zone": "lab-a"}
    state = {"ssh_key": "/k", "mirror_url": "http://198.18.20.1:8080", "registry": "198.18.20.1:5000", "nodes": [node]}
    lab_dir.mkdir()
    (lab_dir / "inventory.json").write_text(json.dumps(state))
    (lab_dir / "checksums.json").write_text(json.dumps({"node_exporter": {}, "etcd": {}}))
    checksums.write_table(lab_dir / "checksums" / "kubernetes.yaml", {"v1.36.3": {"amd64": {"kubelet": "d" * 64}}})
    command = [str(Path(sys.executable).parent / "pyinfra"), "inventories/lab.py", "debug-inventory", "--json"]
    env = {**os.environ, "SPECTRA_LAB_DIR": str(lab_dir)}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = {host["name"]: host for host in json.loads(proc.stdout)}["node1"]["data"]
    assert data["kubernetes_download_base_url"] == "http://198.18.20.1:8080/release"
    assert data["kubernetes_sha256"] == {"v1.36.3": {"amd64": {"kubelet": "d" * 64}}}
    assert "load_table" not in data
