"""What every addon shares: the switch for all of them, where applied manifests are kept, how long a rollout
may take, and the namespaces the addons live in (one per concern, Pod Security enforced).

Addons are pushed from the first control plane (``deploys/addon.py`` says how). This component runs there
first: it makes the directory that keeps the applied manifests (0700: a set may hold a Secret) and applies the
``namespaces`` set, every enabled addon's namespace (and the team namespaces of ``tenancy``) labelled with the
Pod Security level it enforces, so the sets applied after it can be dry-run against namespaces that exist.
Then the ``default-service-accounts`` set (a set of its own: a dry run of a namespaced object fails while its
namespace does not exist yet): the ``default`` ServiceAccount of each of those namespaces with
``automountServiceAccountToken: false`` (CIS 5.1.6), so a pod that names no ServiceAccount gets no API token;
every addon that calls the API runs under a ServiceAccount of its own, and a pod may still ask for the token
in its spec. ``cluster_addons_default_sa_token`` True leaves the default ServiceAccounts as the apiserver made
them (the set then deletes the ones it applied, which the ServiceAccount controller makes again at once).
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
    # mount an API token into pods that run under the `default` ServiceAccount of the namespaces made here
    # (CIS 5.1.6: no; the addons that call the API have ServiceAccounts of their own)
    "cluster_addons_default_sa_token": False,
}
SET_NAME = "namespaces"
TEMPLATE = "addons/namespaces/namespaces.yaml.j2"
SA_SET_NAME = "default-service-accounts"
SA_TEMPLATE = "addons/namespaces/default-service-accounts.yaml.j2"


def check(settings: Mapping[str, Any]) -> list[str]:
    """Pure: ``spectra validate`` runs it too."""
    problems = []
    timeout = settings["cluster_addons_timeout"]
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        problems.append(f"cluster_addons_timeout={timeout!r}: a whole number of seconds, at least 1")
    if not str(settings["cluster_addons_dir"]).startswith("/"):
        problems.append(f"cluster_addons_dir={settings['cluster_addons_dir']!r}: an absolute path")
    if not isinstance(settings["cluster_addons_default_sa_token"], bool):
        problems.append(f"cluster_addons_default_sa_token={settings['cluster_addons_default_sa_token']!r}: "
                        "true or false")  # fmt: skip
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
    closed = [] if settings["cluster_addons_default_sa_token"] else list(wanted)
    try:
        manifest = addon.render_set(SET_NAME, [TEMPLATE], {"namespaces": wanted})
        accounts = addon.render_set(SA_SET_NAME, [SA_TEMPLATE], {"namespaces": closed})
    except addon.AddonError as error:
        raise DeployError(f"{host.name}: addon namespaces: {error}") from None
    addon.push(SET_NAME, manifest, settings)
    addon.push(SA_SET_NAME, accounts, settings)


COMPONENT = Component(
    name="cluster_addons",
    defaults=DEFAULTS,
    deploy=cluster_addons,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
