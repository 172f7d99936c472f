"""The API gateway on the lab: Traefik on the workers (no edge role in the lab), routes of group_data/lab.py.

Requests come from the lab host, as from the Internet, to a worker's address with the route's host name
(``curl --resolve``): TLS verified against the gateway CA of the lab's PKI (and not the cluster CA), HTTP
redirected, the security headers on every answer. The rate limit is per client address: the lab host gets a
second address on the lab bridge, so a second client really comes from elsewhere. A bounded loop from the first
address goes past shop's limit (5/s, burst 10) and gets 429s while the second, at 2 requests a second, gets
only 200s; Traefik's own metrics, scraped by Prometheus, count the 429s too. A user-supplied certificate takes
over the name it covers, and when it is taken out again the PKI's serves that name and the user's is gone.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.lab.cluster_support import KUBECTL, control_plane, hello_pod, kubectl, until
from tests.lab.conftest import LAB_DIR, Lab, spectra_deploy

pytestmark = pytest.mark.lab

API = "api.lab.spectra.test"  # gateway_routes["api"]
SHOP = "shop.lab.spectra.test"  # group_data/lab.py: gateway_routes["shop"], average 5/s, burst 10
GATEWAY_CA = LAB_DIR / "pki" / "gateway" / "ca.crt"
CLUSTER_CA = LAB_DIR / "pki" / "ca.crt"
EDGE = "node2"
SECOND_CLIENT = 250  # host part of the lab host's second address on the bridge
PROMETHEUS = "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy"
REFUSED: Counter[str] = Counter()  # 429s the clients of this module got, for the metrics test


def web_manifests() -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "web"}
    # across nodes from node2's gateway: through the network policy's ipBlock, not as the node's own traffic
    pod = hello_pod("web-gateway", "shop-web", "node3", app="web")
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


def user_certificate(name: str) -> tuple[str, str]:
    """A self-signed certificate for ``name`` and its key (PEM), as an operator's own CA would hand one out."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def test_a_user_certificate_is_served_for_its_names_and_goes_with_it(lab: Lab, web: None, tmp_path: Path) -> None:
    """``gateway_certificates`` takes over the names its certificate covers (api's), the PKI's keeps the rest;
    taken out again, the PKI's certificate serves api once more and the user's leaves the cluster and the host."""
    cert, key = user_certificate(API)
    trusted = tmp_path / "user-ca.crt"
    trusted.write_text(cert)
    data = json.dumps({"api": {"cert": cert, "key": key}})

    def handshake(ca: Path) -> tuple[bool, str]:
        code, out = curl(lab, f"https://{API}/", ca=str(ca))  # TLS is what counts: any HTTP answer will do
        return code == 0, out

    served = lab.node("node1")
    try:
        result, _ = spectra_deploy(tmp_path / "on.json", "inventories/lab.py", "deploys/addons.py", "--data",
                                   f"gateway_certificates={data}")  # fmt: skip
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        until("the user's certificate served for api", lambda: handshake(trusted), timeout=60, every=2)
        assert curl(lab, f"https://{API}/")[0] == 60  # the gateway CA no longer vouches for api
        assert handshake(GATEWAY_CA)[0] is False
        assert curl(lab, f"https://{SHOP}/")[0] == 0  # shop keeps the PKI's
        files = lab.ssh(served, "ls /etc/kubernetes/pki/gateway").split()
        assert sorted(files) == ["served.list", "tls-api.crt", "tls-spectra-pki.crt"], files
    finally:
        result, _ = spectra_deploy(tmp_path / "off.json", "inventories/lab.py", "deploys/addons.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    until("the PKI's certificate served for api again", lambda: handshake(GATEWAY_CA), timeout=60, every=2)
    assert lab.ssh(served, "ls /etc/kubernetes/pki/gateway").split() == ["served.list", "tls-spectra-pki.crt"]
    assert kubectl(lab, "-n gateway get secret tls-api --ignore-not-found").strip() == ""
