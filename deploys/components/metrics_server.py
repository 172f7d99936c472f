"""metrics-server in ``kube-system``: the ``metrics.k8s.io`` API (``kubectl top``, HorizontalPodAutoscalers).

Templates under ``templates/addons/metrics-server/``: RBAC (``rbac.yaml.j2``), the serving certificate's
Secret, Deployment and Service (``metrics-server.yaml.j2``), the APIService (``apiservice.yaml.j2``).
``examples/hpa-example.yaml`` is a documented example workload with an HPA (not applied by the deploy).

* TLS verified both ways. To kubelets: their serving certificates come from the cluster CA and name the
  node's address (``spectra.pki.cluster``), so metrics-server dials ``InternalIP`` and verifies with the
  ServiceAccount's ``ca.crt`` (the cluster CA); never ``--kubelet-insecure-tls``. From the apiserver: a
  serving certificate from the cluster PKI (``metrics-server``, SAN ``metrics-server.kube-system.svc``) in a
  Secret, and the APIService's ``caBundle`` is the cluster CA; never ``insecureSkipTLSVerify``.
* Placement: kubelets accept port 10250 only from the control-plane and monitoring hosts (the firewall), and
  pods leave their node with its address, so the pods run on the monitoring hosts that run kubelet
  (``metrics_server_nodes`` names others), by node name: ``node_roles`` does not label the monitoring role.
* RBAC as upstream's: read nodes, pods and ``nodes/metrics``; delegated authentication and authorization
  (``system:auth-delegator``, ``extension-apiserver-authentication-reader``); and
  ``system:aggregated-metrics-reader``, which aggregates ``metrics.k8s.io`` reads into view, edit and admin.
* Image: upstream's ``registry.k8s.io/metrics-server/metrics-server`` at a pinned tag; the lab builds that
  reference from the Go module (``lab/images/metrics_server.py``). It runs as 65534, as upstream's image.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from pyinfra import host

from deploys import addon
from spectra import topology, values

NAMESPACE = "kube-system"
TEMPLATES = tuple(
    f"addons/metrics-server/{name}" for name in ("rbac.yaml.j2", "metrics-server.yaml.j2", "apiservice.yaml.j2")
)
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"  # the cluster CA, in every pod
TLS_DIR = "/etc/metrics-server/tls"
PORT = 10250  # upstream's container port
PKI_ID = "metrics-server"  # the serving certificate's id in the cluster PKI

DEFAULTS: dict[str, Any] = {
    "metrics_server_enabled": True,  # the metrics-server addon (kubectl top, HPAs on CPU and memory)
    "metrics_server_image": "registry.k8s.io/metrics-server/metrics-server:v0.8.0",  # upstream image, pinned
    "metrics_server_replicas": 1,  # more need as many monitoring hosts (one pod per host preferred)
    "metrics_server_metric_resolution": "15s",  # how often kubelets are scraped (the HPA's freshest data)
    # node names it may run on; None: the monitoring hosts that run kubelet (the firewall lets them reach kubelets)
    "metrics_server_nodes": None,
    "metrics_server_cpu_request": "100m",  # upstream's requests
    "metrics_server_memory_request": "200Mi",
    "metrics_server_cpu_limit": "1",  # bursts when it starts and lists every pod
    "metrics_server_memory_limit": "500Mi",
}

_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_DURATION = re.compile(r"^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")
_NODE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
RESOURCE_KEYS = (
    "metrics_server_cpu_request",
    "metrics_server_memory_request",
    "metrics_server_cpu_limit",
    "metrics_server_memory_limit",
)
# metrics-server refuses a resolution whose nine tenths are below its 10 s kubelet request timeout
MIN_RESOLUTION_SECONDS = 12


def resolution_seconds(value: Any) -> int | None:
    """``"1m30s"`` -> 90; None for anything that is not whole hours, minutes and seconds."""
    match = _DURATION.match(str(value)) if isinstance(value, str) and value else None
    if not match:
        return None
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []

    def expect(ok: bool, key: str, expected: str) -> None:
        if not ok:
            problems.append(f"{key}={settings[key]!r}: {expected}")

    image = settings["metrics_server_image"]
    expect(isinstance(image, str) and bool(_IMAGE.match(image)), "metrics_server_image",
           "an image reference such as registry.k8s.io/metrics-server/metrics-server:v0.8.0")  # fmt: skip
    replicas = settings["metrics_server_replicas"]
    expect(isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 1,
           "metrics_server_replicas", "a whole number of at least 1")  # fmt: skip
    seconds = resolution_seconds(settings["metrics_server_metric_resolution"])
    expect(seconds is not None and seconds >= MIN_RESOLUTION_SECONDS, "metrics_server_metric_resolution",
           f"a duration such as 15s or 1m, at least {MIN_RESOLUTION_SECONDS}s (metrics-server's kubelet "
           "timeout is 10 s)")  # fmt: skip
    for key in RESOURCE_KEYS:
        value = settings[key]
        expect(values.is_quantity(value), key,
               "a Kubernetes quantity such as 100m, 1 or 200Mi")  # fmt: skip
    nodes = settings["metrics_server_nodes"]
    expect(nodes is None or (isinstance(nodes, list | tuple) and bool(nodes)
                             and all(isinstance(n, str) and _NODE.match(n) for n in nodes)),
           "metrics_server_nodes", "None (the monitoring hosts) or a non-empty list of node names")  # fmt: skip
    return problems


def nodes(settings: Mapping[str, Any]) -> list[str]:
    """Where the pods may run: ``metrics_server_nodes``, else every monitoring host that runs kubelet."""
    kubelets = {str(member.name) for member in topology.kubelet_hosts(host.state.inventory)}
    if settings["metrics_server_nodes"]:
        unknown = sorted(set(settings["metrics_server_nodes"]) - kubelets)
        if unknown:
            raise addon.AddonError(f"metrics_server_nodes: {unknown} are not inventory hosts that run kubelet")
        return sorted(settings["metrics_server_nodes"])
    monitoring = topology.with_role(host.state.inventory, topology.MONITORING)
    found = sorted(str(member.name) for member in monitoring if str(member.name) in kubelets)
    if not found:
        raise addon.AddonError(
            "metrics-server must run where kubelets accept it (the firewall's monitoring hosts): give a host "
            "that runs kubelet the monitoring role, or set metrics_server_nodes"
        )
    return found


def serving_certificate() -> dict[str, str]:
    """The cluster CA and metrics-server's serving certificate and key (PEM), from the cluster PKI."""
    from deploys.components import pki

    bundle = pki.cluster_pki(*pki.cluster_spec(list(host.state.inventory)))
    return {
        "ca.crt": bundle.cert("ca").decode(),
        "tls.crt": bundle.cert(PKI_ID).decode(),
        "tls.key": bundle.key(PKI_ID).decode(),
    }


def args(settings: Mapping[str, Any]) -> list[str]:
    """The container's arguments: every TLS peer verified, nothing self-signed."""
    return [
        f"--secure-port={PORT}",
        f"--tls-cert-file={TLS_DIR}/tls.crt",
        f"--tls-private-key-file={TLS_DIR}/tls.key",
        f"--kubelet-certificate-authority={SA_CA}",
        # kubelet serving certificates name the node's address, not its host name
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--metric-resolution={settings['metrics_server_metric_resolution']}",
    ]


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    placement = nodes(settings)  # refused before anything is applied when nowhere can reach the kubelets
    tls = serving_certificate()
    return {
        "namespace": NAMESPACE,
        "image": settings["metrics_server_image"],
        "replicas": settings["metrics_server_replicas"],
        "args": args(settings),
        "port": PORT,
        "tls_dir": TLS_DIR,
        "nodes": placement,
        "tls": tls,
        "ca_bundle": base64.b64encode(tls["ca.crt"].encode()).decode(),
        "resources": {key.removeprefix("metrics_server_"): settings[key] for key in RESOURCE_KEYS},
    }


ADDON = addon.Addon(
    name="metrics-server",
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    checks=(check,),
)
COMPONENT = addon.addon_component(ADDON)
