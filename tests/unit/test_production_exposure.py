"""Production hosts open to anywhere: refused by `spectra validate` and by every deploy unless
`firewall_exposure_allowed` records why (deploys/components/firewall.py `exposures`).

In-memory inventories with the real components' schema for the validation messages; the harness for the
deploy's refusal at prepare; one `spectra deploy` process on @fake hosts to show it never reaches pyinfra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import DeployError, Inventory
from pyinfra.facts.deb import DebPackages

from deploys.components.firewall import COMPONENT, exposures
from facts.config_state import ConfigState
from facts.connection import DeploySource
from inventories.grouping import HostRecord, build_groups
from spectra_cli.schema import Schema, load_schema
from spectra_cli.validation import GroupDataFile, ValidationResult, check_loaded
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHECKED = "(checked by deploys/components/firewall.py)"
HINT = "narrow {key}, or allow it with firewall_exposure_allowed = {{'{key}': '<why it must be open to anywhere>'}}"
NARROW = ["10.0.0.0/8", "fd00::/8"]
SSH_REFUSED = (
    "error: hosts cp1, wk1: firewall_admin_cidrs: SSH (tcp port 22) is open to anywhere (0.0.0.0/0, ::/0) in "
    "production (group env_prod; the value is the default): refused; "
    + HINT.format(key="firewall_admin_cidrs")
    + f" in group data {CHECKED}"
)
API_REFUSED = (
    "error: host cp1: firewall_apiserver_cidrs: the API server (tcp port 6443) is open to anywhere (0.0.0.0/0, "
    "::/0) in production (group env_prod; the value is the default): refused; "
    + HINT.format(key="firewall_apiserver_cidrs")
    + f" in group data {CHECKED}"
)
NODEPORT_REFUSED = (
    "error: hosts cp1, wk1: firewall_nodeport_cidrs: the Service NodePort range (tcp and udp 30000-32767) is open "
    "to anywhere (0.0.0.0/0, ::/0) in production (group env_prod; the value is the default): refused; "
    + HINT.format(key="firewall_nodeport_cidrs")
    + f" in group data {CHECKED}"
)
REASON = "break-glass access from anywhere, decided by ops (ticket OPS-42); keys only, throttled"


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


def _records(env: str | None = "prod") -> list[HostRecord]:
    return [
        HostRecord("cp1", {"ssh_hostname": "10.0.0.1"}, roles=("control_plane", "etcd"), zone="z-a", env=env),
        HostRecord("wk1", {"ssh_hostname": "10.0.0.2"}, roles=("workers",), zone="z-b", env=env),
    ]


def _check(
    schema: Schema,
    files: dict[str, dict[str, Any]],
    env: str | None = "prod",
    override: dict[str, Any] | None = None,
) -> ValidationResult:
    """The inventory the way pyinfra builds it, group_data/<group>.py for each entry of ``files``."""
    files = {"all": {"fluentd_enabled": False}, **files}
    groups = build_groups(_records(env), inventory_group="inv")
    all_hosts = groups.pop("all")
    inventory = Inventory(
        (all_hosts, dict(files["all"])),
        override_data=dict(override or {}),
        **{name: (members, dict(files.get(name, {}))) for name, members in groups.items()},
    )
    group_files = [GroupDataFile(f"group_data/{group}.py", group, data) for group, data in files.items()]
    return check_loaded(ValidationResult("inventories/inv.py"), inventory, schema, group_files, override_data=override)


def _lines(result: ValidationResult, level: str = "error") -> list[str]:
    return [str(issue) for issue in result.issues if issue.level == level]


def test_prod_open_to_anywhere_is_refused_naming_hosts_key_source_and_the_allowance(schema: Schema) -> None:
    result = _check(schema, {})
    assert not result.ok
    assert _lines(result) == [SSH_REFUSED, API_REFUSED, NODEPORT_REFUSED]


def test_narrowed_prod_passes(schema: Schema) -> None:
    narrow = {key: NARROW for key in ("firewall_admin_cidrs", "firewall_apiserver_cidrs", "firewall_nodeport_cidrs")}
    result = _check(schema, {"env_prod": narrow})
    assert result.ok, _lines(result)
    assert not _lines(result, "warning")


def test_allowed_with_a_reason_is_a_warning_printing_it(schema: Schema) -> None:
    env_prod = {
        "firewall_apiserver_cidrs": NARROW,
        "firewall_nodeport_cidrs": NARROW,
        "firewall_admin_cidrs": ["0.0.0.0/0", "::/0"],
        "firewall_exposure_allowed": {"firewall_admin_cidrs": REASON},
    }
    result = _check(schema, {"env_prod": env_prod})
    assert result.ok, _lines(result)
    assert _lines(result, "warning") == [
        "warning: hosts cp1, wk1: firewall_admin_cidrs: SSH (tcp port 22) is open to anywhere (0.0.0.0/0, ::/0) in "
        "production (group env_prod; the value is set in group_data/env_prod.py): allowed by "
        f"firewall_exposure_allowed: {REASON!r} (firewall_exposure_allowed set in group_data/env_prod.py)"
    ]


@pytest.mark.parametrize("env", ["staging", "lab", None])
def test_other_environments_are_untouched(schema: Schema, env: str | None) -> None:
    result = _check(schema, {"all": {"fluentd_enabled": False, "firewall_policy": "accept"}}, env=env)
    assert result.ok, _lines(result)
    assert not [line for line in result.issues if "production" in str(line)]


def test_ipv6_anywhere_alone_is_refused(schema: Schema) -> None:
    narrow = {"firewall_apiserver_cidrs": NARROW, "firewall_nodeport_cidrs": NARROW}
    result = _check(schema, {"env_prod": {**narrow, "firewall_admin_cidrs": ["10.0.0.0/8", "::/0"]}})
    assert _lines(result) == [
        "error: hosts cp1, wk1: firewall_admin_cidrs: SSH (tcp port 22) is open to anywhere (::/0) in production "
        "(group env_prod; the value is set in group_data/env_prod.py): refused; "
        + HINT.format(key="firewall_admin_cidrs")
        + f" in group data {CHECKED}"
    ]


def test_policy_accept_and_command_line_values_are_judged(schema: Schema) -> None:
    narrow = {key: NARROW for key in ("firewall_admin_cidrs", "firewall_apiserver_cidrs", "firewall_nodeport_cidrs")}
    result = _check(schema, {"env_prod": narrow}, override={"firewall_policy": "accept"})
    assert _lines(result) == [
        "error: hosts cp1, wk1: firewall_policy: every port is open to anywhere (the input policy 'accept' drops "
        "nothing) in production (group env_prod; the value is set by --data): refused; "
        + HINT.format(key="firewall_policy")
        + f" in group data {CHECKED}"
    ]


def test_production_environment_names_are_a_setting(schema: Schema) -> None:
    assert [issue.key for issue in _check(schema, {}, env="production").errors] == [
        "firewall_admin_cidrs",
        "firewall_apiserver_cidrs",
        "firewall_nodeport_cidrs",
    ]
    live = {"all": {"fluentd_enabled": False, "firewall_production_envs": ["live"]}}
    assert _check(schema, live).ok  # env_prod is no longer production
    assert len(_check(schema, live, env="live").errors) == 3
    bad = _check(schema, {"all": {"fluentd_enabled": False, "firewall_production_envs": ["Prod"]}}, env="staging")
    assert any("firewall_production_envs: 'Prod' is not an environment name" in line for line in _lines(bad))


@pytest.mark.parametrize(
    ("allowed", "problem"),
    [
        (
            {"firewall_admin_cidrs": ""},
            "firewall_exposure_allowed['firewall_admin_cidrs']='': the reason must be non-empty text "
            "(why it is open to anywhere, and who decided)",
        ),
        (
            {"firewall_admin_cidrs": "   "},
            "firewall_exposure_allowed['firewall_admin_cidrs']='   ': the reason must be non-empty text "
            "(why it is open to anywhere, and who decided)",
        ),
        (
            {"firewall_admin_cidrs": True},
            "firewall_exposure_allowed['firewall_admin_cidrs']=True: the reason must be non-empty text "
            "(why it is open to anywhere, and who decided)",
        ),
        (
            {"gateway_cidrs": "public by design"},
            "firewall_exposure_allowed: 'gateway_cidrs' is not a setting the production rule judges (one of "
            "firewall_admin_cidrs, firewall_apiserver_cidrs, firewall_nodeport_cidrs, firewall_policy)",
        ),
    ],
)
def test_the_allowance_is_checked(schema: Schema, allowed: dict[str, Any], problem: str) -> None:
    narrow = {"firewall_apiserver_cidrs": NARROW, "firewall_nodeport_cidrs": NARROW}
    result = _check(schema, {"env_prod": {**narrow, "firewall_exposure_allowed": allowed}})
    lines = _lines(result)
    assert (
        f"error: hosts cp1, wk1: firewall: {problem} (checked by deploys/components/firewall.py; "
        "set in group_data/env_prod.py)"
    ) in lines
    assert SSH_REFUSED in lines  # an allowance without a reason allows nothing
    # on a host that is not production the allowance is checked all the same
    staging = _check(schema, {"env_staging": {"firewall_exposure_allowed": allowed}}, env="staging")
    assert any(problem in line for line in _lines(staging))


def test_the_rule_is_pure_and_reads_groups() -> None:
    settings = {
        "firewall_production_envs": ["prod"],
        "firewall_exposure_allowed": {},
        "firewall_policy": "drop",
        "firewall_admin_cidrs": ["0.0.0.0/0"],
        "firewall_apiserver_cidrs": ["0.0.0.0/0"],
        "firewall_nodeports_enabled": False,
        "firewall_nodeport_cidrs": ["0.0.0.0/0"],
        "roles": ["workers"],  # no API server here
        "ssh_port": 2222,
        "apiserver_port": 6443,
        "cluster_nodeport_range": "30000-32767",
    }
    assert exposures(settings, ["inv", "workers"]) == []
    (found,) = exposures(settings, ["inv", "env_prod", "workers"])
    assert (found.key, found.what, found.group, found.reason) == (
        "firewall_admin_cidrs",
        "SSH (tcp port 2222) is open to anywhere (0.0.0.0/0)",
        "env_prod",
        None,
    )
    assert exposures({**settings, "firewall_admin_cidrs": ["0.0.0.1/1", "::1/1"]}, ["env_prod"]) == []


FACTS = {
    DebPackages: {"nftables": {"1.0.6-2"}},
    ConfigState: {"files": {}, "units": {}},
    DeploySource: {"client": "10.0.9.9", "server": "10.0.0.11", "server_port": 22},
}
BASE = {
    "roles": ["workers"],
    "firewall_control_plane_cidrs": ["10.0.0.10/32"],
    "firewall_node_cidrs": ["10.0.0.0/24"],
    "firewall_monitoring_cidrs": [],
    "firewall_nodeport_cidrs": NARROW,
}


def test_the_deploy_refuses_at_prepare_before_any_operation() -> None:
    with pytest.raises(DeployError) as raised:
        run_component(COMPONENT, facts=FACTS, data=BASE, groups=["env_prod"])
    assert str(raised.value) == (
        "testhost: refused, open to anywhere in production:\n  firewall: firewall_admin_cidrs: SSH (tcp port 22) "
        "is open to anywhere (0.0.0.0/0, ::/0) in production (group env_prod): refused; "
        + HINT.format(key="firewall_admin_cidrs")
        + " in group data"
    )


def test_the_deploy_goes_on_when_allowed_or_not_production() -> None:
    allowed = {**BASE, "firewall_exposure_allowed": {"firewall_admin_cidrs": REASON}}
    assert run_component(COMPONENT, facts=FACTS, data=allowed, groups=["env_prod"]).commands
    assert run_component(COMPONENT, facts=FACTS, data=BASE, groups=["env_staging"]).commands
    off = {**BASE, "firewall_enabled": False}
    assert run_component(COMPONENT, facts=FACTS, data=off, groups=["env_prod"]).commands == []


INVENTORY = """
    from inventories.grouping import HostRecord, build_groups, file_group

    _records = [HostRecord("@fake/cp1", {"ssh_hostname": "10.0.0.1"}, roles=("control_plane", "etcd"), env="prod")]
    globals().update(build_groups(_records, inventory_group=file_group(__file__)))
"""


def test_spectra_deploy_refuses_before_pyinfra_runs(tmp_path: Path) -> None:
    (tmp_path / "group_data").mkdir()
    (tmp_path / "inv.py").write_text(textwrap.dedent(INVENTORY))
    (tmp_path / "group_data" / "all.py").write_text("fluentd_enabled = False\n")
    # over the repository's group_data/env_prod.py (the working directory's, read first), which narrows it
    (tmp_path / "group_data" / "env_prod.py").write_text('firewall_admin_cidrs = ["0.0.0.0/0", "::/0"]\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPECTRA_")}
    env["SPECTRA_LAB_DIR"] = str(tmp_path / "no-lab")
    env["PYINFRA_PROGRESS"] = "off"
    command = [str(BIN / "spectra"), "deploy", str(tmp_path / "inv.py"), "deploys/node.py"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "error: host @fake/cp1: firewall_admin_cidrs: SSH (tcp port 22) is open to anywhere" in done.stderr
    assert "error(s), nothing was run" in done.stderr
    assert "--> " not in done.stdout + done.stderr  # pyinfra never started
