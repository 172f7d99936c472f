"""Facts read at prepare time: batched into one command, memoised, and re-read by operations once the run
has changed the host (deploys.prepare.prepared_facts, deploys.operations.managed.fresh)."""

from __future__ import annotations

from typing import Any

import pytest
from pyinfra.api import deploy
from pyinfra.connectors.util import CommandOutput

from deploys.component import run
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, config_state_kwargs
from deploys.prepare import prepared_fact, prepared_facts
from deploys.settings import Settings
from facts.cgroup import CgroupVersion
from facts.config_state import ConfigState
from facts.platform import Platform
from facts.swap import Swap
from facts.systemd import SystemdUnits
from tests.unit.component_facts import BOOKWORM
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

ACTIVE = {"id": "chrony.service", "load": "loaded", "active": "active", "sub": "running", "enabled": "enabled"}


def test_prepared_facts_reads_what_is_missing_in_one_command_and_memoises() -> None:
    seen: dict[str, Any] = {}

    @deploy("Reads")
    def reads() -> None:
        seen["first"] = prepared_facts(Platform, CgroupVersion)
        seen["second"] = prepared_facts(CgroupVersion, (Swap, {}))  # cgroup is known: Swap alone
        seen["again"] = prepared_fact(Platform)

    swap: dict[str, list[str]] = {"active": [], "fstab": []}
    result = run_deploy(reads, facts={Platform: BOOKWORM, CgroupVersion: "v2", Swap: swap})
    assert seen == {"first": [BOOKWORM, "v2"], "second": ["v2", swap], "again": BOOKWORM}
    assert result.fact_reads == [
        ("facts.combined.Facts", {"parts": [("facts.platform.Platform", {}), ("facts.cgroup.CgroupVersion", {})]}),
        ("facts.swap.Swap", {}),
    ]


def _execute_first_op_with_change(result: Any) -> None:
    """Pretend the execute stage ran the first operation and it changed the host."""
    first = result.host.op_hash_order[0]
    result.state.ops[result.host][first].operation_meta.set_complete(
        True, ["apt-get install chrony"], CommandOutput([])
    )
    result.state.is_executing = True


def _chrony_deploy() -> Any:
    @deploy("Chrony")
    def chrony() -> None:
        managed.apt_packages(name="Install chrony", packages=["chrony"], current={})
        managed.service(name="chrony", unit="chrony", restarted=True, current={"chrony.service": None})

    return chrony


def test_service_uses_the_prepared_state_while_nothing_changed() -> None:
    result = run_deploy(_chrony_deploy(), facts={})
    assert result.ops[1].commands == ["systemctl start chrony.service", "systemctl enable chrony.service"]
    assert result.fact_reads == []


def test_service_rereads_after_a_package_install_and_restarts_what_the_package_started() -> None:
    """The package starts chrony with its own configuration: a start would leave ours unread."""
    result = run_deploy(_chrony_deploy(), facts={SystemdUnits: {"chrony.service": ACTIVE}})
    _execute_first_op_with_change(result)
    second = result.state.get_op_data_for_host(result.host, result.host.op_hash_order[1])
    from pyinfra.context import ctx_host, ctx_state

    with ctx_state.use(result.state), ctx_host.use(result.host):
        commands = [str(command) for command in second.command_generator()]
    assert commands == ["systemctl restart chrony.service"]
    assert result.fact_reads[-1] == ("facts.systemd.SystemdUnits", {"units": ["chrony.service"]})


def test_host_changed_this_run() -> None:
    result = run_deploy(_chrony_deploy(), facts={})
    from pyinfra.context import ctx_host, ctx_state

    with ctx_state.use(result.state), ctx_host.use(result.host):
        assert not managed.host_changed_this_run()  # prepare: nothing ran
        result.state.is_executing = True
        assert not managed.host_changed_this_run()  # executing, nothing complete yet
        _execute_first_op_with_change(result)
        assert managed.host_changed_this_run()


