from __future__ import annotations

import re
from typing import Any

import pytest
from pyinfra.api import DeployError

from deploys.components.container_runtime import COMPONENT, container_runtime
from deploys.settings import owners
from facts.cgroup import CgroupVersion
from facts.systemd import SystemdUnits
from tests.unit.component_facts import RUNNING, files_from_uploads, fresh
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

CONFIG = "/etc/containerd/.config.toml.spectra-new"


def test_packages_in_one_apt_call_and_v2_systemd_driver() -> None:
    result = run_deploy(container_runtime, facts=fresh())
    install = result.op("Install containerd").commands[-1]
    assert install.endswith("install --no-install-recommends containerd runc containernetworking-plugins")
    config = result.uploads[CONFIG]
    assert "version = 2" in config
    assert "SystemdCgroup = true" in config
    assert 'bin_dir = "/usr/lib/cni"' in config
    assert 'sandbox_image = "registry.k8s.io/pause:3.10"' in config
    assert "BinaryName" not in config
    assert "chmod 600" in result.op("containerd config").commands[-2]


@pytest.mark.parametrize("version", ["v1", "hybrid"])
def test_cgroupfs_driver_on_v1(version: str) -> None:
    result = run_deploy(container_runtime, facts=fresh({CgroupVersion: version}))
    assert "SystemdCgroup = false" in result.uploads[CONFIG]


def test_forced_driver() -> None:
    result = run_deploy(container_runtime, facts=fresh({CgroupVersion: "v1"}), data={"containerd_systemd_cgroup": True})
    assert "SystemdCgroup = true" in result.uploads[CONFIG]


def test_mirrors_and_credentials() -> None:
    data = {
        "containerd_registry_mirrors": {
            "docker.io": ["http://198.18.0.1:5000"],
            "registry.k8s.io": ["https://m"],
        },
        "containerd_registry_skip_verify": ["https://m"],
        "containerd_registry_auths": {"registry.example": {"username": "u", "password": 'p"w\\x'}},
    }
    result = run_deploy(container_runtime, facts=fresh(), data=data)
    config = result.uploads[CONFIG]
    assert 'config_path = "/etc/containerd/certs.d"' in config
    assert '[plugins."io.containerd.grpc.v1.cri".registry.configs."registry.example".auth]' in config
    assert 'password = "p\\"w\\\\x"' in config
    docker = result.uploads["/etc/containerd/certs.d/docker.io/.hosts.toml.spectra-new"]
    assert 'server = "https://registry-1.docker.io"' in docker
    assert '[host."http://198.18.0.1:5000"]' in docker and "skip_verify" not in docker
    k8s = result.uploads["/etc/containerd/certs.d/registry.k8s.io/.hosts.toml.spectra-new"]
    assert 'server = "https://registry.k8s.io"' in k8s and "skip_verify = true" in k8s


def test_restart_only_when_config_changes() -> None:
    first = run_deploy(container_runtime, facts=fresh())
    assert first.op("containerd running").commands == [
        "systemctl start containerd.service",
        "systemctl enable containerd.service",
    ]
    unit = {"containerd.service": {"id": "containerd.service", **RUNNING}}
    installed = {name: ["1"] for name in ["containerd", "runc", "containernetworking-plugins"]}
    changed = run_deploy(container_runtime, facts=fresh({SystemdUnits: unit, "deb.DebPackages": installed}))
    assert changed.op("containerd running").commands == ["systemctl restart containerd.service"]
    files = files_from_uploads(first.uploads, modes={"/etc/containerd/config.toml": "600"})
    same = run_deploy(
        container_runtime,
        facts=fresh({SystemdUnits: unit, "deb.DebPackages": installed, "facts.files.FileStates": files}),
    )
    assert same.commands == []


def test_upstream_without_sums_refused() -> None:
    with pytest.raises(DeployError, match="no sha256 for containerd 1.7.22 on amd64"):
        run_deploy(container_runtime, facts=fresh(), data={"container_runtime_install_method": "upstream"})


