"""The node-local apiserver balancer while an apiserver dies or restarts (tests/lab/test_cluster_ha.py
measures it on three control planes): only ready apiservers get traffic, and a connection that fails before
the checks take a dead one out goes to another one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from deploys.components import apiserver_lb
from deploys.settings import Settings

pytestmark = pytest.mark.unit

SERVERS = [["cp1", "10.0.0.11:6443"], ["cp2", "10.0.0.12:6443"], ["cp3", "10.0.0.13:6443"]]


@dataclass
class Node:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


def backend(**values: object) -> list[str]:
    settings = Settings(Node("w1", {"apiserver_lb_servers": SERVERS, **values}))
    text = apiserver_lb.haproxy_config(settings, apiserver_lb.backend_servers(settings, []))
    lines = text.split("\nbackend kube-apiservers\n", 1)[1].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_failed_connections_are_redispatched_to_another_apiserver() -> None:
    lines = backend()
    # every retry of a failed connect goes to another server, not only the last one (HAProxy's default)
    assert "option redispatch 1" in lines and "retries 3" in lines
    assert [line for line in lines if line.startswith("server ")] == [
        f"server {name} {address} check" for name, address in SERVERS
    ]


def test_an_apiserver_gets_traffic_only_while_its_readyz_answers_200() -> None:
    # A restarted apiserver listens before it has synced RBAC (it answers Forbidden to everyone then): a
    # TCP check would send clients to it. The check is the anonymous /readyz, its certificate verified.
    lines = backend()
    assert lines[1:4] == ["option httpchk", "http-check send meth GET uri /readyz", "http-check expect status 200"]
    assert "default-server inter 2s fall 3 rise 2 check-ssl verify required ca-file /etc/kubernetes/pki/ca.crt" in (
        lines
    )


def test_tcp_check_only_connects() -> None:
    lines = backend(apiserver_lb_check="tcp")
    assert not any("httpchk" in line or "http-check" in line or "check-ssl" in line for line in lines)
    assert "default-server inter 2s fall 3 rise 2" in lines


def test_unknown_check_is_refused() -> None:
    settings = Settings(Node("w1", {"apiserver_lb_check": "http"}))
    assert apiserver_lb.COMPONENT.problems(settings) == ["apiserver_lb_check='http': not one of 'readyz', 'tcp'"]
