"""EC2 inventory against moto in server mode: a real HTTP endpoint on 127.0.0.1, started here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import paramiko
import pytest
from moto.server import ThreadedMotoServer
from pyinfra.api.exceptions import InventoryError
from pyinfra.connectors.sshuserclient.client import SSHClient

from inventories.grouping import HostRecord, build_groups
from inventories.sources.ec2 import (
    Bastion,
    Ec2Source,
    KeyedGroup,
    assign_names,
    ec2_records,
    fetch_instances,
    instance_records,
    load_instances,
    make_session,
    write_bastion_ssh_config,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
PAGE_SIZE = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials, no user AWS config, no SPECTRA_* from the caller's shell."""
    tmp = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("AWS_", "SPECTRA_")):
                patch.delenv(key)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_MAX_ATTEMPTS", "1")  # the unreachable-endpoint test need not retry
        patch.setenv("AWS_CONFIG_FILE", str(tmp / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "no-aws-credentials"))
        patch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        yield


def _client(endpoint: str, service: str = "ec2") -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _launch(ec2: Any, zone: str, tags: dict[str, str], instance_type: str = "t3.large") -> str:
    # One run_instances call per instance: one reservation each, so pages really split.
    response = ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        InstanceType=instance_type,
        Placement={"AvailabilityZone": zone},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )
    return str(response["Instances"][0]["InstanceId"])


@pytest.fixture(scope="module")
def cluster(moto_endpoint: str) -> dict[str, Any]:
    """prod: 3 control planes (one per zone), 12 workers, 1 monitoring; plus noise that must not show."""
    ec2 = _client(moto_endpoint)
    base = {"spectra:cluster": "prod", "spectra:env": "prod"}
    ids: dict[str, Any] = {"duplicates": [], "unnamed": None}
    for index, zone in enumerate(ZONES):
        _launch(ec2, zone, {**base, "Name": f"cp-{index + 1}", "spectra:roles": "control_plane,etcd"}, "m5.large")
        for number in range(4):
            name = f"wk-{zone[-1]}{number}"
            tags = {**base, "Name": name, "spectra:roles": "workers", "Team": "data-eng" if number else "web"}
            if zone == "us-east-1a" and number == 0:
                tags["Name"] = "worker"  # duplicate name #1
            if zone == "us-east-1b" and number == 0:
                tags["Name"] = "worker"  # duplicate name #2
            if zone == "us-east-1c" and number == 0:
                del tags["Name"]  # no Name tag: instance id
            instance_id = _launch(ec2, zone, tags)
            if tags.get("Name") == "worker":
                ids["duplicates"].append(instance_id)
            if "Name" not in tags:
                ids["unnamed"] = instance_id
    _launch(ec2, "us-east-1b", {**base, "Name": "mon-1", "spectra:roles": "monitoring"})

    stopped = _launch(ec2, "us-east-1a", {**base, "Name": "old-worker", "spectra:roles": "workers"})
    ec2.stop_instances(InstanceIds=[stopped])
    _launch(ec2, "us-east-1a", {"spectra:cluster": "staging", "Name": "staging-1", "spectra:roles": "workers"})
    ids["stopped"] = stopped
    ids["running"] = 3 + 12 + 1
    return ids


def _source(endpoint: str, **options: Any) -> Ec2Source:
    options.setdefault("page_size", PAGE_SIZE)
    return Ec2Source(region="us-east-1", cluster="prod", endpoint_url=endpoint, **options)


@pytest.fixture(scope="module")
def records(moto_endpoint: str, cluster: dict[str, Any]) -> list[HostRecord]:
    source = _source(moto_endpoint, ssh_key="/keys/prod", keyed_groups=(KeyedGroup("tags.Team", prefix="team"),))
    return ec2_records(source)


