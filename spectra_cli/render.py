"""``spectra render``: what the deploys would put into the cluster and the control plane, written to a directory.

Nothing connects to a host. For an inventory (loaded and validated as ``spectra validate`` does):

* ``addons/<set>.yaml``: the manifest of every addon set the first control plane would push (the
  ``namespaces`` set and each enabled addon), exactly as ``deploys/addon.py`` renders it;
* ``hosts/<host>/etc/kubernetes/{audit-policy,authentication-config}.yaml`` on control planes, and
  ``hosts/<host>/var/lib/{kubelet,kube-proxy}/config.yaml`` on the hosts that run kubelet: the Kubernetes-style
  configuration files of the cluster deploy (the kubelet's with a systemd cgroup driver and
  ``/etc/resolv.conf``, which the deploy decides from facts);
* ``hosts/<host>/command-lines/<service>.yaml``: the command line of each control-plane unit (kube-apiserver,
  kube-controller-manager, kube-scheduler) shown as the static Pod kubeadm would write for it, so that
  scanners which check control-plane flags in Pod specs (checkov) check ours. They are views, not objects
  to apply: the control plane runs as systemd services;
* ``image-scan/trivy-cronjob.yaml``: a CronJob that runs Trivy on every image the addon sets name, for a
  cluster that reaches Trivy's vulnerability database (not applied by any deploy).

Left out on purpose: the Secrets encryption configuration and the kubeconfigs (they hold the cluster's keys).
The addon sets do hold Secrets (Prometheus' etcd client key, Alertmanager's receivers): files are 0600 in a
0700 directory. Rendering Prometheus makes the cluster PKI in ``pki_dir`` when it is missing, as a deploy would.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

MARKER = ".spectra-render"  # in a directory this command wrote: it may be cleared and written again
IMAGE_SCAN_TEMPLATE = "image-scan/trivy-cronjob.yaml.j2"
IMAGE_SCAN_FILE = "image-scan/trivy-cronjob.yaml"
# a command-line view is this object: the unit's argv as a container's command
VIEW_ANNOTATION = "spectra.io/view-of"


class RenderError(RuntimeError):
    """An inventory or setting the manifests cannot be rendered from; the message says which."""


def _state(inventory: Any) -> Any:
    from pyinfra.api import Config, State

    config = Config()
    return State(inventory, config, check_for_changes=False)


def addon_manifests(inventory: Any) -> dict[str, str]:
    """Addon set name -> its manifest, as the first control plane of ``inventory`` would push them."""
    from pyinfra.api import DeployError

    from deploys import addon
    from deploys.components import cluster_addons
    from deploys.settings import Settings
    from spectra import pyinfra_compat, topology

    first = topology.first_control_plane(list(inventory))
    if first is None:
        raise RenderError("no host has the control_plane role: addons are pushed from the first control plane")
    state = _state(inventory)
    member = inventory.get_host(first)
    found: dict[str, str] = {}
    with pyinfra_compat.host_context(state, member, config=state.config):
        settings = Settings()
        if not settings["cluster_addons_enabled"]:
            return found
        addons = addon.registered()
        wanted = cluster_addons.namespaces(addons, settings)
        try:
            if wanted:
                found[cluster_addons.SET_NAME] = addon.render_set(
                    cluster_addons.SET_NAME, [cluster_addons.TEMPLATE], {"namespaces": wanted}
                )
            for one in addons:
                if settings[one.switch]:
                    found[one.name] = addon.render_addon(one, settings)
        except (addon.AddonError, DeployError) as error:
            raise RenderError(f"{first}: {error}") from None
    return found


def _argv(flags: dict[str, Any], extra: Mapping[str, Any] | None) -> list[str]:
    """The flags as the unit passes them, with systemd's escaping undone (the argv the service gets)."""
    from deploys.components.control_plane_flags import render_flags

    return [shlex.split(arg.replace("%%", "%").replace("$$", "$"))[0] for arg in render_flags(flags, extra)]


