"""Predicates the settings checks share (pure): is this value a whole number, a port, a URL of a kind, a CIDR,
a Kubernetes quantity, a DNS label."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit


def is_whole(value: Any) -> bool:
    """An int that is not a bool (data files write ``True`` where they mean ``1`` by mistake)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_port(value: Any) -> bool:
    return is_whole(value) and 0 < value < 65536


def is_url(value: Any, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    """A URL with one of ``schemes`` and a host, without white space."""
    text = str(value)
    parts = urlsplit(text)
    return parts.scheme in schemes and bool(parts.netloc) and not re.search(r"\s", text)


def is_https_url(value: Any) -> bool:
    return is_url(value, ("https",))


# registry/path:tag or @sha256:digest, the characters a reference can hold (no spaces, quotes or braces)
IMAGE_REFERENCE = re.compile(
    r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
# a Kubernetes resource quantity: 100m, 1, 512Mi, 10Gi
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
# a Prometheus/Alertmanager duration: 30s, 15d, 1h30m (never negative)
PROMETHEUS_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def is_cidr(value: Any) -> bool:
    """A network written with its prefix length and no host bits (``10.0.0.0/8``, ``2001:db8::/32``)."""
    try:
        ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        return False
    return "/" in str(value)


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|Ki|Mi|Gi)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def is_quantity(value: Any) -> bool:
    """A Kubernetes resource quantity as the addons write them (``100m``, ``1``, ``64Mi``)."""
    return isinstance(value, str) and bool(_QUANTITY.match(value))


def is_dns_label(value: Any) -> bool:
    """An RFC 1123 label: a namespace, a Service, a route's name."""
    return isinstance(value, str) and bool(_DNS_LABEL.match(value))
