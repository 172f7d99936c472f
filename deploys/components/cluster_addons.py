"""What every addon shares: the switch for all of them, where applied manifests are kept, how long a rollout
may take, and the namespaces the addons live in (one per concern, Pod Security enforced).

Addons are pushed from the first control plane (``deploys/addon.py`` says how). This component runs there
first: it makes the directory that keeps the applied manifests (0700: a set may hold a Secret) and applies the
``namespaces`` set, every enabled addon's namespace (and the team namespaces of ``tenancy``) labelled with the
Pod Security level it enforces, so the sets applied after it can be dry-run against namespaces that exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, deploy

from deploys import addon
from deploys.component import Component
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.files import FileStates
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "cluster_addons_enabled": True,  # push the addons from the first control plane at all
    "cluster_addons_dir": "/etc/kubernetes/addons",  # where the applied manifests are kept (one per addon set)
    "cluster_addons_timeout": 300,  # seconds to wait for each Deployment, DaemonSet or StatefulSet of a set
}
SET_NAME = "namespaces"
TEMPLATE = "addons/namespaces/namespaces.yaml.j2"


def check(settings: Mapping[str, Any]) -> list[str]:
    """Pure: ``spectra validate`` runs it too."""
    problems = []
    timeout = settings["cluster_addons_timeout"]
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        problems.append(f"cluster_addons_timeout={timeout!r}: a whole number of seconds, at least 1")
    if not str(settings["cluster_addons_dir"]).startswith("/"):
        problems.append(f"cluster_addons_dir={settings['cluster_addons_dir']!r}: an absolute path")
    return problems


def namespaces(addons: list[addon.Addon], settings: Mapping[str, Any]) -> dict[str, str]:
    """Namespace -> the Pod Security level it enforces, for the enabled addons (each addon's ``namespace`` and
    the ones its ``namespaces(settings)`` adds, such as team namespaces); the strictest level an addon
    sharing the namespace allows (a namespace two addons share takes the looser of their two levels)."""
    order = {level: rank for rank, level in enumerate(addon.POD_SECURITY_LEVELS)}
    found: dict[str, str] = {}
    for one in addons:
        if not (one.namespace or one.namespaces) or not settings[one.switch]:
            continue
        wanted: dict[str, str] = {one.namespace: one.pod_security} if one.namespace else {}
        wanted.update(one.namespaces(settings) if one.namespaces else {})
        for name, wanted_level in wanted.items():
            level = found.get(name, wanted_level)
            found[name] = max(level, wanted_level, key=order.__getitem__)
    return dict(sorted(found.items()))


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["cluster_addons_enabled"]) and topology.is_first_control_plane(host, host.state.inventory)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    directory = str(settings["cluster_addons_dir"]).rstrip("/")
    return [(FileStates, managed.snapshot_files_kwargs([directory])), addon.state_request(settings)]


@deploy("Cluster addons: manifests directory and namespaces")
def cluster_addons() -> None:
    settings = Settings()
    directory = str(settings["cluster_addons_dir"]).rstrip("/")
    (files,) = prepared_facts(fact_requests(settings)[0])
    managed.directory(name="Addon manifests directory", path=directory, mode="0700", current=files)
    wanted = namespaces(addon.registered(), settings)
    if not wanted:
        return
    try:
        manifest = addon.render_set(SET_NAME, [TEMPLATE], {"namespaces": wanted})
    except addon.AddonError as error:
        raise DeployError(f"{host.name}: addon namespaces: {error}") from None
    addon.push(SET_NAME, manifest, settings)


COMPONENT = Component(
    name="cluster_addons",
    defaults=DEFAULTS,
    deploy=cluster_addons,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