def test_config_files_with_prepared_state_reads_nothing_on_a_noop() -> None:
    file = ConfigFile(path="/etc/x.conf", content="x\n")
    current = {
        "files": {"/etc/x.conf": {"type": "file", "mode": "644", "user": "root", "group": "root",
                                  "sha256": file.sha256}},
        "units": {},
    }  # fmt: skip
    result = run_deploy(config_files, files=[file], current=current, facts={})
    assert result.commands == [] and result.fact_reads == []
    assert config_state_kwargs([file], running_units=["x.service"]) == {
        "paths": ["/etc/x.conf"],
        "units": ["x.service"],
    }


def test_config_files_without_prepared_state_reads_its_fact() -> None:
    file = ConfigFile(path="/etc/x.conf", content="x\n")
    result = run_deploy(config_files, files=[file], facts={ConfigState: {"files": {}, "units": {}}})
    assert [name for name, _ in result.fact_reads] == ["facts.config_state.ConfigState"]
    assert result.commands[0] == "mkdir -p /etc"


def _hardening_cases() -> list[Any]:
    from pyinfra.facts.deb import DebPackages

    from deploys.components import audit, auto_updates, file_permissions, firewall, hardening_ssh, hardening_sysctl
    from facts.connection import DeploySource
    from facts.files import FileStates
    from facts.security import AuditSupport, SshdState
    from facts.sysctl import SysctlValues

    support = {"can_load": False, "reason": "container"}
    sshd: dict[str, Any] = {"dropin": None, "package_version": "1:9.2p1-2", "version": (9, 2), "effective": {}}
    empty: dict[str, Any] = {"files": {}, "units": {}}
    return [
        (hardening_ssh.COMPONENT, {SshdState: sshd}),
        (hardening_sysctl.COMPONENT, {ConfigState: empty, SysctlValues: {}}),
        (firewall.COMPONENT, {ConfigState: empty, DebPackages: {}, DeploySource: None}),
        (audit.COMPONENT, {ConfigState: empty, DebPackages: {}, AuditSupport: support}),
        (auto_updates.COMPONENT, {ConfigState: empty, DebPackages: {}}),
        (file_permissions.COMPONENT, {FileStates: lambda paths, **_: dict.fromkeys(paths)}),
    ]


HARDENING_CASES = _hardening_cases()


@pytest.mark.parametrize("component, facts", HARDENING_CASES, ids=[component.name for component, _ in HARDENING_CASES])
def test_fact_requests_are_exactly_what_the_component_reads(component: Any, facts: Any) -> None:
    """node.py reads every hardening component's facts in one command: the components then read nothing."""
    result = run_component(component, facts=facts, data={"ssh_hostname": "10.0.0.1", "roles": ["control_plane"]})
    assert len(result.fact_reads) == 1, result.fact_reads
    assert result.ops  # the component did its work from the prefetched values


def _components() -> list[Any]:
    """Every component record in deploys/components/ (node.py's and cluster.py's alike)."""
    import importlib

    from deploys.settings import component_modules

    found = [getattr(importlib.import_module(name), "COMPONENT", None) for name in component_modules()]
    return [component for component in found if component is not None]


@pytest.mark.parametrize("component", _components(), ids=lambda component: component.name)
def test_fact_requests_empty_when_disabled(component: Any) -> None:
    assert component.switch

    @deploy("Reads")
    def reads() -> None:
        assert not component.should_run(Settings())
        run([component])

    result = run_deploy(reads, facts={}, data={component.switch: False})
    assert result.fact_reads == [] and result.ops == []


@pytest.mark.parametrize("name", ["os_prerequisites", "container_runtime", "node_exporter"])
def test_service_component_fact_requests_cover_everything_it_reads(name: str) -> None:
    """node.py reads these components' facts with the hardening ones (and its base facts): the components then
    read nothing."""
    import importlib

    from tests.unit.component_facts import fresh

    component = importlib.import_module(f"deploys.components.{name}").COMPONENT

    @deploy("Like node.py")
    def like_node() -> None:
        run([component], base_facts=[Platform])

    result = run_deploy(like_node, facts=fresh(), data={"ssh_hostname": "10.0.0.1", "roles": ["workers"]})
    assert len(result.fact_reads) == 1, result.fact_reads
    assert result.ops
