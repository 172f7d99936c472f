"""How a cluster addon is pushed: one record per addon, one operation that applies an addon set.

An addon (``deploys/components/<addon>.py``) declares an :class:`Addon`: its settings, its ``<addon>_enabled``
switch, the namespace it lives in, its templates under ``templates/addons/<addon>/`` and the context they
get. :func:`addon_component` turns it into a ``Component`` that runs on the first control plane only. Its
manifest (every template, as one YAML stream) is one *addon set*:

1. rendered on the deploying machine; every object gets the labels ``app.kubernetes.io/managed-by: spectra``
   and ``spectra.io/addon-set: <set>``;
2. compared with the manifest applied last (kept at ``<cluster_addons_dir>/<set>.yaml`` on that host) and
   with the cluster: the ``AddonSets`` fact runs a server-side ``kubectl diff`` of the kept manifest, in the
   run's one batched fact command. Same manifest and no drift: nothing runs (a no-op costs no command);
3. otherwise applied: ``--dry-run=server`` of the whole set first (the apiserver checks every object: a
   rejected one stops the run with the apiserver's message before anything of the set changes), then
   server-side apply under the one field manager ``spectra`` (``--force-conflicts``: a field edited by hand
   is taken back), then objects of the kept manifest that left the rendered set are deleted (the kept
   manifest is the inventory of what was applied), then each Deployment, DaemonSet and StatefulSet is
   waited for, and only then is the manifest kept. A failed step keeps the old manifest: the next run
   applies again. A set that renders no objects (tenancy without teams) applies nothing: the objects of
   its kept manifest are deleted and the kept manifest removed; never applied, it costs nothing.

Namespaces are not in the sets that use them (a dry run of objects in a namespace that does not exist yet
fails): ``addon_namespaces`` applies every enabled addon's namespace, with its Pod Security labels, first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, NamedTuple

import yaml
from pyinfra import host
from pyinfra.api import DeployError, FileUploadCommand, QuoteString, StringCommand, deploy, operation

from deploys.component import Check, Component
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from deploys.templating import TEMPLATES_DIR, render
from facts.addons import FIELD_MANAGER, AddonSets, AddonSetState, describe
from spectra import cluster_settings, topology

# libyaml's safe loader and dumper where PyYAML has them: the pure-Python ones cost most of a render
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
MANAGED_BY = {"app.kubernetes.io/managed-by": "spectra"}
SET_LABEL = "spectra.io/addon-set"
ROLLOUT_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
# Pod Security Standards levels a namespace can enforce
POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")


class ObjectRef(NamedTuple):
    api_version: str
    kind: str
    namespace: str | None
    name: str

    @property
    def resource(self) -> str:
        """kubectl's ``TYPE[.VERSION[.GROUP]]/NAME`` for this object."""
        group, _, version = self.api_version.rpartition("/")
        kind = f"{self.kind}.{version}.{group}" if group else self.kind
        return f"{kind}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class LocalVolume:
    """A node-local PersistentVolume an addon needs: a directory on ``node`` (made by ``local_volume_dirs``),
    pre-bound to the claim ``namespace/claim`` (``local_storage`` renders the PV)."""

    node: str  # inventory host name (= Kubernetes node name)
    namespace: str
    claim: str
    capacity: str  # Kubernetes quantity ("10Gi")
    user: str = "root"  # owner of the directory on the host: the uid the pod runs as, by its Debian name
    group: str = "root"


@dataclass(frozen=True)
class Addon:
    """One addon: its settings and how its manifest is made.

    ``context(settings)`` returns what the templates place (and raises ``AddonError`` on a value they cannot
    take); ``checks`` are pure ``(settings) -> [problem]`` functions (``spectra validate`` runs them too).
    ``namespace`` is created by ``addon_namespaces`` with ``pod_security`` enforced (None: an existing one,
    such as kube-system). ``namespaces(settings)`` names further namespaces the addon's objects live in, each
    with the Pod Security level it enforces (tenancy's team namespaces): made the same way, in the same set."""

    name: str
    defaults: Mapping[str, Any]
    templates: tuple[str, ...]
    context: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    namespace: str | None = None
    pod_security: str = "restricted"
    checks: tuple[Check, ...] = ()
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    volumes: Callable[[Mapping[str, Any]], list[LocalVolume]] | None = None  # node-local volumes it needs
    namespaces: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None  # more namespaces -> level

    @property
    def switch(self) -> str:
        return f"{self.name.replace('-', '_')}_enabled"


