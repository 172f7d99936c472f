"""The API gateway addon: settings refused by key, the Gateway/routes/middlewares/grants generated from group data,
certificates from the gateway CA or the user, the CRDs out of verified module zips, and what the other owners
derive from it (network policies, firewall, Prometheus, compliance's expected listeners)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from compliance.context import HostContext
from compliance.listeners import expected_listeners
from deploys.components import gateway, network_policies
from facts.addons import AddonSets
from spectra import go_modules
from spectra.pki import gateway as gateway_pki
from spectra.pki.x509 import cert_pem, cert_sans, issued_by, key_pem, load_cert
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

CP = {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11"}
WORKERS = {
    "node2": {"roles": ["workers", "monitoring"], "ssh_hostname": "10.0.0.12"},
    "node3": {"roles": ["workers"], "ssh_hostname": "10.0.0.13"},
}
SERVICES = {
    "shop-web/web": {"selector": {"app.kubernetes.io/name": "web"}, "ports": {"http": 8080}},
    "shop-api/api": {"selector": {"app.kubernetes.io/name": "api"}, "ports": {"http": 8081, "admin": 9000}},
}
ROUTES: dict[str, dict[str, Any]] = {
    "shop": {"hostnames": ["shop.example.com"], "to": "shop-web/web", "port": "http",
             "rate_limit": {"average": 5, "burst": 10}},
    "api": {"hostnames": ["api.example.com", "api.example.org"], "to": "shop-api/api", "port": "http",
            "path": "/v1"},
}  # fmt: skip
Docs = dict[tuple[str, str, str], dict[str, Any]]


def settings(**data: Any) -> dict[str, Any]:
    return {**gateway.DEFAULTS, "application_services": SERVICES, "gateway_routes": ROUTES, "gateway_enabled": True,
            "kube_router_enabled": True, "network_policies_enabled": True, **data}  # fmt: skip


def self_signed(names: list[str], days: int = 30, start_days: int = -1) -> tuple[str, str, str]:
    """(certificate PEM, its key PEM, another key PEM) for ``names``."""
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now + dt.timedelta(days=start_days))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert_pem(cert).decode(), key_pem(key).decode(), key_pem(other).decode()


def manifest(tmp_path: Path, component: Any = gateway.COMPONENT, set_name: str = "gateway", **data: Any) -> Docs:
    common = {"pki_dir": str(tmp_path / "pki"), "application_services": SERVICES, "gateway_routes": ROUTES,
              "gateway_enabled": True, **data}  # fmt: skip
    others = {name: {**values, **common} for name, values in WORKERS.items()}
    result = run_component(component, facts={AddonSets: {}}, data={**CP, **common}, others=others)
    docs = list(yaml.safe_load_all(result.uploads[f"/etc/kubernetes/addons/{set_name}.yaml.spectra-new"]))
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


# --- settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": "shop-web/nope"}, "gateway_routes['shop'].to='shop-web/nope': not a declared application service"),
        ({"port": "grpc"}, "gateway_routes['shop'].port='grpc': not a port of shop-web/web (['http'])"),
        ({"rate_limit": {"average": 0, "burst": 10}}, "gateway_routes['shop'].rate_limit="),
        ({"rate_limit": {"average": 5, "burst": -1}}, "both above 0"),
        ({"hostnames": ["Shop_Example"]}, "gateway_routes['shop'].hostnames=['Shop_Example']: DNS names"),
        ({"hostnames": ["api.example.com"], "path": "/v1"}, "api.example.com/v1 is also routed by"),
        ({"path": "v1"}, "gateway_routes['shop'].path='v1': a path prefix"),
    ],
)
def test_bad_routes_are_refused_by_key(change: dict[str, Any], message: str) -> None:
    routes = {**ROUTES, "shop": {**ROUTES["shop"], **change}}
    problems = gateway.check(settings(gateway_routes=routes))
    assert any(message in problem for problem in problems), problems


def test_good_settings_pass_and_the_default_limit_must_be_positive() -> None:
    assert gateway.check(settings()) == []
    assert gateway.check(settings(gateway_rate_limit={"average": 0, "burst": 0})) == [
        "gateway_rate_limit={'average': 0, 'burst': 0}: {'average': N, 'burst': M}, requests per second per "
        "client, both above 0"
    ]
    assert gateway.check(settings(gateway_https_port=80)) == [
        "gateway ports [80, 80, 9180]: http, https and admin ports differ"
    ]


def test_user_certificates_are_checked_key_validity_and_names() -> None:
    cert, key, other_key = self_signed(["shop.example.com"])
    assert gateway.check(settings(gateway_certificates={"shop": {"cert": cert, "key": key}})) == []
    mismatch = gateway.check(settings(gateway_certificates={"shop": {"cert": cert, "key": other_key}}))
    assert mismatch == [
        "gateway_certificates['shop']: the key does not match the certificate (subject CN=shop.example.com)"
    ]
    expired, expired_key, _ = self_signed(["shop.example.com"], days=-1, start_days=-10)
    assert "not now" in gateway.check(settings(gateway_certificates={"old": {"cert": expired, "key": expired_key}}))[0]
    assert "not a PEM certificate" in gateway.check(settings(gateway_certificates={"x": {"cert": "no", "key": key}}))[0]


def test_a_wildcard_covers_one_label_only() -> None:
    assert gateway.covers("*.example.com", "api.example.com")
    assert not gateway.covers("*.example.com", "a.b.example.com")
    assert not gateway.covers("*.example.com", "example.com")
    assert gateway.covers("shop.example.com", "shop.example.com")


# --- what is applied -----------------------------------------------------------------------------------------


def test_the_gateway_listens_on_the_workers_with_one_https_listener_per_host_name(tmp_path: Path) -> None:
    docs = manifest(tmp_path)
    pod = docs[("DaemonSet", "gateway", "traefik")]["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                            "values": ["node2", "node3"]}]}]  # fmt: skip
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert "--providers.kubernetesgateway.namespaces=gateway,shop-api,shop-web" in container["args"]
    assert "--global.sendAnonymousUsage=false" in container["args"]
    listeners = docs[("Gateway", "gateway", "spectra")]["spec"]["listeners"]
    assert [(one["name"], one["port"], one.get("hostname")) for one in listeners] == [
        ("http", 80, None),
        ("https-api-example-com", 443, "api.example.com"),
        ("https-api-example-org", 443, "api.example.org"),
        ("https-shop-example-com", 443, "shop.example.com"),
    ]
    assert {one["tls"]["certificateRefs"][0]["name"] for one in listeners[1:]} == {gateway.PKI_SECRET}


def test_each_route_has_its_headers_rate_limit_and_backend(tmp_path: Path) -> None:
    docs = manifest(tmp_path)
    route = docs[("HTTPRoute", "gateway", "api")]["spec"]
    assert [ref["sectionName"] for ref in route["parentRefs"]] == ["https-api-example-com", "https-api-example-org"]
    (rule,) = route["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert rule["backendRefs"] == [{"name": "api", "namespace": "shop-api", "port": 8081}]
    headers, limit = rule["filters"]
    assert {"name": "X-Frame-Options", "value": "DENY"} in headers["responseHeaderModifier"]["set"]
    assert limit["extensionRef"] == {"group": "traefik.io", "kind": "Middleware", "name": "rate-limit-api"}
    assert docs[("Middleware", "gateway", "rate-limit-api")]["spec"]["rateLimit"] == {
        "average": 100, "burst": 200, "period": "1s"}  # fmt: skip
    assert docs[("Middleware", "gateway", "rate-limit-shop")]["spec"]["rateLimit"]["average"] == 5
    redirect = docs[("HTTPRoute", "gateway", "redirect-to-https")]["spec"]
    assert redirect["parentRefs"] == [{"name": "spectra", "sectionName": "http"}]
    assert redirect["rules"][0]["filters"][0]["requestRedirect"] == {"scheme": "https", "statusCode": 301}
    for namespace in ("shop-api", "shop-web"):
        grant = docs[("ReferenceGrant", namespace, "spectra-gateway-routes")]["spec"]
        assert grant["from"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "gateway"}]


def test_the_pki_certificate_names_the_hosts_no_user_certificate_covers(tmp_path: Path) -> None:
    cert, key, _ = self_signed(["*.example.com"])
    docs = manifest(tmp_path, gateway_certificates={"wild": {"cert": cert, "key": key}})
    listeners = {one["name"]: one["tls"]["certificateRefs"][0]["name"]
                 for one in docs[("Gateway", "gateway", "spectra")]["spec"]["listeners"][1:]}  # fmt: skip
    assert listeners == {"https-api-example-com": "tls-wild", "https-api-example-org": gateway.PKI_SECRET,
                         "https-shop-example-com": "tls-wild"}  # fmt: skip
    issued = docs[("Secret", "gateway", gateway.PKI_SECRET)]["stringData"]
    leaf, ca = load_cert(issued["tls.crt"].encode()), load_cert(issued["ca.crt"].encode())
    assert cert_sans(leaf) == (("api.example.org",), ())
    assert issued_by(leaf, ca) and ca.subject.rfc4514_string() == "CN=spectra-gateway-ca"
    assert docs[("Secret", "gateway", "tls-wild")]["stringData"] == {"tls.crt": cert, "tls.key": key}


def test_the_gateway_certificate_is_kept_until_its_names_change(tmp_path: Path) -> None:
    first = gateway_pki.ensure(tmp_path, ("a.example.com",), "ecdsa-p256", 3650, 365, 30)
    again = gateway_pki.ensure(tmp_path, ("a.example.com",), "ecdsa-p256", 3650, 365, 30)
    assert again.cert_pem == first.cert_pem and again.changes == ()
    moved = gateway_pki.ensure(tmp_path, ("a.example.com", "b.example.com"), "ecdsa-p256", 3650, 365, 30)
    assert moved.ca_pem == first.ca_pem and moved.cert_pem != first.cert_pem
    assert moved.changes and moved.changes[0].startswith("issued gateway/server: ")
    assert (tmp_path / "gateway" / "ca.key").stat().st_mode & 0o777 == 0o600


def test_edge_hosts_win_over_workers_and_must_be_nodes(tmp_path: Path) -> None:
    data = {"roles": ["workers", "edge"], "cluster_node_roles": ["control_plane", "workers", "edge"]}
    WORKERS_EDGE = {**WORKERS, "node3": {**WORKERS["node3"], **data}}
    members = [_Member(name, values) for name, values in {"node1": CP, **WORKERS_EDGE}.items()]
    assert [m.name for m in gateway.edge_hosts(members)] == ["node3"]
    lone = [_Member("edge1", {"roles": ["edge"]}), *members]
    with pytest.raises(gateway.addon.AddonError, match=r"edge hosts \['edge1'\] run no kubelet"):
        gateway.edge_hosts(lone)


class _Member:
    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name, self.data = name, data


# --- the CRDs ------------------------------------------------------------------------------------------------


def module_zip(module: str, version: str, files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in files.items():
            archive.writestr(f"{module}@{version}/{path}", text)
    return buffer.getvalue()


CRD = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {name}\nspec: {{}}\n"


@pytest.fixture()
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module proxy in a directory (file:// URLs), the two modules in it, their hashes pinned."""
    root = tmp_path / "proxy"
    pins: dict[str, dict[str, str]] = {}
    for module, version, path, name in (
        (
            gateway.GATEWAY_API_MODULE,
            "v1.6.3",
            "config/crd/standard/gateways.yaml",
            "gateways.gateway.networking.k8s.io",
        ),
        (gateway.TRAEFIK_MODULE, "v3.6.12", gateway.TRAEFIK_FILES[0], "middlewares.traefik.io"),
    ):
        data = module_zip(module, version, {path: CRD.format(name=name), "README.md": "not a manifest"})
        target = root / go_modules.escaped(module) / "@v" / f"{version}.zip"
        target.parent.mkdir(parents=True)
        target.write_bytes(data)
        pins.setdefault(module, {})[version] = go_modules.hash1(data)
    monkeypatch.setattr(gateway, "module_pins", lambda: pins)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root


