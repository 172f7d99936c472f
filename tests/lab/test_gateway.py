"""The API gateway on the lab: Traefik on the workers (no edge role in the lab), routes of group_data/lab.py.

Requests come from the lab host, as from the Internet, to a worker's address with the route's host name
(``curl --resolve``): TLS verified against the gateway CA of the lab's PKI (and not the cluster CA), HTTP
redirected, the security headers on every answer. The rate limit is per client address: the lab host gets a
second address on the lab bridge, so a second client really comes from elsewhere. A bounded loop from the first
address goes past shop's limit (5/s, burst 10) and gets 429s while the second, at 2 requests a second, gets
only 200s; Traefik's own metrics, scraped by Prometheus, count the 429s too.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.cluster_support import KUBECTL, control_plane, kubectl, until
from tests.lab.conftest import LAB_DIR, Lab

pytestmark = pytest.mark.lab

IMAGE = "docker.io/spectra/hello:lab"
SHOP = "shop.lab.spectra.test"  # group_data/lab.py: gateway_routes["shop"], average 5/s, burst 10
GATEWAY_CA = LAB_DIR / "pki" / "gateway" / "ca.crt"
CLUSTER_CA = LAB_DIR / "pki" / "ca.crt"
EDGE = "node2"
SECOND_CLIENT = 250  # host part of the lab host's second address on the bridge
PROMETHEUS = "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy"
REFUSED: Counter[str] = Counter()  # 429s the clients of this module got, for the metrics test


def web_manifests() -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "web"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-gateway", "namespace": "shop-web", "labels": labels},
        "spec": {
            "nodeName": "node3",  # across nodes from node2's gateway: the network policy's ipBlock, not the node's own
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "hello",
                    "image": IMAGE,
                    "args": ["serve", ":8080"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],  # fmt: skip
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop-web"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080}]},
    }
    return [pod, service]


@pytest.fixture(scope="module")
def web(converged: dict[str, Any], lab: Lab) -> Iterator[None]:
    kubectl(lab, "-n shop-web delete pod web-gateway --ignore-not-found --wait=true", check=False)
    kubectl(lab, "-n shop-web delete service web --ignore-not-found --wait=true", check=False)
    stream = "\n---\n".join(json.dumps(document) for document in web_manifests())
    result = subprocess.run(lab.ssh_args(control_plane(lab), f"{KUBECTL} apply -f -"), input=stream,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        kubectl(lab, "-n shop-web wait --for=condition=Ready pod/web-gateway --timeout=180s")
        kubectl(lab, "-n gateway rollout status daemonset/traefik --timeout=180s")
        yield
    finally:
        kubectl(lab, "-n shop-web delete pod web-gateway --ignore-not-found --wait=false", check=False)
        kubectl(lab, "-n shop-web delete service web --ignore-not-found --wait=false", check=False)


@pytest.fixture(scope="module")
def second_address(lab: Lab) -> Iterator[str]:
    """A second address of the lab host on the lab bridge: a client the gateway tells apart by its address."""
    gateway_address = urllib.parse.urlparse(json.loads((LAB_DIR / "inventory.json").read_text())["mirror_url"])
    bridge_ip = str(gateway_address.hostname)
    address = ".".join([*bridge_ip.split(".")[:3], str(SECOND_CLIENT)])
    device = subprocess.run(["ip", "-o", "-4", "addr", "show", "to", bridge_ip], capture_output=True, text=True,
                            check=True).stdout.split()[1]  # fmt: skip
    subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", device], capture_output=True, text=True)
    try:
        yield address
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", device], capture_output=True, text=True)


def curl(lab: Lab, url: str, *options: str, ca: str = str(GATEWAY_CA), source: str | None = None) -> tuple[int, str]:
    """(exit code, headers and body) of one request to ``url`` through the edge host's address."""
    host = urllib.parse.urlparse(url)
    port = host.port or (443 if host.scheme == "https" else 80)
    command = ["curl", "-sS", "-i", "-m", "10", "--cacert", ca,
               "--resolve", f"{host.hostname}:{port}:{lab.node(EDGE).address}", *options]  # fmt: skip
    if source:
        command += ["--interface", source]
    result = subprocess.run([*command, url], capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout + result.stderr


def status(lab: Lab, url: str, source: str | None = None) -> int:
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", "--cacert", str(GATEWAY_CA),
               "--resolve", f"{SHOP}:443:{lab.node(EDGE).address}"]  # fmt: skip
    if source:
        command += ["--interface", source]
    return int(subprocess.run([*command, url], capture_output=True, text=True, timeout=30).stdout or 0)


