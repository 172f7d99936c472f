"""Cluster DNS: CoreDNS as the ``kube-dns`` Service in ``kube-system`` (a Kubernetes addon manifest).

This module holds the addon's settings and turns them into the manifest's template context; ``ADDON`` is its
record and ``deploys/addon.py`` pushes it (``templates/addons/coredns/coredns.yaml.j2``: ServiceAccount,
ClusterRole and binding, the Corefile ConfigMap, the Deployment and the ``kube-dns`` Service).

* Image: ``coredns_image``, by default upstream's name and the tag Kubernetes v1.36 ships (kubeadm's
  ``CoreDNSVersion`` constant in v1.36.3: v1.14.2). The lab builds exactly this reference from the CoreDNS Go
  module and serves it from its registry under the same name (``lab/images/coredns.py``), so the manifest
  is the same in the lab and in production.
* ``cluster_domain`` (the zone CoreDNS is authoritative for) and ``cluster_dns_ip`` (the ``kube-dns``
  Service's address, kubelet's ``clusterDNS``) are cluster settings (``spectra.cluster_settings``), checked
  there.
* Values are checked here (:func:`check`), before rendering: the template only places them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from deploys.addon import Addon, AddonError, addon_component

TEMPLATE = "addons/coredns/coredns.yaml.j2"

DEFAULTS: dict[str, Any] = {
    "coredns_enabled": True,  # push CoreDNS (the cluster's DNS: switch it off only for another DNS addon)
    "coredns_image": "registry.k8s.io/coredns/coredns:v1.14.2",  # the CoreDNS Kubernetes v1.36 ships
    "coredns_replicas": 2,  # Deployment replicas, spread over hosts and zones where there are several
    "coredns_forward_to": ["/etc/resolv.conf"],  # upstream resolvers for other names: addresses or a resolv.conf
    "coredns_cpu_request": "100m",  # container requests and memory limit (kubeadm's figures);
    "coredns_memory_request": "70Mi",  # no CPU limit: throttled DNS fails every pod's lookups at once
    "coredns_memory_limit": "170Mi",
}

TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()

# registry/path:tag or @sha256:digest, the characters a reference can hold (no spaces, quotes or braces).
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|Ki|Mi|Gi)?$")
# forward targets: an address (optionally with port or dns:// / tls:// scheme) or a resolv.conf-style path
_FORWARD_RE = re.compile(r"^[A-Za-z0-9_./:\[\]%-]+$")
RESOURCE_KEYS = ("coredns_cpu_request", "coredns_memory_request", "coredns_memory_limit")


def check(values: Mapping[str, Any]) -> list[str]:
    """Problems with the addon's settings, each naming its setting (pure: ``cluster_addons`` lists it among its
    checks, so ``spectra validate`` runs it too)."""
    problems = []

    def expect(condition: bool, key: str, value: Any, expected: str) -> None:
        if not condition:
            problems.append(f"{key}={value!r}: {expected}")

    image = values["coredns_image"]
    expect(isinstance(image, str) and bool(_IMAGE_RE.match(image)), "coredns_image", image,
           "an image reference such as registry.k8s.io/coredns/coredns:v1.14.2")  # fmt: skip
    replicas = values["coredns_replicas"]
    expect(isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 1,
           "coredns_replicas", replicas, "a whole number of at least 1")  # fmt: skip
    forward = values["coredns_forward_to"]
    expect(isinstance(forward, list | tuple) and bool(forward), "coredns_forward_to", forward,
           "a non-empty list of resolver addresses or a resolv.conf path")  # fmt: skip
    for target in forward if isinstance(forward, list | tuple) else []:
        expect(isinstance(target, str) and bool(_FORWARD_RE.match(target)), "coredns_forward_to", target,
               "an address (10.0.0.2, 10.0.0.2:53, tls://1.1.1.1) or a path (/etc/resolv.conf)")  # fmt: skip
    for key in RESOURCE_KEYS:
        value = values[key]
        expect(isinstance(value, str) and bool(_QUANTITY_RE.match(value)), key, value,
               "a Kubernetes quantity such as 100m or 70Mi")  # fmt: skip
    return problems


def template_context(values: Mapping[str, Any]) -> dict[str, Any]:
    """What the template places (no logic left for the template); bad settings raise ``AddonError``."""
    problems = check(values)
    if problems:
        raise AddonError("; ".join(problems))
    return {
        "cluster_domain": values["cluster_domain"],
        "cluster_dns_ip": str(values["cluster_dns_ip"]),
        "coredns_image": values["coredns_image"],
        "coredns_replicas": values["coredns_replicas"],
        "forward_to": " ".join(values["coredns_forward_to"]),
        **{key.removeprefix("coredns_"): values[key] for key in RESOURCE_KEYS},
    }


ADDON = Addon(name="coredns", defaults=DEFAULTS, templates=(TEMPLATE,), context=template_context, checks=(check,))
COMPONENT = addon_component(ADDON)