def test_upstream_downloads_verified() -> None:
    data = {
        "container_runtime_install_method": "upstream",
        "containerd_sha256": {"1.7.22": {"amd64": "a" * 64}},
        "runc_sha256": {"1.1.14": {"amd64": "b" * 64}},
        "cni_plugins_sha256": {"1.5.1": {"amd64": "c" * 64}},
        "containerd_download_url": "http://mirror/containerd-{version}-linux-{arch}.tar.gz",
    }
    result = run_deploy(container_runtime, facts=fresh(), data=data)
    command = result.op("Install containerd").commands[0]
    assert "http://mirror/containerd-1.7.22-linux-amd64.tar.gz /usr/local/bin " + "a" * 64 in command
    assert "runc.amd64 /usr/local/sbin/runc" in result.op("Install runc").commands[0]
    assert "/opt/cni/bin" in result.op("Install CNI plugins").commands[0]
    assert 'BinaryName = "/usr/local/sbin/runc"' in result.uploads[CONFIG]
    unit = result.uploads["/etc/systemd/system/.containerd.service.spectra-new"]
    assert "ExecStart=/usr/local/bin/containerd" in unit
    assert result.op("containerd running").commands[0] == "systemctl daemon-reload"


def test_component_reads_everything_in_one_command() -> None:
    result = run_component(COMPONENT, facts=fresh())
    assert len(result.fact_reads) == 1
    assert result.commands == run_deploy(container_runtime, facts=fresh()).commands


UPSTREAM = {"container_runtime_install_method": "upstream"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"container_runtime_install_method": "snap"}, "container_runtime_install_method='snap': not one of"),
        (
            {"containerd_registry_auths": {"registry.example": {"user": "u", "password": "hunter2"}}},
            "containerd_registry_auths['registry.example']: unknown keys ['user']",
        ),
        ({"containerd_registry_auths": {"registry.example": "hunter2"}}, "containerd_registry_auths['registry.exa"),
        ({"containerd_registry_mirrors": {"../../etc": ["https://m"]}}, "'../../etc' is not a registry host"),
        ({"containerd_registry_mirrors": {"docker.io": "https://m"}}, "containerd_registry_mirrors['docker.io']="),
        ({"containerd_registry_mirrors": {"docker.io": ["m.example"]}}, "a list of http(s) URLs"),
        ({"containerd_registry_servers": {"docker.io": "registry-1.docker.io"}}, "['docker.io']='registry-1."),
        ({**UPSTREAM, "runc_download_url": "https://m/runc.{architecture}"}, "runc_download_url='https://m/runc."),
        ({**UPSTREAM, "containerd_sha256": {"1.7.22": {"amd64": "abc"}}}, "containerd_sha256['1.7.22']['amd64']"),
        ({**UPSTREAM, "cni_plugins_sha256": {"1.5.1": "c" * 64}}, "cni_plugins_sha256={'1.5.1'"),
    ],
)
def test_bad_settings_refused_before_any_fact_or_operation(data: dict[str, Any], message: str) -> None:
    # no fact is given: reading one before the refusal would fail with MissingFact instead
    with pytest.raises(DeployError, match=re.escape(message)) as error:
        run_component(COMPONENT, facts={}, data=data)
    assert "hunter2" not in str(error.value)  # credentials are named, never shown


def test_checks_are_pure_and_download_settings_matter_for_upstream_only() -> None:
    defaults = {key: owner.default for key, owner in owners().items()}
    assert COMPONENT.problems(defaults) == []
    assert COMPONENT.problems({**defaults, **UPSTREAM}) == []  # no sums yet: the host's architecture decides
    assert COMPONENT.problems({**defaults, "runc_download_url": "{nothing}"}) == []
    lab_mirrors = {"registry.k8s.io": ["http://198.18.0.1:5000"], "docker.io": ["http://198.18.0.1:5000"]}
    assert COMPONENT.problems({**defaults, "containerd_registry_mirrors": lab_mirrors}) == []


def test_switched_off_reads_nothing_and_does_nothing() -> None:
    result = run_component(COMPONENT, facts={}, data={"container_runtime_enabled": False})
    assert result.fact_reads == [] and result.ops == []