def test_a_request_reaches_the_app_over_tls_that_verifies_against_the_gateway_ca(lab: Lab, web: None) -> None:
    def served() -> tuple[bool, str]:
        code, out = curl(lab, f"https://{SHOP}/")
        return code == 0 and out.startswith("HTTP/2 200"), out

    out = until("the shop route answers through the gateway", served, timeout=120, every=2)
    assert out.rstrip().endswith("hello from web-gateway"), out  # the pod answers with its name
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip()
               for line in out.splitlines()[1:] if ":" in line}  # fmt: skip
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    # the gateway's own trust root: the cluster CA does not vouch for it
    code, out = curl(lab, f"https://{SHOP}/", ca=str(CLUSTER_CA))
    assert code == 60, out  # curl: peer certificate cannot be authenticated with the given CA certificates


def test_plain_http_is_redirected_to_https(lab: Lab, web: None) -> None:
    code, out = curl(lab, f"http://{SHOP}/cart?item=1")
    assert code == 0 and out.startswith("HTTP/1.1 301"), out
    assert f"Location: https://{SHOP}/cart?item=1" in out, out


def test_a_client_above_the_limit_gets_429s_while_another_keeps_getting_200s(
    lab: Lab, web: None, second_address: str
) -> None:
    until("the route answers", lambda: (status(lab, f"https://{SHOP}/") == 200, None), timeout=60, every=2)
    time.sleep(3)  # the first client's bucket refilled (burst 10 at 5/s)
    url = f"https://{SHOP}/"
    second: Counter[int] = Counter()
    done = threading.Event()

    def polite() -> None:  # 2 requests a second, under the average of 5
        while not done.is_set():
            second[status(lab, url, source=second_address)] += 1
            done.wait(0.5)

    thread = threading.Thread(target=polite)
    thread.start()
    started = time.monotonic()
    first = Counter(status(lab, url) for _ in range(80))  # as fast as one curl after another goes
    elapsed = time.monotonic() - started
    done.set()
    thread.join()
    rate = 80 / elapsed
    print(f"\nfirst client: {dict(first)} in {elapsed:.1f} s ({rate:.0f}/s); second client: {dict(second)}")
    assert set(first) == {200, 429}, first
    # at most the burst plus what the average refills while the loop runs (and a request of margin)
    assert first[200] <= 10 + 5 * elapsed + 2, first
    assert first[429] >= 80 - (10 + 5 * elapsed + 2), first
    assert second and set(second) == {200}, second
    REFUSED["429"] += first[429]


def test_prometheus_counts_the_gateways_429s(lab: Lab, web: None) -> None:
    """Every 429 the clients got is in Traefik's counter as Prometheus scraped it (the counter started with the
    gateway's pods, so it holds at least those)."""
    assert REFUSED["429"] > 0, "run with the rate-limit test before it"
    query = 'sum(traefik_entrypoint_requests_total{job="gateway",entrypoint="websecure",code="429"})'

    def counted() -> tuple[bool, Any]:
        url = f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        body = json.loads(kubectl(lab, f"get --raw '{url}'"))
        result = body["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) >= REFUSED["429"], result

    found = until(f"{REFUSED['429']} 429s in Prometheus", counted, timeout=120, every=5)
    print(f"\n429s: {REFUSED['429']} seen by the clients, {found[0]['value'][1]} in Traefik's metrics (Prometheus)")