class AddonError(ValueError):
    """A setting an addon cannot be rendered with; the message names the setting."""


def with_set_labels(document: dict[str, Any], set_name: str) -> dict[str, Any]:
    metadata = document.setdefault("metadata", {})
    labels = metadata.get("labels") or {}
    metadata["labels"] = {**labels, **MANAGED_BY, SET_LABEL: set_name}
    return document


def render_set(set_name: str, templates: Sequence[str], context: Mapping[str, Any]) -> str:
    """The manifest of an addon set: every template rendered, each object labelled, one YAML stream."""
    documents: list[dict[str, Any]] = []
    for template in templates:
        text = render(template, **context)
        try:
            loaded = list(yaml.load_all(text, Loader=_LOADER))
        except yaml.YAMLError as error:
            raise AddonError(f"{template} does not render to YAML: {error}") from None
        for document in loaded:
            if document is None:
                continue
            if not isinstance(document, dict) or not {"apiVersion", "kind", "metadata"} <= set(document):
                raise AddonError(f"{template}: every document needs apiVersion, kind and metadata")
            documents.append(with_set_labels(document, set_name))
    header = f"# Managed by spectra-infra: addon set {set_name}; applied with server-side apply ({FIELD_MANAGER}).\n"
    return header + yaml.dump_all(documents, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, width=120)


def objects(manifest: str | None) -> list[ObjectRef]:
    """The objects of a manifest, in order."""
    found = []
    for document in yaml.load_all(manifest or "", Loader=_LOADER):
        if isinstance(document, dict) and "kind" in document:
            metadata = document.get("metadata") or {}
            found.append(
                ObjectRef(
                    str(document["apiVersion"]), str(document["kind"]), metadata.get("namespace"), str(metadata["name"])
                )  # fmt: skip
            )
    return found


def pruned(kept: str | None, manifest: str) -> list[ObjectRef]:
    """Objects of the kept manifest that the new one no longer has (deleted after the apply)."""
    new = {(ref.kind, ref.api_version.rpartition("/")[0], ref.namespace, ref.name) for ref in objects(manifest)}
    return [
        ref
        for ref in objects(kept)
        if (ref.kind, ref.api_version.rpartition("/")[0], ref.namespace, ref.name) not in new
    ]


def rollouts(manifest: str) -> list[ObjectRef]:
    return [ref for ref in objects(manifest) if ref.kind in ROLLOUT_KINDS]


def kept_path(settings: Mapping[str, Any], set_name: str) -> str:
    return f"{str(settings['cluster_addons_dir']).rstrip('/')}/{set_name}.yaml"


def _kubectl(kubectl: str, kubeconfig: str, *arguments: Any) -> StringCommand:
    return StringCommand(QuoteString(kubectl), "--kubeconfig", QuoteString(kubeconfig), *arguments)


def _delete(kubectl: str, kubeconfig: str, ref: ObjectRef) -> StringCommand:
    namespace = ("-n", QuoteString(ref.namespace)) if ref.namespace else ()
    return _kubectl(kubectl, kubeconfig, "delete", *namespace, "--ignore-not-found", "--wait=false",
                    QuoteString(ref.resource))  # fmt: skip


