"""Cluster addons (CoreDNS, ...) applied from the first control plane with ``admin.conf`` (the PKI's, at
``spectra.pki.layout``).

Each addon's manifest is rendered from data (``deploys/addons.py``) and kept on that host under
``/etc/kubernetes/addons/<name>.yaml`` (0600) once applied: ``kubectl apply`` runs when the rendered
manifest differs from the kept one, then waits for the rollout of its Deployments, and only then is the
manifest kept (a failed rollout is retried by the next run). A converged cluster costs nothing; an object
deleted by hand comes back when the kept file is removed (or with a changed setting).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import yaml
from pyinfra import host
from pyinfra.api import DeployError, FileUploadCommand, QuoteString, StringCommand, deploy, operation

from deploys.addons import ADDONS, AddonError, addon_problems, render_addon
from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.files import FileStates
from spectra import topology
from spectra.pki import layout

DEFAULTS: dict[str, Any] = {
    "cluster_addons_enabled": True,  # apply the addons from the first control plane
    "cluster_addons": ["coredns"],  # which addons (deploys/addons.py)
    "cluster_addons_dir": "/etc/kubernetes/addons",  # where the applied manifests are kept
    "cluster_addons_timeout": 300,  # seconds to wait for an addon's Deployments to be available
}
TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()


def check(settings: Mapping[str, Any]) -> list[str]:
    """Known addon names, and each chosen addon's own settings (pure: ``spectra validate`` runs it too)."""
    names = list(settings["cluster_addons"] or [])
    unknown = sorted(set(map(str, names)) - set(ADDONS))
    problems = [f"cluster_addons: unknown addons {unknown}; known: {sorted(ADDONS)}"] if unknown else []
    for name in names:
        if name in ADDONS:
            problems.extend(f"addon {name}: {problem}" for problem in addon_problems(name, settings))
    timeout = settings["cluster_addons_timeout"]
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        problems.append(f"cluster_addons_timeout={timeout!r}: a whole number of seconds, at least 1")
    if not str(settings["cluster_addons_dir"]).startswith("/"):
        problems.append(f"cluster_addons_dir={settings['cluster_addons_dir']!r}: an absolute path")
    return problems


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
        ns = ("-n", QuoteString(namespace))
        # on a timeout, say why before failing: the Deployment's pods, where they run and their last events
        yield StringCommand(
            base, *ns, "rollout", "status", QuoteString(f"deployment/{name}"), f"--timeout={int(timeout)}s",
            "||", "{", base, *ns, "get", "pods", "-o", "wide", ">&2;",
            base, *ns, "get", "events", "--sort-by=.lastTimestamp", ">&2;", "exit", "1;", "}",
        )  # fmt: skip
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(path))


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["cluster_addons_enabled"]) and topology.is_first_control_plane(host, host.state.inventory)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`cluster_addons` reads: the directory and the kept manifests."""
    directory = str(settings["cluster_addons_dir"]).rstrip("/")
    names = list(settings["cluster_addons"] or [])
    return [(FileStates, managed.snapshot_files_kwargs([directory, *(f"{directory}/{n}.yaml" for n in names)]))]


@deploy("Cluster addons")
def cluster_addons() -> None:
    settings = Settings()
    directory = str(settings["cluster_addons_dir"]).rstrip("/")
    manifests = {}
    for name in settings["cluster_addons"] or []:
        try:
            manifests[name] = render_addon(name, settings)
        except AddonError as error:
            raise DeployError(f"{host.name}: addon {name}: {error}") from None
    # kubectl is the control plane component's (installed earlier in the run)
    kubectl = kubernetes_binaries.binary_path("kubectl")
    (files,) = prepared_facts(*fact_requests(settings))
    managed.directory(name="Addon manifests directory", path=directory, mode="0700", current=files)
    for name, manifest in manifests.items():
        apply_manifest(
            name=f"Apply addon {name}",
            kubectl=kubectl,
            kubeconfig=layout.kubeconfig_file(settings, "admin"),
            path=f"{directory}/{name}.yaml",
            manifest=manifest,
            wait_for=deployments(manifest),
            timeout=int(settings["cluster_addons_timeout"]),
            current=files,
        )


COMPONENT = Component(
    name="cluster_addons",
    defaults=DEFAULTS,
    deploy=cluster_addons,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
