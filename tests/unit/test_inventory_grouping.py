"""The group names every inventory shares (inventories/grouping.py)."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import InventoryError

from inventories.grouping import (
    HostRecord,
    build_groups,
    env_group,
    file_group,
    normalise_identifier,
    normalise_role,
    parse_roles,
    region_group,
    zone_group,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("zone", "group"),
    [
        ("us-east-1a", "az_us_east_1a"),
        ("lab-a", "az_lab_a"),
        ("europe-west1-b", "az_europe_west1_b"),
        ("westeurope-1", "az_westeurope_1"),
        ("dc1-r01", "az_dc1_r01"),
        ("az_us_east_1a", "az_us_east_1a"),
    ],
)
def test_zone_groups(zone: str, group: str) -> None:
    assert zone_group(zone) == group


def test_region_and_env_groups() -> None:
    assert region_group("us-east-1") == "region_us_east_1"
    assert env_group("Prod") == "env_prod"
    assert file_group("/x/inventories/aws_us_east_1.py") == "aws_us_east_1"


@pytest.mark.parametrize(
    ("role", "normal"),
    [
        ("control_plane", "control_plane"),
        ("Control-Plane", "control_plane"),
        ("controlplane", "control_plane"),
        ("master", "control_plane"),
        ("worker", "workers"),
        ("Workers", "workers"),
        ("etcd", "etcd"),
        ("Ingress Nodes", "ingress_nodes"),
        ("3d-render", "g3d_render"),
    ],
)
def test_roles_normalised(role: str, normal: str) -> None:
    assert normalise_role(role) == normal


def test_identifiers_never_start_with_underscore() -> None:
    # pyinfra ignores inventory variables starting with "_"
    assert normalise_identifier("__x__") == "x"
    with pytest.raises(InventoryError):
        normalise_identifier("---")


def test_parse_roles_orders_and_dedupes() -> None:
    assert parse_roles("workers, control_plane etcd,worker") == ("control_plane", "etcd", "workers")
    assert parse_roles(["monitoring", "zeta", "alpha"]) == ("monitoring", "alpha", "zeta")
    assert parse_roles(None) == ()


def _records() -> list[HostRecord]:
    return [
        HostRecord("w1", {"ssh_hostname": "192.0.2.2"}, roles=("worker",), zone="z-b", region="r", env="prod"),
        HostRecord(
            "cp1",
            {"ssh_hostname": "192.0.2.1"},
            roles=("etcd", "control_plane"),
            zone="z-a",
            region="r",
            env="prod",
            extra_groups=("type_m5",),
        ),
        HostRecord("bare", {"ssh_hostname": "192.0.2.3"}),
    ]


def test_build_groups_order_is_precedence_order() -> None:
    groups = build_groups(_records(), inventory_group="inv")
    assert list(groups) == [
        "all",
        "inv",
        "env_prod",
        "region_r",
        "az_z_a",
        "az_z_b",
        "type_m5",
        "control_plane",
        "etcd",
        "workers",
    ]
    assert [name for name, _ in groups["all"]] == ["w1", "cp1", "bare"]  # hosts without groups stay


def test_host_data_carries_roles_zone_region_env() -> None:
    groups = build_groups(_records())
    data = dict(groups["control_plane"])["cp1"]
    assert data == {
        "ssh_hostname": "192.0.2.1",
        "roles": ["control_plane", "etcd"],
        "zone": "z-a",
        "region": "r",
        "env": "prod",
    }
    assert dict(groups["all"])["bare"] == {"ssh_hostname": "192.0.2.3", "roles": []}


def test_duplicate_names_and_empty_inventories_are_errors() -> None:
    with pytest.raises(InventoryError, match="more than once"):
        build_groups([HostRecord("a"), HostRecord("a")])
    with pytest.raises(InventoryError, match="no hosts"):
        build_groups([])


def test_extra_groups_cannot_shadow_reserved_names() -> None:
    with pytest.raises(InventoryError, match="clashes"):
        build_groups([HostRecord("a", extra_groups=("az_fake",))])
    with pytest.raises(InventoryError, match="clashes"):
        build_groups([HostRecord("a", extra_groups=("workers",))])
    with pytest.raises(InventoryError, match="same name as the inventory file"):
        build_groups([HostRecord("a", roles=("lab",))], inventory_group="lab")