def command_line_view(service: str, argv: list[str], host_name: str) -> dict[str, Any]:
    """The static Pod kubeadm would write for ``service``: only the command is ours. The program is named
    bare (``kube-apiserver``, not its path), as kubeadm's manifests do and as checkov's flag checks look for it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": service,  # the host is in the path and the annotation: one baseline for any inventory
            "namespace": "kube-system",
            "annotations": {VIEW_ANNOTATION: f"systemd unit {service}.service on {host_name}"},
        },
        "spec": {"containers": [{"name": service, "image": service, "command": [service, *argv]}]},
    }


def cluster_files(inventory: Any, hosts: Sequence[str] | None = None) -> dict[str, str]:
    """Relative path -> text of the cluster deploy's Kubernetes-style files, for every host they go to (of
    ``hosts``, when given)."""
    from pyinfra.api import DeployError

    from deploys.components import control_plane, kube_proxy, kubelet
    from deploys.components import control_plane_flags as flags
    from deploys.settings import Settings
    from deploys.templating import render
    from spectra import pyinfra_compat, topology

    state = _state(inventory)
    found: dict[str, str] = {}

    def dump(document: Any) -> str:
        return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)

    for member in topology.by_name(inventory):
        if hosts is not None and member.name not in hosts:
            continue
        base = f"hosts/{member.name}"
        with pyinfra_compat.host_context(state, member, config=state.config):
            settings = Settings()
            try:
                if settings["control_plane_enabled"] and topology.has_role(member, topology.CONTROL_PLANE):
                    config_dir = str(settings["kubernetes_config_dir"]).strip("/")
                    found[f"{base}/{config_dir}/{flags.AUDIT_POLICY}"] = render(
                        f"etc/kubernetes/{flags.AUDIT_POLICY}.j2"
                    )
                    paths = [str(path) for path in settings["control_plane_anonymous_paths"] or []]
                    found[f"{base}/{config_dir}/{flags.AUTHENTICATION_CONFIG}"] = render(
                        f"etc/kubernetes/{flags.AUTHENTICATION_CONFIG}.j2", anonymous_paths=paths
                    )
                    address = control_plane.apiserver_address()
                    services = {
                        "kube-apiserver": flags.apiserver_flags(
                            settings, address, control_plane.etcd_servers(settings, inventory)
                        ),
                        "kube-controller-manager": flags.controller_manager_flags(settings, address),
                        "kube-scheduler": flags.scheduler_flags(settings, address),
                    }
                    for service, service_flags in services.items():
                        extra = settings[f"control_plane_{service.removeprefix('kube-').replace('-', '_')}_extra_args"]
                        view = command_line_view(service, _argv(service_flags, extra), str(member.name))
                        found[f"{base}/command-lines/{service}.yaml"] = dump(view)
                if settings["kubelet_enabled"] and topology.runs_kubelet(member):
                    config = kubelet.kubelet_config(settings, True, False, kubelet.node_ip(), "/etc/resolv.conf")
                    found[f"{base}/{str(settings['kubelet_config_file']).strip('/')}"] = dump(config)
                if settings["kube_proxy_enabled"] and topology.runs_kubelet(member):
                    config = kube_proxy.kube_proxy_config(settings, str(member.name))
                    found[f"{base}/{str(settings['kube_proxy_config_file']).strip('/')}"] = dump(config)
            except DeployError as error:
                raise RenderError(str(error)) from None
    return found


def images(manifests: Mapping[str, str]) -> list[str]:
    """Every container image the manifests name (init containers too), sorted, once each."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                for container in node.get(key) or []:
                    if isinstance(container, dict) and container.get("image"):
                        found.add(str(container["image"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for manifest in manifests.values():
        for document in yaml.safe_load_all(manifest):
            walk(document)
    return sorted(found)


def image_scan(manifests: Mapping[str, str]) -> str:
    """The Trivy CronJob for the images of ``manifests``."""
    from deploys.templating import render

    return render(IMAGE_SCAN_TEMPLATE, images=images(manifests))


def everything(inventory: Any, hosts: Sequence[str] | None = None) -> dict[str, str]:
    """Every file ``spectra render`` writes, relative path -> text (host files of ``hosts`` only, when given;
    the addon sets are the inventory's whatever the selection)."""
    manifests = addon_manifests(inventory)
    files = {f"addons/{name}.yaml": text for name, text in manifests.items()}
    files.update(cluster_files(inventory, hosts))
    if manifests:
        files[IMAGE_SCAN_FILE] = image_scan(manifests)
    return files


def write(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write ``files`` under ``directory``: a new or empty one, or one this command wrote before (cleared
    first, so a set that is gone leaves no file behind). Files 0600, directories 0700."""
    if directory.exists():
        if not directory.is_dir():
            raise RenderError(f"{directory}: not a directory")
        entries = list(directory.iterdir())
        if entries and not (directory / MARKER).is_file():
            raise RenderError(f"{directory}: not empty and not written by `spectra render`: give a new directory")
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    (directory / MARKER).write_text("written by `spectra render`; cleared by its next run\n")
    written = []
    for relative, text in sorted(files.items()):
        path = directory / relative
        parent = directory
        for part in Path(relative).parent.parts:  # each level 0700 (parents=True would take the umask's mode)
            parent = parent / part
            parent.mkdir(mode=0o700, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(text)
        written.append(path)
    return written