@operation()
def apply_set(
    set_name: str,
    manifest: str,
    kubectl: str,
    kubeconfig: str,
    path: str,
    timeout: int,
    state: AddonSetState | None = None,
):
    """
    Apply addon set ``set_name`` when it differs from the manifest kept at ``path`` or the cluster drifted
    from that manifest (``state``, from the ``AddonSets`` fact); see the module's docstring for the steps.
    """
    kept = state["kept"] if state else None
    if kept == manifest and state is not None and state["drift"] == []:
        host.noop(f"addon set {set_name}: applied as rendered, no drift")
        return
    if not objects(manifest):
        # kubectl refuses to apply (or diff) no objects: an empty set only deletes what it applied before, and
        # drops its kept manifest, so the next run has nothing to compare and costs nothing
        if kept is None:
            host.noop(f"addon set {set_name}: no objects, none applied before")
            return
        for ref in pruned(kept, manifest):
            yield _delete(kubectl, kubeconfig, ref)
        yield StringCommand("rm", "-f", QuoteString(path))
        return
    staged = f"{path}.spectra-new"
    apply = ("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts",
             "-f", QuoteString(staged))  # fmt: skip
    yield FileUploadCommand(BytesIO(manifest.encode()), staged, remote_temp_filename=staged)
    yield StringCommand("chmod", "0600", QuoteString(staged))
    yield _kubectl(kubectl, kubeconfig, *apply, "--dry-run=server", "-o", "name")
    yield _kubectl(kubectl, kubeconfig, *apply)
    crds = [ref for ref in objects(manifest) if ref.kind == "CustomResourceDefinition"]
    if crds:
        # the next set's dry run may create objects of these kinds: only once they are served
        yield _kubectl(kubectl, kubeconfig, "wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                       *[QuoteString(f"crd/{ref.name}") for ref in crds])  # fmt: skip
    for ref in pruned(kept, manifest):
        yield _delete(kubectl, kubeconfig, ref)
    for ref in rollouts(manifest):
        ns = ("-n", QuoteString(ref.namespace or "default"))
        target = QuoteString(f"{ref.kind.lower()}/{ref.name}")
        # on a timeout, say why before failing: the namespace's pods, where they run, and its last events
        yield StringCommand(
            _kubectl(kubectl, kubeconfig, *ns, "rollout", "status", target, f"--timeout={int(timeout)}s"),
            "||", "{", _kubectl(kubectl, kubeconfig, *ns, "get", "pods", "-o", "wide"), ">&2;",
            _kubectl(kubectl, kubeconfig, *ns, "get", "events", "--sort-by=.lastTimestamp"), ">&2;", "exit", "1;", "}",
        )  # fmt: skip
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(path))


def on_first_control_plane(settings: Mapping[str, Any], switch: str) -> bool:
    return (
        bool(settings["cluster_addons_enabled"])
        and bool(settings[switch])
        and topology.is_first_control_plane(host, host.state.inventory)
    )


# the sets cluster_addons applies before every addon's: the namespaces, then their default ServiceAccounts
BASE_SETS = ("namespaces", "default-service-accounts")


def state_request(settings: Mapping[str, Any]) -> FactRequest:
    """The ``AddonSets`` fact of every set this run pushes: the same request from every addon, so it is read
    once, its diffs side by side."""
    names = [*BASE_SETS, *(one.name for one in registered() if settings[one.switch])]
    return _state_request(settings, names)


def _state_request(settings: Mapping[str, Any], set_names: Sequence[str]) -> FactRequest:
    from deploys.components import kubernetes_binaries
    from spectra.pki import layout

    return (
        AddonSets,
        {
            "directory": str(settings["cluster_addons_dir"]),
            "names": list(set_names),
            "kubectl": kubernetes_binaries.binary_path("kubectl"),
            "kubeconfig": layout.kubeconfig_file(settings, "admin"),
        },
    )


def push(set_name: str, manifest: str, settings: Mapping[str, Any]) -> None:
    """Apply one addon set from this host (inside a ``@deploy``), its state read with the run's facts."""
    from deploys.components import kubernetes_binaries
    from spectra.pki import layout

    (states,) = prepared_facts(state_request(settings))
    state = states.get(set_name)
    reason = describe(state)
    apply_set(
        name=f"Addon set {set_name}" + (f" ({reason})" if reason else ""),
        set_name=set_name,
        manifest=manifest,
        kubectl=kubernetes_binaries.binary_path("kubectl"),
        kubeconfig=layout.kubeconfig_file(settings, "admin"),
        path=kept_path(settings, set_name),
        timeout=int(settings["cluster_addons_timeout"]),
        state=state,
    )