@pytest.fixture(scope="module")
def instances(moto_endpoint: str, cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw instance list, fetched once, for the address variants below."""
    return load_instances(_source(moto_endpoint))


def test_running_cluster_instances_only(records: list[HostRecord], cluster: dict[str, Any]) -> None:
    names = [record.name for record in records]
    assert len(records) == cluster["running"]
    assert len(set(names)) == len(names)
    assert "old-worker" not in names and "staging-1" not in names
    assert all(record.data["instance_id"] != cluster["stopped"] for record in records)


def test_groups_by_role_zone_region_env_type_and_tag(records: list[HostRecord], cluster: dict[str, Any]) -> None:
    groups = build_groups(records, inventory_group="aws_us_east_1")
    names = {group: {name for name, _ in members} for group, members in groups.items()}

    assert names["control_plane"] == {"cp-1", "cp-2", "cp-3"}
    assert names["etcd"] == names["control_plane"]
    assert len(names["workers"]) == 12
    assert names["monitoring"] == {"mon-1"}
    assert {"az_us_east_1a", "az_us_east_1b", "az_us_east_1c"} <= set(groups)
    assert len(names["az_us_east_1a"]) == 5 and len(names["az_us_east_1b"]) == 6
    assert len(names["region_us_east_1"]) == cluster["running"]
    assert len(names["env_prod"]) == cluster["running"]
    assert names["type_m5_large"] == names["control_plane"]
    assert len(names["team_data_eng"]) == 9 and len(names["team_web"]) == 3
    # precedence order: file group, env, region, zones, extra groups, then roles
    order = list(groups)
    assert order[:2] == ["all", "aws_us_east_1"]
    assert order.index("env_prod") < order.index("region_us_east_1") < order.index("az_us_east_1a")
    assert order.index("az_us_east_1c") < order.index("team_web") < order.index("control_plane")
    assert order[-4:] == ["control_plane", "etcd", "workers", "monitoring"]


def test_host_data(moto_endpoint: str, records: list[HostRecord], instances: list[dict[str, Any]]) -> None:
    by_name = {record.name: record for record in records}
    data = by_name["cp-1"].host_data()
    assert data["ssh_hostname"] == data["private_ip"]
    assert data["ssh_user"] == "admin" and data["_sudo"] is True and data["ssh_key"] == "/keys/prod"
    assert data["roles"] == ["control_plane", "etcd"]
    assert data["zone"] == "us-east-1a" and data["region"] == "us-east-1" and data["env"] == "prod"
    assert data["tags"]["Name"] == "cp-1" and data["instance_type"] == "m5.large"
    public = {r.name: r for r in instance_records(_source(moto_endpoint, address="public"), instances)}
    assert public["cp-1"].data["ssh_hostname"] == public["cp-1"].data["public_ip"]


def test_duplicate_and_missing_names(records: list[HostRecord], cluster: dict[str, Any]) -> None:
    names = {record.name for record in records}
    assert "worker" not in names
    for instance_id in cluster["duplicates"]:
        assert f"worker-{instance_id}" in names
    assert cluster["unnamed"] in names


def test_assign_names_is_order_independent() -> None:
    instances = [
        {"InstanceId": "i-1", "Tags": [{"Key": "Name", "Value": "web"}]},
        {"InstanceId": "i-2", "Tags": [{"Key": "Name", "Value": "web"}]},
        {"InstanceId": "i-3", "Tags": [{"Key": "Name", "Value": " db 1 "}]},
        {"InstanceId": "i-4", "Tags": [{"Key": "Name", "Value": "@"}]},
    ]
    expected = {"i-1": "web-i-1", "i-2": "web-i-2", "i-3": "db-1", "i-4": "i-4"}
    assert assign_names(instances) == expected
    assert assign_names(list(reversed(instances))) == expected


def test_pagination_follows_next_token(moto_endpoint: str, cluster: dict[str, Any]) -> None:
    client = _client(moto_endpoint)
    calls = []
    client.meta.events.register("after-call.ec2.DescribeInstances", lambda **kwargs: calls.append(1))
    instances = fetch_instances(client, _source(moto_endpoint).filters(), page_size=PAGE_SIZE)
    assert len(instances) == cluster["running"]
    assert len(calls) >= cluster["running"] // PAGE_SIZE  # more than one page was needed


def test_cache_ttl(moto_endpoint: str, tmp_path: Path) -> None:
    ec2 = _client(moto_endpoint)
    tags = {"spectra:cluster": "cachetest", "spectra:roles": "workers"}
    _launch(ec2, "us-east-1a", {**tags, "Name": "c-1"})
    source = Ec2Source(
        region="us-east-1",
        cluster="cachetest",
        endpoint_url=moto_endpoint,
        cache_file=str(tmp_path / "ec2.json"),
        cache_ttl=300,
    )
    assert len(load_instances(source, now=1000.0)) == 1
    assert (tmp_path / "ec2.json").stat().st_mode & 0o077 == 0
    _launch(ec2, "us-east-1b", {**tags, "Name": "c-2"})
    assert len(load_instances(source, now=1200.0)) == 1  # fresh cache: no API call
    assert len(load_instances(source, now=1301.0)) == 2  # expired: refetched
    _launch(ec2, "us-east-1c", {**tags, "Name": "c-3"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECTRA_INVENTORY_REFRESH", "1")
        assert len(load_instances(source, now=1302.0)) == 3


def test_assumed_role(moto_endpoint: str) -> None:
    _launch(_client(moto_endpoint), "us-east-1c", {"spectra:cluster": "roletest", "spectra:roles": "workers"})
    source = Ec2Source(
        region="us-east-1",
        cluster="roletest",
        endpoint_url=moto_endpoint,
        role_arn="arn:aws:iam::123456789012:role/spectra-inventory",
    )
    assert len(ec2_records(source)) == 1


def test_named_profile(moto_endpoint: str, tmp_path: Path) -> None:
    _launch(_client(moto_endpoint), "us-east-1a", {"spectra:cluster": "profiletest", "spectra:roles": "workers"})
    credentials = tmp_path / "credentials"
    credentials.write_text("[spectra-ops]\naws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        patch.delenv("AWS_ACCESS_KEY_ID")
        patch.delenv("AWS_SECRET_ACCESS_KEY")
        source = Ec2Source(region="us-east-1", cluster="profiletest", endpoint_url=moto_endpoint, profile="spectra-ops")
        assert make_session(source).get_credentials().access_key == "profilekey"
        assert len(ec2_records(source)) == 1


def test_no_matching_instances_is_an_error(moto_endpoint: str) -> None:
    source = Ec2Source(region="us-east-1", cluster="no-such-cluster", endpoint_url=moto_endpoint)
    with pytest.raises(InventoryError, match="no running EC2 instances tagged spectra:cluster=no-such-cluster"):
        ec2_records(source)


def test_unreachable_endpoint_is_an_inventory_error() -> None:
    source = Ec2Source(region="us-east-1", cluster="prod", endpoint_url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(InventoryError, match="EC2 inventory for us-east-1"):
        ec2_records(source)


def test_bastion_writes_proxyjump_config(moto_endpoint: str, instances: list[dict[str, Any]], tmp_path: Path) -> None:
    bastion = Bastion(host="bastion.example.com", user="jump", key="/keys/bastion", strict_host_key_checking="yes")
    records = instance_records(_source(moto_endpoint, bastion=bastion, ssh_config_dir=str(tmp_path)), instances)
    config_file = records[0].data["ssh_config_file"]
    assert all(record.data["ssh_config_file"] == config_file for record in records)
    config = paramiko.SSHConfig.from_path(config_file)
    target = config.lookup(records[0].data["ssh_hostname"])
    assert target["proxyjump"] == "jump@bastion.example.com:22"
    hop = config.lookup("bastion.example.com")
    assert hop["identityfile"] == ["/keys/bastion"] and hop["stricthostkeychecking"] == "yes"


def test_pyinfra_ssh_client_goes_through_the_bastion(tmp_path: Path) -> None:
    """pyinfra's own SSH client reads the generated file and dials the bastion, not the target."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    seen: list[str] = []

    def accept() -> None:
        try:
            conn, address = listener.accept()
        except OSError:
            return
        seen.append(address[0])
        conn.close()  # not an SSH server: the hop fails right after connecting

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    path = write_bastion_ssh_config(
        tmp_path / "bastion.ssh_config",
        Bastion(host="127.0.0.1", user="jump", port=port, strict_host_key_checking="no"),
        ["10.255.0.9"],
    )
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        SSHClient().parse_config("10.255.0.9", {"timeout": 5}, ssh_config_file=str(path))
    thread.join(5)
    listener.close()
    assert seen == ["127.0.0.1"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory of its own (group_data/all.py only), so the repo's group_data and the
    components being written elsewhere do not change what these tests see."""
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text('etcd_topology = "stacked"\nssh_connect_retries = 3\n')
    return tmp_path


def test_region_inventory_file_with_group_data(moto_endpoint: str, cluster: dict[str, Any], project: Path) -> None:
    """The real inventories/aws_us_east_1.py, loaded by the pyinfra CLI, gets group_data applied."""
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_endpoint, "SPECTRA_CLUSTER": "prod", "SPECTRA_EC2_CACHE_TTL": "0"}
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    command = [pyinfra, str(REPO / "inventories" / "aws_us_east_1.py"), "debug-inventory", "--json"]
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    hosts = {host["name"]: host for host in json.loads(proc.stdout)}
    assert len(hosts) == cluster["running"]
    cp1 = hosts["cp-1"]
    assert cp1["groups"][:2] == ["aws_us_east_1", "env_prod"]
    assert {"az_us_east_1a", "region_us_east_1", "type_m5_large", "control_plane", "etcd"} <= set(cp1["groups"])
    assert "team_data_eng" in hosts["wk-b1"]["groups"]
    assert cp1["data"]["ssh_connect_retries"] == 3  # from group_data/all.py


def test_region_inventory_file_validates(moto_endpoint: str, cluster: dict[str, Any], project: Path) -> None:
    # SPECTRA_COMPONENTS="": inventory and pyinfra keys only, not the components being written elsewhere.
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_endpoint, "SPECTRA_EC2_CACHE_TTL": "0", "SPECTRA_COMPONENTS": ""}
    spectra = str(Path(sys.executable).parent / "spectra")
    inventory = str(REPO / "inventories" / "aws_us_east_1.py")
    command = [spectra, "validate", inventory, "--limit", "az_us_east_1b"]
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"OK, 6 of {cluster['running']} hosts selected; zones: az_us_east_1b" in proc.stderr


def test_options_from_environment(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECTRA_CLUSTER", "staging")
        patch.setenv("SPECTRA_EC2_ADDRESS", "public")
        patch.setenv("SPECTRA_BASTION", "ops@bastion.example.com:2222")
        patch.setenv("SPECTRA_BASTION_KEY", "/keys/bastion")
        patch.setenv("SPECTRA_AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/x")
        source = Ec2Source.from_env(region="eu-west-1", cluster="prod")
        assert source.cluster == "staging" and source.address == "public"
        assert source.bastion == Bastion("bastion.example.com", "ops", 2222, "/keys/bastion")
        assert source.role_arn == "arn:aws:iam::123456789012:role/x"
        assert source.cache_file and source.cache_file.endswith("spectra/ec2/eu_west_1_staging.json")
        patch.setenv("SPECTRA_EC2_CACHE_TTL", "0")
        assert Ec2Source.from_env(region="eu-west-1", cluster="prod").cache_file is None
        patch.setenv("SPECTRA_EC2_ADDRESS", "ipv6")
        with pytest.raises(InventoryError, match="SPECTRA_EC2_ADDRESS must be private or public"):
            Ec2Source.from_env(region="eu-west-1", cluster="prod")