def test_the_crds_come_out_of_the_verified_module_zips(tmp_path: Path, proxy: Path) -> None:
    docs = manifest(tmp_path, gateway.CRDS_COMPONENT, "gateway-crds", gateway_module_proxy=f"file://{proxy}")
    assert sorted(name for _, _, name in docs) == ["gateways.gateway.networking.k8s.io", "middlewares.traefik.io"]
    # cached: a second render needs no proxy
    again = manifest(tmp_path, gateway.CRDS_COMPONENT, "gateway-crds", gateway_module_proxy="http://127.0.0.1:9")
    assert again == docs


def test_a_tampered_module_zip_is_refused_and_not_cached(tmp_path: Path, proxy: Path) -> None:
    target = proxy / go_modules.escaped(gateway.TRAEFIK_MODULE) / "@v" / "v3.6.12.zip"
    target.write_bytes(module_zip(gateway.TRAEFIK_MODULE, "v3.6.12", {gateway.TRAEFIK_FILES[0]: "kind: Evil\n"}))
    with pytest.raises(Exception, match=r"its hash is h1:.*the pinned one h1:.*refused"):
        manifest(tmp_path, gateway.CRDS_COMPONENT, "gateway-crds", gateway_module_proxy=f"file://{proxy}")
    assert not (tmp_path / "cache" / "spectra" / "go-modules" / "github.com" / "traefik").exists()