def values_for(addon: Addon, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with the defaults of the addon and of the cluster settings under it: a deploy's ``Settings``
    (which already answers every key) as it is, a partial dict (tests, scripts) completed."""
    if isinstance(data, Settings):
        return data
    return {**cluster_settings.DEFAULTS, **addon.defaults, **data}


def render_addon(addon: Addon, data: Mapping[str, Any]) -> str:
    """The manifest of ``addon`` for ``data``; bad values raise ``AddonError`` naming the setting."""
    settings = values_for(addon, data)
    problems = [*cluster_settings.check(settings), *(problem for check in addon.checks for problem in check(settings))]
    if problems:
        raise AddonError("; ".join(problems))
    return render_set(addon.name, addon.templates, addon.context(settings))


_BY_COMPONENT: dict[str, Addon] = {}  # component name -> its addon
_SELECTED: list[Addon] | None = None  # the addons of this run's entry file (select)


def select(components: Sequence[Component]) -> None:
    """The addons this run pushes (the entry file's list): only their namespaces and volumes are made."""
    global _SELECTED
    _SELECTED = [_BY_COMPONENT[c.name] for c in components if c.name in _BY_COMPONENT]


def addon_component(addon: Addon) -> Component:
    """The ``Component`` that pushes ``addon`` from the first control plane."""

    def should_run(settings: Mapping[str, Any]) -> bool:
        return on_first_control_plane(settings, addon.switch)

    def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
        return [state_request(settings)]

    @deploy(f"Addon {addon.name}")
    def push_addon() -> None:
        settings = Settings()
        try:
            manifest = render_addon(addon, settings)
        except AddonError as error:
            raise DeployError(f"{host.name}: addon {addon.name}: {error}") from None
        push(addon.name, manifest, settings)

    name = f"addon_{addon.name.replace('-', '_')}"
    _BY_COMPONENT[name] = addon
    return Component(
        name=name,
        defaults=addon.defaults,
        deploy=push_addon,
        should_run=should_run,
        fact_requests=fact_requests,
        choices=addon.choices,
        checks=addon.checks,
    )


def template_files(addon_dir: str) -> tuple[str, ...]:
    """Every ``*.yaml.j2`` under ``templates/addons/<addon_dir>/`` in name order (the order they apply in)."""
    base = TEMPLATES_DIR / "addons" / addon_dir
    return tuple(str(path.relative_to(TEMPLATES_DIR)) for path in sorted(base.glob("*.yaml.j2")))


def data_node(settings: Mapping[str, Any], key: str, what: str) -> str:
    """Where an addon keeps its data (its node-local volume and so its pod): the host named by setting ``key``,
    else the first host (by name) with the ``monitoring`` role that runs kubelet."""
    inventory = host.state.inventory
    if settings[key]:
        name = str(settings[key])
        if name not in {member.name for member in topology.kubelet_hosts(inventory)}:
            raise AddonError(f"{key}={name!r}: not an inventory host that runs kubelet")
        return name
    candidates = [m for m in topology.with_role(inventory, topology.MONITORING) if topology.runs_kubelet(m)]
    if not candidates:
        raise AddonError(
            f"{what} needs a node for its data: give a host that runs kubelet the monitoring role, or set {key}"
        )
    return str(topology.by_name(candidates)[0].name)


def local_volumes(settings: Mapping[str, Any]) -> list[LocalVolume]:
    """The node-local volumes of every enabled addon."""
    return [
        volume
        for one in registered()
        if one.volumes is not None and settings[one.switch]
        for volume in one.volumes(settings)
    ]


def registered() -> list[Addon]:
    """The addons of this run (``select``), else every addon record (``ADDON`` in a module of
    ``deploys/components/``), by name."""
    if _SELECTED is not None:
        return sorted(_SELECTED, key=lambda one: one.name)
    import importlib

    from deploys.settings import component_modules

    found = [getattr(importlib.import_module(module), "ADDON", None) for module in component_modules()]
    return sorted((one for one in found if isinstance(one, Addon)), key=lambda one: one.name)
