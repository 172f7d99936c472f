"""group_data/inventory validation (spectra_cli/validation.py), on in-memory pyinfra inventories.

The file-loading half (pyinfra's loader) is covered through `spectra validate` in test_inventory_cli.py;
importing pyinfra_cli here would gevent-patch the whole test process.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Inventory

from inventories.grouping import HostRecord, build_groups
from spectra_cli.schema import Schema, load_schema, type_matches, types_from_hint
from spectra_cli.validation import GroupDataFile, ValidationResult, check_loaded

pytestmark = pytest.mark.unit

_counter = itertools.count()

COMPONENTS = {
    "kube": """
        from typing import Any
        DEFAULTS: dict[str, Any] = {
            "kube_enabled": True,
            "kube_version": "1.31.2",
            "kube_max_pods": 110,
            "kube_debug": False,
            "kube_ratio": 0.5,
            "kube_extra_args": [],
            "kube_api_url": None,
            "kube_labels": None,
        }
        REQUIRED = {"kube_api_url"}
        TYPES = {"kube_api_url": str, "kube_labels": dict}
    """,
    "etcdc": """
        DEFAULTS = {"etcdc_enabled": True, "etcdc_token": None}
        REQUIRED = {"etcdc_token"}
        ROLES = {"etcd"}
    """,
    "helpers": """
        def helper():
            return 1
    """,
}


def _package(root: Path, modules: dict[str, str]) -> str:
    name = f"spectra_test_components_{next(_counter)}"
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Schema]:
    root = tmp_path_factory.mktemp("components")
    sys.path.insert(0, str(root))
    try:
        yield load_schema(_package(root, COMPONENTS))
    finally:
        sys.path.remove(str(root))


def _hosts() -> list[HostRecord]:
    return [
        HostRecord("cp1", {"ssh_hostname": "192.0.2.1"}, roles=("control_plane", "etcd"), zone="z-a"),
        HostRecord("cp2", {"ssh_hostname": "192.0.2.2"}, roles=("control_plane", "etcd"), zone="z-b"),
        HostRecord("cp3", {"ssh_hostname": "192.0.2.3"}, roles=("control_plane", "etcd"), zone="z-c"),
        HostRecord("wk1", {"ssh_hostname": "192.0.2.4"}, roles=("workers",), zone="z-a"),
        HostRecord("wk2", {"ssh_hostname": "192.0.2.5"}, roles=("workers",), zone="z-b"),
    ]


GOOD = {"all": {"kube_api_url": "https://10.0.0.1:6443", "etcdc_token": "t0k3n"}}


def _check(
    schema: Schema,
    records: Sequence[HostRecord] | None = None,
    files: dict[str, dict[str, Any]] | None = None,
    groups: dict[str, list[tuple[str, dict[str, Any]]]] | None = None,
    **kwargs: Any,
) -> ValidationResult:
    """Build the inventory the way pyinfra does (group data under groups, all data separate)."""
    files = GOOD if files is None else files
    groups = dict(groups or build_groups(records if records is not None else _hosts(), inventory_group="inv"))
    all_hosts = groups.pop("all")
    inventory = Inventory(
        (all_hosts, dict(files.get("all", {}))),
        **{name: (members, dict(files.get(name, {}))) for name, members in groups.items()},
    )
    group_files = [GroupDataFile(f"group_data/{group}.py", group, data) for group, data in files.items()]
    return check_loaded(ValidationResult("inventories/inv.py"), inventory, schema, group_files, **kwargs)


def _messages(result: ValidationResult, level: str = "error") -> list[str]:
    return [str(issue) for issue in result.issues if issue.level == level]


def test_clean_inventory_passes(schema: Schema) -> None:
    result = _check(schema)
    assert result.ok, _messages(result)
    assert result.selected == ["cp1", "cp2", "cp3", "wk1", "wk2"]
    assert list(result.zones()) == ["az_z_a", "az_z_b", "az_z_c"]


def test_schema_knows_every_source(schema: Schema) -> None:
    for key in ("roles", "zone", "etcd_topology", "ssh_known_hosts_file", "ssh_paramiko_connect_kwargs", "_sudo"):
        assert key in schema.keys
    assert "kube_version" in schema.keys and "etcdc_token" in schema.keys
    assert "name" not in schema.keys  # a global argument, not host data
    assert not schema.problems


def test_unknown_key_names_file_key_and_suggestion(schema: Schema) -> None:
    result = _check(schema, files={**GOOD, "workers": {"kube_verison": "1.30"}})
    assert _messages(result) == [
        "error: group_data/workers.py: kube_verison: unknown key (did you mean 'kube_version'?)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("kube_max_pods", True, "expected int, got bool True"),
        ("kube_debug", 1, "expected bool, got int 1"),
        ("kube_version", 1.31, "expected str, got float 1.31"),
        ("kube_extra_args", "--v=2", "expected list or tuple"),
        ("kube_labels", ["a"], "expected dict or None"),
        ("ssh_port", "22", "expected int, got str '22'"),
        ("_sudo", "yes", "expected bool"),
        ("etcd_topology", "externel", "'externel' is not one of 'stacked', 'external'"),
        ("ssh_strict_host_key_checking", "maybe", "'maybe' is not one of"),
    ],
)
def test_wrong_types(schema: Schema, key: str, value: Any, expected: str) -> None:
    result = _check(schema, files={**GOOD, "az_z_a": {key: value}})
    (message,) = _messages(result)
    assert message.startswith(f"error: group_data/az_z_a.py: {key}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("kube_ratio", 1), ("kube_extra_args", ("a", "b")), ("kube_labels", None), ("ssh_port", 2222)],
)
def test_accepted_types(schema: Schema, key: str, value: Any) -> None:
    assert _check(schema, files={**GOOD, "workers": {key: value}}).ok


def test_type_rules() -> None:
    assert not type_matches(True, (int,)) and not type_matches(0, (bool,))
    assert type_matches(3, (float,)) and not type_matches(None, (str,))
    from collections.abc import Callable, Iterable, Mapping

    assert types_from_hint(Mapping[str, str]) == (dict,)
    assert types_from_hint(Iterable[int]) == (list, tuple)
    assert types_from_hint(int | float) == (int, float)
    assert types_from_hint(Callable[[], bool] | None) is None


def test_missing_required_lists_hosts_and_respects_roles_and_switch(schema: Schema) -> None:
    etcdc, kube = schema.required
    assert _messages(_check(schema, files={})) == [
        f"error: {etcdc.source}: etcdc_token: required but has no value on 3 host(s): cp1, cp2, cp3; "
        "set it in group_data (all.py, a role, zone or env file), or set etcdc_enabled = False",
        f"error: {kube.source}: kube_api_url: required but has no value on 5 host(s): cp1, cp2, cp3, wk1, wk2; "
        "set it in group_data (all.py, a role, zone or env file), or set kube_enabled = False",
    ]
    # etcdc only runs on etcd hosts; kube switched off on workers
    files: dict[str, dict[str, Any]] = {
        "etcd": {"etcdc_token": "x"},
        "control_plane": {"kube_api_url": "u"},
        "workers": {"kube_enabled": False},
    }
    assert _check(schema, files=files).ok


def test_inventory_host_data_and_override_data_are_checked(schema: Schema) -> None:
    records = [*_hosts()[:4], HostRecord("wk2", {"ssh_hostname": "h", "ssh_prot": 22}, roles=("workers",))]
    result = _check(schema, records, override_data={"kube_max_pod": 1})
    assert _messages(result) == [
        "error: inventories/inv.py (host wk2): ssh_prot: unknown key (did you mean 'ssh_port'?)",
        "error: --data: kube_max_pod: unknown key (did you mean 'kube_max_pods'?)",
    ]


def test_group_file_named_like_a_typo(schema: Schema) -> None:
    result = _check(schema, files={**GOOD, "worker": {}, "az_z_q": {}, "env_dev": {}})
    assert _messages(result) == [
        "error: group_data/worker.py: no group 'worker' in this inventory (did you mean 'workers'?)"
    ]


def _roles(*hosts: tuple[str, tuple[str, ...]], topology: dict[str, str] | None = None) -> list[HostRecord]:
    return [
        HostRecord(name, {"ssh_hostname": name, **({"etcd_topology": topology[name]} if topology else {})}, roles)
        for name, roles in hosts
    ]


def test_stacked_etcd_needs_control_plane_and_back(schema: Schema) -> None:
    records = _roles(("a", ("control_plane",)), ("b", ("etcd",)), ("c", ("control_plane", "etcd")))
    messages = _messages(_check(schema, records))
    assert any("host a: roles: control_plane without etcd" in m for m in messages)
    assert any("host b: roles: etcd without control_plane" in m for m in messages)
    assert not any("host c:" in m for m in messages)


def test_external_etcd_hosts_are_dedicated(schema: Schema) -> None:
    records = _roles(("cp", ("control_plane",)), ("e1", ("etcd",)), ("e2", ("etcd", "workers")))
    files = {**GOOD, "all": {**GOOD["all"], "etcd_topology": "external"}}
    messages = _messages(_check(schema, records, files=files))
    assert messages == [
        "error: host e2: roles: etcd_topology is 'external': etcd hosts are dedicated, not also workers"
    ]


def test_hosts_must_agree_on_topology(schema: Schema) -> None:
    records = _roles(
        ("a", ("control_plane", "etcd")),
        ("b", ("etcd",)),
        topology={"a": "stacked", "b": "external"},
    )
    messages = _messages(_check(schema, records))
    assert "error: inventory: etcd_topology: hosts disagree (external: b; stacked: a)" in messages


def test_unknown_and_custom_roles(schema: Schema) -> None:
    records = [*_hosts(), *_roles(("x", ("wrokers",)), ("y", ("ingress",)))]
    result = _check(schema, records)
    assert _messages(result) == ["error: host x: roles: unknown role 'wrokers' (did you mean 'workers'?)"]
    assert "warning: host y: roles: custom role 'ingress' (known: control_plane, etcd, workers, monitoring, edge)" in (
        _messages(result, "warning")
    )


def test_role_groups_must_match_roles_data(schema: Schema) -> None:
    groups = build_groups(_hosts())
    groups["etcd"] = [*groups["etcd"], ("wk1", {})]  # hand-written inventory puts wk1 in etcd
    messages = _messages(_check(schema, groups=groups))
    assert "error: host wk1: roles: is in group 'etcd' but 'etcd' is not in its roles ['workers']" in messages


def test_a_host_in_two_zones(schema: Schema) -> None:
    groups = build_groups(_hosts())
    groups["az_z_b"] = [*groups["az_z_b"], ("wk1", {})]
    messages = _messages(_check(schema, groups=groups))
    assert "error: host wk1: zone: is in several zone groups: az_z_a, az_z_b" in messages


def test_cluster_warnings(schema: Schema) -> None:
    records = _roles(("a", ("control_plane", "etcd")), ("b", ("control_plane", "etcd")), ("c", ()))
    warnings = _messages(_check(schema, records), "warning")
    assert "warning: host c: roles: no role: role-based deploys will skip this host" in warnings
    assert any("2 etcd members" in w for w in warnings)


def test_limit_and_exclude(schema: Schema) -> None:
    assert _check(schema, limit=["az_z_a"]).selected == ["cp1", "wk1"]
    assert _check(schema, limit=["wk*"], exclude=["az_z_b"]).selected == ["wk1"]
    result = _check(schema, limit=["az_z_d", "workers"])
    assert _messages(result) == ["error: --limit: 'az_z_d' matches no host or group (did you mean 'az_z_c'?)"]
    result = _check(schema, limit=["workers"], exclude=["workers"])
    assert "error: --limit/--exclude: no hosts left: refusing to run on zero hosts" in _messages(result)


def test_zero_hosts(schema: Schema) -> None:
    result = check_loaded(ValidationResult("inventories/empty.py"), Inventory(([], {})), schema)
    assert _messages(result) == ["error: inventories/empty.py: inventory has no hosts: refusing to run on zero hosts"]


def test_component_problems_are_reported(tmp_path: Path) -> None:
    name = _package(
        tmp_path,
        {
            "broken": "raise RuntimeError('half written')",
            "badtypes": "DEFAULTS = {'b_x': 1}\nTYPES = {'b_x': str, 'b_y': int}\nREQUIRED = {'b_z'}",
            "notdict": "DEFAULTS = ['a']",
            "clash": "DEFAULTS = {'ssh_port': 'twenty-two'}",
        },
    )
    sys.path.insert(0, str(tmp_path))
    try:
        problems = {(Path(where).name, key, message) for where, key, message in load_schema(name).problems}
    finally:
        sys.path.remove(str(tmp_path))
    assert ("broken.py", None, "cannot import component: RuntimeError: half written") in problems
    assert ("badtypes.py", "b_y", "in TYPES but not in DEFAULTS") in problems
    assert ("badtypes.py", "b_z", "in REQUIRED but not in DEFAULTS") in problems
    assert ("badtypes.py", "b_x", "default 1 does not match TYPES (str)") in problems
    assert ("notdict.py", "DEFAULTS", "must be a dict of setting name -> default") in problems
    assert ("clash.py", "ssh_port", "also defined by pyinfra ssh connector with type int") in problems


def test_no_components_package_is_fine() -> None:
    schema = load_schema("spectra_no_such_components_package")
    assert not schema.problems and "ssh_port" in schema.keys
