"""Running EC2 instances of one cluster as Spectra host records (used by ``inventories/aws_*.py``).

Which instances: state ``running`` and tag ``<cluster_tag> = <cluster>`` (plus any extra filters).

Groups (through :mod:`inventories.grouping`): roles from the ``<roles_tag>`` tag (comma or space
separated: ``control_plane,etcd``), ``az_<zone>``, ``region_<region>``, ``env_<env>``,
``type_<instance type>`` and keyed groups built from tags or instance fields the way Ansible's
``aws_ec2`` ``keyed_groups`` work: ``KeyedGroup("tags.Team", prefix="team")`` puts an instance tagged
``Team=db-ops`` in ``team_db_ops``.

Names: the ``Name`` tag, or the instance id when there is none; when several instances share a name,
each of them is called ``<name>-<instance id>`` so names stay unique and do not depend on listing order.

Address: the private IP by default, the public IP with ``address="public"``, or the private IP through
a bastion with ``bastion=Bastion(...)``. pyinfra's paramiko client follows ``ProxyJump`` from the
``ssh_config_file`` host data (``pyinfra/connectors/sshuserclient/client.py``), so the bastion case
writes a small ssh config file and points every host at it.

Credentials: the boto3 chain (environment, ``AWS_PROFILE``, instance role), a named ``profile``, and
optionally ``role_arn`` to assume first. ``cache_file`` keeps the instance list for ``cache_ttl``
seconds; set ``SPECTRA_INVENTORY_REFRESH=1`` to bypass it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyinfra.api.exceptions import InventoryError

from inventories.grouping import HostRecord, normalise_identifier, parse_roles

CACHE_VERSION = 1
REFRESH_ENV = "SPECTRA_INVENTORY_REFRESH"


@dataclass(frozen=True)
class KeyedGroup:
    """Group instances by the value of a tag or field.

    ``key`` is ``tags.<TagKey>``, ``tags`` (one group per tag: ``<prefix>_<key>_<value>``) or an
    instance field in snake case (``instance_type``, ``vpc_id``, ``placement.availability_zone``...).
    The group is ``<prefix><separator><value>``, normalised to an identifier.
    """

    key: str
    prefix: str = ""
    separator: str = "_"

    def group_prefix(self) -> str:
        if self.prefix:
            return self.prefix
        return "tag" if self.key == "tags" else self.key.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Bastion:
    """A jump host reached first; ``host`` may be a DNS name or an IP address."""

    host: str
    user: str = "admin"
    port: int = 22
    key: str | None = None
    known_hosts_file: str | None = None
    # Never "ask": an unattended run would wait for an answer forever.
    strict_host_key_checking: Literal["yes", "accept-new", "no"] = "accept-new"


@dataclass
class Ec2Source:
    region: str
    cluster: str
    cluster_tag: str = "spectra:cluster"
    roles_tag: str = "spectra:roles"
    env: str | None = None
    env_tag: str | None = "spectra:env"
    keyed_groups: Sequence[KeyedGroup] = ()
    group_by_instance_type: bool = True
    extra_filters: Sequence[dict[str, Any]] = ()
    address: Literal["private", "public"] = "private"
    bastion: Bastion | None = None
    ssh_user: str = "admin"
    ssh_key: str | None = None
    ssh_known_hosts_file: str | None = None
    ssh_config_dir: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    role_session_name: str = "spectra-inventory"
    external_id: str | None = None
    endpoint_url: str | None = None
    cache_file: str | None = None
    cache_ttl: float = 300.0
    page_size: int = 200
    extra_host_data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, region: str, cluster: str, **options: Any) -> Ec2Source:
        """Options for ``region`` with the per-run choices taken from ``SPECTRA_*`` variables.

        ``SPECTRA_CLUSTER``, ``SPECTRA_ENV``, ``SPECTRA_EC2_ADDRESS`` (private|public),
        ``SPECTRA_BASTION`` (``user@host:port``), ``SPECTRA_BASTION_KEY``, ``SPECTRA_SSH_USER``,
        ``SPECTRA_SSH_KEY``, ``SPECTRA_AWS_PROFILE``, ``SPECTRA_AWS_ROLE_ARN``,
        ``SPECTRA_AWS_EXTERNAL_ID``, ``SPECTRA_EC2_CACHE_TTL`` (seconds, 0 = no cache). The standard
        ``AWS_*`` variables (``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` ...) work as usual in boto3.
        """
        env = os.environ
        source = cls(region=region, cluster=env.get("SPECTRA_CLUSTER") or cluster, **options)
        address = env.get("SPECTRA_EC2_ADDRESS")
        if address:
            if address not in ("private", "public"):
                raise InventoryError(f"SPECTRA_EC2_ADDRESS must be private or public, not {address!r}")
            source.address = "public" if address == "public" else "private"
        bastion = env.get("SPECTRA_BASTION")
        if bastion:
            user, _, hostport = bastion.rpartition("@")
            host, _, port = hostport.partition(":")
            if not host or (port and not port.isdigit()):
                raise InventoryError(f"SPECTRA_BASTION must look like user@host:port, not {bastion!r}")
            source.bastion = Bastion(
                host=host,
                user=user or "admin",
                port=int(port or 22),
                key=env.get("SPECTRA_BASTION_KEY") or None,
            )
        source.env = env.get("SPECTRA_ENV") or source.env
        source.ssh_user = env.get("SPECTRA_SSH_USER") or source.ssh_user
        source.ssh_key = env.get("SPECTRA_SSH_KEY") or source.ssh_key
        source.profile = env.get("SPECTRA_AWS_PROFILE") or source.profile
        source.role_arn = env.get("SPECTRA_AWS_ROLE_ARN") or source.role_arn
        source.external_id = env.get("SPECTRA_AWS_EXTERNAL_ID") or source.external_id
        ttl = env.get("SPECTRA_EC2_CACHE_TTL")
        if ttl is not None:
            try:
                source.cache_ttl = float(ttl)
            except ValueError:
                raise InventoryError(f"SPECTRA_EC2_CACHE_TTL must be a number, not {ttl!r}") from None
        if source.cache_ttl <= 0:
            source.cache_file = None
        elif source.cache_file is None:
            name = normalise_identifier(f"{region}_{source.cluster}") + ".json"
            source.cache_file = str(_default_cache_dir() / "ec2" / name)
        return source

    def filters(self) -> list[dict[str, Any]]:
        return [
            {"Name": "instance-state-name", "Values": ["running"]},
            {"Name": f"tag:{self.cluster_tag}", "Values": [self.cluster]},
            *[dict(item) for item in self.extra_filters],
        ]


# Fetching


def make_session(source: Ec2Source) -> Any:
    """A boto3 session for ``source.region``: profile or default chain, then the assumed role if any."""
    import boto3

    session = boto3.Session(profile_name=source.profile, region_name=source.region)
    if not source.role_arn:
        return session
    sts = session.client("sts", endpoint_url=source.endpoint_url)
    kwargs: dict[str, Any] = {"RoleArn": source.role_arn, "RoleSessionName": source.role_session_name}
    if source.external_id:
        kwargs["ExternalId"] = source.external_id
    creds = sts.assume_role(**kwargs)["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=source.region,
    )


def fetch_instances(client: Any, filters: list[dict[str, Any]], page_size: int = 200) -> list[dict[str, Any]]:
    """Every instance matching ``filters``, following ``NextToken`` across pages."""
    instances: list[dict[str, Any]] = []
    paginator = client.get_paginator("describe_instances")
    for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": page_size}):
        for reservation in page.get("Reservations", []):
            instances.extend(reservation.get("Instances", []))
    return instances


def _cache_key(source: Ec2Source) -> str:
    identity = [
        source.region,
        source.filters(),
        source.profile,
        source.role_arn,
        source.endpoint_url,
    ]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _read_cache(source: Ec2Source, now: float) -> list[dict[str, Any]] | None:
    if not source.cache_file or os.environ.get(REFRESH_ENV) == "1":
        return None
    try:
        payload = json.loads(Path(source.cache_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION:
        return None
    if payload.get("key") != _cache_key(source):
        return None
    created = payload.get("created")
    if not isinstance(created, (int, float)) or not 0 <= now - created < source.cache_ttl:
        return None
    instances = payload.get("instances")
    return instances if isinstance(instances, list) else None


def _write_cache(source: Ec2Source, instances: list[dict[str, Any]], now: float) -> None:
    if not source.cache_file:
        return
    path = Path(source.cache_file)
    payload = {"version": CACHE_VERSION, "key": _cache_key(source), "created": now, "instances": instances}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(payload, default=str, sort_keys=True))


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_instances(source: Ec2Source, now: float | None = None) -> list[dict[str, Any]]:
    """Instances from the cache when it is fresh, otherwise from the EC2 API (and refresh the cache)."""
    now = time.time() if now is None else now
    cached = _read_cache(source, now)
    if cached is not None:
        return cached
    try:
        session = make_session(source)
        client = session.client("ec2", region_name=source.region, endpoint_url=source.endpoint_url)
        instances = fetch_instances(client, source.filters(), source.page_size)
    except InventoryError:
        raise
    except Exception as exc:  # botocore raises many unrelated classes; report them all the same way
        raise InventoryError(f"EC2 inventory for {source.region} (cluster {source.cluster}): {exc}") from exc
    # Round-trip through JSON so cached and fresh runs see exactly the same data.
    instances = json.loads(json.dumps(instances, default=str))
    _write_cache(source, instances, now)
    return instances


# Turning instances into host records


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {str(tag["Key"]): str(tag.get("Value", "")) for tag in instance.get("Tags") or []}


_HOSTNAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _clean_name(name: str) -> str:
    return _HOSTNAME_UNSAFE.sub("-", name.strip()).strip("-_.@")


def assign_names(instances: Iterable[dict[str, Any]]) -> dict[str, str]:
    """``{instance id: host name}``: Name tag or instance id; shared names get ``-<instance id>``."""
    base = {}
    for instance in instances:
        instance_id = instance["InstanceId"]
        base[instance_id] = _clean_name(tags_of(instance).get("Name", "")) or instance_id
    counts = Counter(base.values())
    return {
        instance_id: name if counts[name] == 1 or name == instance_id else f"{name}-{instance_id}"
        for instance_id, name in base.items()
    }


def _camel(part: str) -> str:
    return "".join(piece[:1].upper() + piece[1:] for piece in part.split("_"))


def _field(instance: dict[str, Any], dotted: str) -> Any:
    value: Any = instance
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(_camel(part), value.get(part))
    return value


def keyed_group_names(instance: dict[str, Any], keyed: KeyedGroup) -> list[str]:
    prefix = keyed.group_prefix()
    tags = tags_of(instance)
    if keyed.key == "tags":
        values = [f"{key}{keyed.separator}{value}" if value else key for key, value in sorted(tags.items())]
    elif keyed.key.startswith(("tags.", "tag:")):
        tag_key = keyed.key.split(".", 1)[1] if keyed.key.startswith("tags.") else keyed.key[4:]
        values = [tags[tag_key]] if tags.get(tag_key) else []
    else:
        value = _field(instance, keyed.key)
        values = [str(value)] if value not in (None, "", [], {}) else []
    return [normalise_identifier(f"{prefix}{keyed.separator}{value}") for value in values]


def write_bastion_ssh_config(path: Path, bastion: Bastion, addresses: Iterable[str]) -> Path:
    """An ssh config sending every address through ``bastion`` with ``ProxyJump``."""
    lines = [
        "# Written by inventories/sources/ec2.py for pyinfra's ssh_config_file; regenerated on each load.",
        f"Host {bastion.host}",
        f"    User {bastion.user}",
        f"    Port {bastion.port}",
        f"    StrictHostKeyChecking {bastion.strict_host_key_checking}",
    ]
    if bastion.key:
        lines.append(f"    IdentityFile {bastion.key}")
    if bastion.known_hosts_file:
        lines.append(f"    UserKnownHostsFile {bastion.known_hosts_file}")
    for address in sorted(set(addresses)):
        lines += ["", f"Host {address}", f"    ProxyJump {bastion.user}@{bastion.host}:{bastion.port}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, "\n".join(lines) + "\n")
    return path


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spectra"


def _default_ssh_config_dir() -> Path:
    return _default_cache_dir() / "ssh"


def instance_records(source: Ec2Source, instances: list[dict[str, Any]]) -> list[HostRecord]:
    names = assign_names(instances)
    records = []
    host_datas: list[dict[str, Any]] = []
    unreachable = []
    for instance in sorted(instances, key=lambda item: names[item["InstanceId"]]):
        instance_id = instance["InstanceId"]
        tags = tags_of(instance)
        private_ip = instance.get("PrivateIpAddress")
        public_ip = instance.get("PublicIpAddress")
        address = public_ip if source.address == "public" and not source.bastion else private_ip
        if not address:
            unreachable.append(f"{names[instance_id]} ({instance_id})")
            continue

        data: dict[str, Any] = {
            "ssh_hostname": address,
            "ssh_user": source.ssh_user,
            "cloud": "aws",
            "cluster_name": source.cluster,
            "instance_id": instance_id,
            "instance_type": instance.get("InstanceType"),
            "private_ip": private_ip,
            "tags": tags,
        }
        if public_ip:
            data["public_ip"] = public_ip
        if source.ssh_key:
            data["ssh_key"] = source.ssh_key
        if source.ssh_known_hosts_file:
            data["ssh_known_hosts_file"] = source.ssh_known_hosts_file
        if source.ssh_user != "root":
            data["_sudo"] = True
        data.update(source.extra_host_data)
        host_datas.append(data)

        extra_groups = []
        if source.group_by_instance_type and instance.get("InstanceType"):
            extra_groups.append(normalise_identifier(f"type_{instance['InstanceType']}"))
        for keyed in source.keyed_groups:
            extra_groups.extend(keyed_group_names(instance, keyed))

        env = source.env or (tags.get(source.env_tag) if source.env_tag else None) or None
        records.append(
            HostRecord(
                name=names[instance_id],
                data=data,
                roles=parse_roles(tags.get(source.roles_tag)),
                zone=(instance.get("Placement") or {}).get("AvailabilityZone"),
                region=source.region,
                env=env,
                extra_groups=tuple(dict.fromkeys(extra_groups)),
            )
        )

    if unreachable:
        which = "public" if source.address == "public" else "private"
        raise InventoryError(f"running instances without a {which} IP address: {', '.join(unreachable)}")

    if source.bastion and records:
        config_dir = Path(source.ssh_config_dir) if source.ssh_config_dir else _default_ssh_config_dir()
        config_name = normalise_identifier(f"{source.region}_{source.cluster}") + ".ssh_config"
        config_path = write_bastion_ssh_config(
            config_dir / config_name, source.bastion, [data["ssh_hostname"] for data in host_datas]
        )
        for data in host_datas:
            data["ssh_config_file"] = str(config_path)
    return records


def ec2_records(source: Ec2Source) -> list[HostRecord]:
    """Host records for the running instances of ``source.cluster`` in ``source.region``.

    Raises :class:`InventoryError` when nothing matches: an empty cluster is a mistake in the tag,
    region or credentials far more often than a real state, and zero hosts must never pass silently.
    """
    records = instance_records(source, load_instances(source))
    if not records:
        raise InventoryError(
            f"no running EC2 instances tagged {source.cluster_tag}={source.cluster} in {source.region}"
        )
    return records