def test_hash1_is_go_s_dirhash() -> None:
    # golang.org/x/mod/sumdb/dirhash: sha256 over "<sha256 hex>  <name>\n" lines, in name order
    data = module_zip("example.com/m", "v1.0.0", {"b.txt": "b\n", "a.txt": "a\n"})
    import base64
    import hashlib

    lines = "".join(f"{hashlib.sha256(t.encode()).hexdigest()}  example.com/m@v1.0.0/{n}\n"
                    for n, t in (("a.txt", "a\n"), ("b.txt", "b\n")))  # fmt: skip
    assert go_modules.hash1(data) == "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode()
    assert go_modules.escaped("github.com/BurntSushi/toml") == "github.com/!burnt!sushi/toml"


# --- what other owners derive from it ----------------------------------------------------------------------


def test_routed_ports_are_open_to_the_edge_hosts_only() -> None:
    data = {**settings(), "network_policies_namespaces": ["shop-api", "shop-web"], "network_allows": []}
    sources = ["10.0.0.12/32", "10.0.0.13/32"]
    policies = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
                for p in network_policies.policies({**network_policies.DEFAULTS, **data}, sources)}  # fmt: skip
    rules = policies[("shop-api", "allow-to-api")]["spec"]["ingress"]
    assert rules == [{"from": [{"ipBlock": {"cidr": "10.0.0.12/32"}}, {"ipBlock": {"cidr": "10.0.0.13/32"}}],
                      "ports": [{"protocol": "TCP", "port": 8081}]}]  # fmt: skip
    closed = network_policies.policies({**network_policies.DEFAULTS, **data, "gateway_enabled": False}, sources)
    assert not any(p["metadata"]["name"] == "allow-to-api" for p in closed)


