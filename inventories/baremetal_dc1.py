"""Bare metal, datacenter dc1: a static inventory with one zone per rack.

Racks are the failure domains here, so each rack is a zone: rack ``r01`` of ``dc1`` is zone ``dc1-r01``,
group ``az_dc1_r01``; the datacenter is the region (``region_dc1``). Roll out rack by rack with
``spectra rollout inventories/baremetal_dc1.py deploy.py --by-zone``.
Addresses are documentation addresses (192.0.2.0/24): replace them with your own. The hosts are production
(``env="prod"``): group_data/env_prod.py lets SSH, the API server and NodePorts in from private networks only,
so the real addresses must be inside its ``firewall_apiserver_cidrs`` (or the file narrowed to them).
"""

from inventories import ssh_tuning
from inventories.grouping import HostRecord, build_groups, file_group

ssh_tuning.enable()  # loaded before pyinfra connects: TCP_NODELAY, ~2 ms per remote command instead of ~44 ms

_DATACENTER = "dc1"
_CONNECTION = {"ssh_user": "root", "ssh_port": 22}

# rack -> [(name, address, roles)]
_RACKS = {
    "r01": [
        ("dc1-cp-1", "192.0.2.11", ("control_plane", "etcd")),
        ("dc1-wk-1", "192.0.2.21", ("workers",)),
        ("dc1-mon-1", "192.0.2.31", ("monitoring",)),
    ],
    "r02": [
        ("dc1-cp-2", "192.0.2.12", ("control_plane", "etcd")),
        ("dc1-wk-2", "192.0.2.22", ("workers",)),
    ],
    "r03": [
        ("dc1-cp-3", "192.0.2.13", ("control_plane", "etcd")),
        ("dc1-wk-3", "192.0.2.23", ("workers",)),
    ],
}

_records = [
    HostRecord(
        name=name,
        data={
            **_CONNECTION,
            "ssh_hostname": address,
            "cloud": "baremetal",
            "datacenter": _DATACENTER,
            "rack": rack,
        },
        roles=roles,
        zone=f"{_DATACENTER}-{rack}",
        region=_DATACENTER,
        env="prod",
    )
    for rack, hosts in _RACKS.items()
    for name, address, roles in hosts
]

globals().update(build_groups(_records, inventory_group=file_group(__file__)))
