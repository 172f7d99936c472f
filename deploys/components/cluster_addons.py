"""Cluster addons (CoreDNS, ...) applied from the first control plane with ``admin.conf``.

Each addon's manifest is rendered from data (``deploys/addons.py``) and kept on that host under
``/etc/kubernetes/addons/<name>.yaml`` (0600) once applied: ``kubectl apply`` runs when the rendered
manifest differs from the kept one, then waits for the rollout of its Deployments, and only then is the
manifest kept (a failed rollout is retried by the next run). A converged cluster costs nothing; an object
deleted by hand comes back when the kept file is removed (or with a changed setting).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping as _Mapping
from io import BytesIO
from typing import Any

import yaml
from pyinfra import host
from pyinfra.api import DeployError, FileUploadCommand, QuoteString, StringCommand, deploy, operation

from deploys.addons import ADDONS, AddonError, render_addon
from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.components.node_roles import first_control_plane
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts, setting
from facts.files import FileStates
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "cluster_addons_enabled": True,  # apply the addons from the first control plane
    "cluster_addons": ["coredns"],  # which addons (deploys/addons.py)
    "cluster_addons_dir": "/etc/kubernetes/addons",  # where the applied manifests are kept
    "cluster_addons_kubeconfig": "/etc/kubernetes/admin.conf",
    "cluster_addons_timeout": 300,  # seconds to wait for an addon's Deployments to be available
}
TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()


def deployments(manifest: str) -> list[tuple[str, str]]:
    """(namespace, name) of each Deployment in a manifest."""
    return [
        (str(doc.get("metadata", {}).get("namespace") or "default"), str(doc["metadata"]["name"]))
        for doc in yaml.safe_load_all(manifest)
        if isinstance(doc, dict) and doc.get("kind") == "Deployment"
    ]


@operation()
def apply_manifest(
    kubectl: str,
    kubeconfig: str,
    path: str,
    manifest: str,
    wait_for: list[tuple[str, str]],
    timeout: int,
    current: Any = managed.UNSET,
):
    """
    Apply ``manifest`` when it differs from the one kept at ``path``: upload it next to ``path``,
    ``kubectl apply`` it, wait for the rollout of each Deployment of ``wait_for``, and only then keep it
    at ``path``. A failed apply or rollout keeps nothing, so the next run tries again.

    + current: a ``FileStates`` snapshot holding ``path`` (hashed)
    """
    state = managed.fresh(current, FileStates, paths=[path])
    wanted = hashlib.sha256(manifest.encode()).hexdigest()
    if (state.get(path) or {}).get("sha256") == wanted:
        host.noop(f"{path}: applied as rendered")
        return
    staged = f"{path}.spectra-new"
    base = StringCommand(QuoteString(kubectl), "--kubeconfig", QuoteString(kubeconfig))
    yield FileUploadCommand(BytesIO(manifest.encode()), staged, remote_temp_filename=staged)
    yield StringCommand("chmod", "0600", QuoteString(staged))
    yield StringCommand(base, "apply", "-f", QuoteString(staged))
    for namespace, name in wait_for:
        yield StringCommand(
            base, "-n", QuoteString(namespace), "rollout", "status", QuoteString(f"deployment/{name}"),
            f"--timeout={int(timeout)}s",
        )  # fmt: skip
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(path))


def _files_request() -> tuple[type[FileStates], dict[str, Any]]:
    directory = str(host.data.get("cluster_addons_dir", DEFAULTS["cluster_addons_dir"])).rstrip("/")
    names = list(host.data.get("cluster_addons", DEFAULTS["cluster_addons"]) or [])
    return (FileStates, managed.snapshot_files_kwargs([directory, *(f"{directory}/{n}.yaml" for n in names)]))


def fact_requests() -> list[Any]:
    """What :func:`cluster_addons` reads (deploys/cluster.py reads it with the other components' facts)."""
    if not host.data.get("cluster_addons_enabled", True) or host.name != first_control_plane():
        return []
    return [_files_request()]


@deploy("Cluster addons", data_defaults=DEFAULTS)
def cluster_addons() -> None:
    if not setting("cluster_addons_enabled") or host.name != first_control_plane():
        host.noop("cluster addons: applied from the first control plane")
        return
    directory = str(setting("cluster_addons_dir")).rstrip("/")
    names = list(setting("cluster_addons") or [])
    unknown = sorted(set(names) - set(ADDONS))
    if unknown:
        raise DeployError(f"{host.name}: cluster_addons: unknown addons {unknown}; known: {sorted(ADDONS)}")
    manifests = {}
    for name in names:
        try:
            manifests[name] = render_addon(name, host.data)
        except AddonError as error:
            raise DeployError(f"{host.name}: addon {name}: {error}") from None
    kubectl = kubernetes_binaries.binary_path("kubectl")
    # kubectl is the control plane component's (installed earlier in the run)
    (files,) = prepared_facts(_files_request())
    managed.directory(name="Addon manifests directory", path=directory, mode="0700", current=files)
    for name, manifest in manifests.items():
        path = f"{directory}/{name}.yaml"
        apply_manifest(
            name=f"Apply addon {name}",
            kubectl=kubectl,
            kubeconfig=str(setting("cluster_addons_kubeconfig")),
            path=path,
            manifest=manifest,
            wait_for=deployments(manifest),
            timeout=int(setting("cluster_addons_timeout")),
            current=files,
        )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["cluster_addons_enabled"]) and topology.is_first_control_plane(host, host.state.inventory)


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="cluster_addons",
    defaults=DEFAULTS,
    deploy=cluster_addons,
    should_run=should_run,
    fact_requests=_fact_requests,
)