def test_compliance_expects_traefik_on_the_edge_hosts_only() -> None:
    on = {"gateway_enabled": True}
    edge = expected_listeners(HostContext("w", roles=["workers"], data={**on, "gateway_edge": True}))
    assert {port: edge[port] for port in (80, 443, 9180)} == {80: "traefik", 443: "traefik", 9180: "traefik"}
    assert 443 not in expected_listeners(HostContext("w", roles=["workers"], data=on))


def test_the_firewall_opens_the_gateway_ports_on_the_edge_hosts_only() -> None:
    from pyinfra.facts.deb import DebPackages

    from deploys.components import firewall
    from facts.config_state import ConfigState
    from facts.connection import DeploySource

    facts: dict[Any, Any] = {
        DebPackages: {"nftables": {"1.0.6-2"}},
        ConfigState: {"files": {}, "units": {}},
        DeploySource: None,
    }
    common = {"gateway_enabled": True, "gateway_cidrs": ["203.0.113.0/24"]}
    staged = "/etc/nftables.d/.spectra.nft.spectra-new"

    def rules(data: dict[str, Any], others: dict[str, dict[str, Any]]) -> str:
        result = run_component(firewall.COMPONENT, facts=facts, data={**data, **common},
                               others={name: {**values, **common} for name, values in others.items()})  # fmt: skip
        return result.uploads[staged]

    worker = rules({**WORKERS["node2"]}, {"node1": CP, "node3": WORKERS["node3"]})
    assert 'tcp dport { 80, 443 } ip saddr @gateway_v4 accept comment "API gateway"' in worker
    assert 'tcp dport 9180 ip saddr @monitoring_v4 accept comment "API gateway metrics from monitoring"' in worker
    assert "203.0.113.0/24" in worker
    control_plane = rules(CP, WORKERS)
    assert "API gateway" not in control_plane and "203.0.113.0/24" not in control_plane


def test_the_served_certificates_are_kept_on_the_first_control_plane(tmp_path: Path) -> None:
    from facts.config_state import ConfigState

    cert, key, _ = self_signed(["shop.example.com"])
    common = {"pki_dir": str(tmp_path / "pki"), "application_services": SERVICES, "gateway_routes": ROUTES,
              "gateway_enabled": True, "gateway_certificates": {"shop": {"cert": cert, "key": key}}}  # fmt: skip
    others = {name: {**values, **common} for name, values in WORKERS.items()}
    facts: dict[Any, Any] = {ConfigState: {"files": {}, "units": {}}}
    result = run_component(gateway.CERT_FILES_COMPONENT, facts=facts, data={**CP, **common}, others=others)
    directory = "/etc/kubernetes/pki/gateway"
    assert result.uploads[f"{directory}/.tls-shop.crt.spectra-new"] == cert
    assert "PRIVATE KEY" not in result.uploads[f"{directory}/.tls-spectra-pki.crt.spectra-new"]
    assert result.uploads[f"{directory}/.served.list.spectra-new"] == "tls-shop.crt\ntls-spectra-pki.crt\n"
    commands = [command for op in result.ops for command in op.commands]
    assert (f"find {directory} -maxdepth 1 -name '*.crt' ! -name tls-shop.crt ! -name tls-spectra-pki.crt -delete"
            in commands)  # fmt: skip
    worker = run_component(gateway.CERT_FILES_COMPONENT, facts=facts, data={**WORKERS["node2"], **common},
                           others={"node1": {**CP, **common}})  # fmt: skip
    assert worker.ops == []
