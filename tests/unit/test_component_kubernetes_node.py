"""Node side of the cluster: pod network, local apiserver balancer, kubelet, kube-proxy, role labels, addons.

Facts in, commands out (tests/unit/pyinfra_harness.py), plus the pure functions that turn the inventory into
pod ranges, routes and labels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError

from deploys.components import apiserver_lb, kube_proxy, kubelet, node_roles, pod_network
from deploys.operations.download import stamp_path
from deploys.settings import Settings
from facts.cgroup import CgroupVersion
from facts.config_state import ConfigState
from facts.files import FileStates
from facts.kubernetes_nodes import KubernetesNodes
from facts.systemd import SystemdUnits
from tests.unit.component_facts import RUNNING, files_from_uploads, fresh
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

KUBELET_SUM = "c" * 64
PROXY_SUM = "d" * 64
SUMS = {"v1.36.3": {"amd64": {"kubelet": KUBELET_SUM, "kube-proxy": PROXY_SUM}}}
NODE = {"roles": ["workers"], "ssh_hostname": "10.0.0.12", "zone": "us-east-1b", "region": "us-east-1"}


@dataclass
class Member:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


def members(*specs: tuple[str, str, list[str]], **extra: dict[str, Any]) -> list[Member]:
    return [
        Member(name, {"ssh_hostname": address, "roles": roles, **extra.get(name, {})}) for name, address, roles in specs
    ]


def empty_config_state(paths: list[str], units: list[str], **_: Any) -> dict[str, Any]:
    return {"files": {path: None for path in paths}, "units": {unit: None for unit in units}}


# --- pod network: ranges from the inventory -----------------------------------------------------------


def test_pod_range_from_the_low_bits_of_the_address() -> None:
    assert pod_network.derived_pod_cidr("198.18.0.12", "10.244.0.0/16", 24) == "10.244.12.0/24"
    assert pod_network.derived_pod_cidr("10.1.2.77", "10.244.0.0/16", 24) == "10.244.77.0/24"
    # /20 ranges in a /12: 8 bits of index (10.0.3.5 -> index 5 of the low 8 bits)
    assert pod_network.derived_pod_cidr("10.0.3.5", "10.64.0.0/12", 20) == "10.64.80.0/20"


def test_pod_range_index_zero_and_bad_prefix_are_refused() -> None:
    with pytest.raises(ValueError, match="index 0"):
        pod_network.derived_pod_cidr("10.0.0.0", "10.244.0.0/16", 24)
    with pytest.raises(ValueError, match="must be longer"):
        pod_network.derived_pod_cidr("10.0.0.5", "10.244.0.0/16", 16)


def test_pod_ranges_of_the_inventory_and_their_overlaps() -> None:
    nodes = members(("n2", "10.0.1.12", ["workers"]), ("n1", "10.0.0.11", ["control_plane"]))
    assert pod_network.pod_ranges(nodes, "10.244.0.0/16", 24) == {
        "n1": ("10.244.11.0/24", "10.0.0.11"),
        "n2": ("10.244.12.0/24", "10.0.1.12"),
    }
    clash = members(("a", "10.0.0.12", ["workers"]), ("b", "10.0.1.12", ["workers"]))
    with pytest.raises(DeployError, match="pod ranges overlap: a 10.244.12.0/24 and b 10.244.12.0/24"):
        pod_network.pod_ranges(clash, "10.244.0.0/16", 24)
    fixed = members(("a", "10.0.0.12", ["workers"]), ("b", "10.0.1.12", ["workers"]), b={"pod_cidr": "10.244.200.0/24"})
    assert pod_network.pod_ranges(fixed, "10.244.0.0/16", 24)["b"] == ("10.244.200.0/24", "10.0.1.12")
    outside = members(("a", "10.0.0.12", ["workers"]), a={"pod_cidr": "192.168.0.0/24"})
    with pytest.raises(DeployError, match="not inside pod_network_cidr"):
        pod_network.pod_ranges(outside, "10.244.0.0/16", 24)


def test_cni_config_routes_and_masquerade() -> None:
    config = json.loads(pod_network.cni_config("spectra", "cni0", "10.244.12.0/24", 1500))
    bridge, portmap = config["plugins"]
    assert bridge["type"] == "bridge" and bridge["isGateway"] and not bridge["ipMasq"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.12.0/24", "gateway": "10.244.12.1"}]]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    script = pod_network.routes_script([("10.244.11.0/24", "10.0.0.11"), ("10.244.13.0/24", "10.0.0.13")])
    assert "ip route replace 10.244.11.0/24 via 10.0.0.11 proto static" in script
    assert "ip route replace 10.244.13.0/24 via 10.0.0.13 proto static" in script
    rules = pod_network.nat_rules("10.244.0.0/16")
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in rules
    # replaces its own table only: never a flush of the ruleset (kube-proxy's tables stay)
    assert "delete table ip spectra_pod_nat" in rules and "flush ruleset" not in rules


def test_pod_network_first_run_installs_and_starts_routes() -> None:
    result = run_deploy(pod_network.pod_network, facts={ConfigState: empty_config_state}, data=NODE)
    cni = result.op("CNI bridge network config")
    assert any("10-spectra-bridge.conflist" in command for command in cni.commands)
    routes = result.op("Routes to other nodes' pod ranges").commands
    assert "systemctl daemon-reload" in routes and "systemctl start spectra-pod-routes.service" in routes
    nat = result.op("Pod masquerade").commands
    assert any(command.startswith("( nft -c -f") for command in nat)
    assert nat[-1] == "nft -f /etc/nftables.d/spectra-pod-nat.nft"
    assert len(result.fact_reads) == 1  # three file sets, one remote command


def test_cni_files_are_root_only() -> None:
    """CIS 1.1.9: the network list 0600, host-local through the wrapper that keeps its state files 0600."""
    result = run_deploy(pod_network.pod_network, facts={ConfigState: empty_config_state}, data=NODE)
    conflist, wrapper = "/etc/cni/net.d/10-spectra-bridge.conflist", "/usr/lib/cni/spectra-host-local"
    staged = {path: path.replace("/10-", "/.10-").replace("/spectra-host", "/.spectra-host") + ".spectra-new"
              for path in (conflist, wrapper)}  # fmt: skip
    state = "/var/lib/cni/networks/spectra"
    assert result.op("CNI bridge network config").commands == [
        "mkdir -p /usr/lib/cni",
        f"upload {staged[wrapper]} sha256={sha256(result.uploads[staged[wrapper]])}",
        f"chown root:root {staged[wrapper]} && chmod 755 {staged[wrapper]}",
        f"mv -f {staged[wrapper]} {wrapper}",
        "mkdir -p /etc/cni/net.d",
        f"upload {staged[conflist]} sha256={sha256(result.uploads[staged[conflist]])}",
        f"chown root:root {staged[conflist]} && chmod 600 {staged[conflist]}",
        f"mv -f {staged[conflist]} {conflist}",
        f"if [ -d {state} ]; then find {state} -type f -perm /0177 -exec chmod 0600 {{}} +; fi",
    ]
    assert json.loads(result.uploads[staged[conflist]])["plugins"][0]["ipam"]["type"] == "spectra-host-local"
    assert result.uploads[staged[wrapper]].splitlines()[3:] == [
        "umask 077",
        '/usr/lib/cni/host-local "$@"',
        "status=$?",
        f"find {state} -type f -perm /0177 -exec chmod 0600 {{}} + 2>/dev/null",
        "exit $status",
    ]
    # upstream plugins: the wrapper beside them, calling theirs
    upstream = run_deploy(pod_network.pod_network, facts={ConfigState: empty_config_state},
                          data={**NODE, "container_runtime_install_method": "upstream"})  # fmt: skip
    assert '/opt/cni/bin/host-local "$@"' in upstream.uploads["/opt/cni/bin/.spectra-host-local.spectra-new"]
    # switched off: host-local itself, no wrapper, nothing tightened
    plain = run_deploy(pod_network.pod_network, facts={ConfigState: empty_config_state},
                       data={**NODE, "pod_network_private_ipam_state": False})  # fmt: skip
    assert json.loads(plain.uploads[staged[conflist]])["plugins"][0]["ipam"]["type"] == "host-local"
    assert staged[wrapper] not in plain.uploads
    assert not any("find" in command for command in plain.op("CNI bridge network config").commands)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_pod_network_skips_hosts_without_a_kubelet_role() -> None:
    result = run_component(pod_network.COMPONENT, facts={}, data={**NODE, "roles": ["etcd"]})
    assert result.commands == [] and result.fact_reads == []


def test_pod_routes_follow_the_inventory_and_node_address() -> None:
    others = {
        "cp1": {"roles": ["control_plane", "etcd"], "node_address": "10.0.0.11", "ssh_hostname": "203.0.113.11"},
        "mon1": {"roles": ["monitoring"], "ssh_hostname": "10.0.0.31"},  # runs no kubelet: no route
    }
    result = run_component(pod_network.COMPONENT, facts={ConfigState: empty_config_state}, data=NODE, others=others)
    script = result.uploads["/usr/local/sbin/.spectra-pod-routes.spectra-new"]
    assert script.splitlines()[3:] == ["ip route replace 10.244.11.0/24 via 10.0.0.11 proto static"]
    conflist = json.loads(result.uploads["/etc/cni/net.d/.10-spectra-bridge.conflist.spectra-new"])
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.12.0/24", "gateway": "10.244.12.1"}]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pod_network_node_prefix": 16}, "pod_network_node_prefix=16: longer than pod_network_cidr 10.244.0.0/16"),
        ({"pod_cidr": "192.168.0.0/24"}, "pod_cidr='192.168.0.0/24': not inside pod_network_cidr"),
        ({"pod_network_bridge": "a-very-long-bridge-name"}, "pod_network_bridge='a-very-long-bridge-name'"),
    ],
)
def test_pod_network_bad_settings_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match="invalid settings") as error:
        run_component(pod_network.COMPONENT, facts={}, data={**NODE, **data})
    assert message in str(error.value)


# --- local apiserver balancer --------------------------------------------------------------------------


def settings_of(name: str, data: dict[str, Any]) -> Settings:
    """A member's settings, every key with its owner's default (what a deploy reads)."""
    return Settings(Member(name, data))


def test_haproxy_config_lists_every_apiserver() -> None:
    servers = [["cp1", "10.0.0.11:6443"], ["cp2", "[fd00::2]:6443"]]
    settings = settings_of("w1", {"apiserver_lb_servers": servers})
    text = apiserver_lb.haproxy_config(settings, apiserver_lb.backend_servers(settings, []))
    assert "bind 127.0.0.1:6443" in text
    assert "server cp1 10.0.0.11:6443 check" in text and "server cp2 [fd00::2]:6443 check" in text
    assert "mode tcp" in text  # TLS passes through: client certificates reach the apiservers


def test_balancer_listens_on_apiserver_local_address_in_front_of_every_control_plane() -> None:
    inventory = members(
        ("cp2", "10.0.0.12", ["control_plane", "etcd"]),
        ("w1", "10.0.1.21", ["workers"]),
        ("cp1", "203.0.113.11", ["control_plane", "etcd"]),
        cp1={"node_address": "10.0.0.11", "private_ip": "10.0.0.99"},
        cp2={"node_address": "fd00::12"},
    )
    settings = settings_of("w1", {"apiserver_local_address": "127.0.0.1:7443", "apiserver_port": 8443})
    servers = apiserver_lb.backend_servers(settings, inventory)
    assert servers == [("cp1", "10.0.0.11:8443"), ("cp2", "[fd00::12]:8443")]
    text = apiserver_lb.haproxy_config(settings, servers)
    assert "bind 127.0.0.1:7443" in text
    assert "ca-file /etc/kubernetes/pki/ca.crt" in text  # the cluster CA, where the PKI installs it


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"apiserver_lb_check": "http"}, "apiserver_lb_check='http': not one of 'readyz', 'tcp'"),
        ({"apiserver_lb_check_interval": "2 seconds"}, "apiserver_lb_check_interval='2 seconds': an HAProxy time"),
        ({"apiserver_lb_servers": [["cp1", "10.0.0.11"]]}, "apiserver_lb_servers: ['cp1', '10.0.0.11']"),
    ],
)
def test_balancer_bad_settings_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match="invalid settings") as error:
        run_component(apiserver_lb.COMPONENT, facts={}, data={**NODE, **data})
    assert message in str(error.value)


def test_balancer_first_run_installs_checks_and_starts() -> None:
    others = {"cp1": {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11"}}
    facts = {ConfigState: empty_config_state, "deb.DebPackages": {}}
    result = run_component(apiserver_lb.COMPONENT, facts=facts, data=NODE, others=others)
    assert "server cp1 10.0.0.11:6443 check" in result.uploads["/etc/haproxy/.haproxy.cfg.spectra-new"]
    assert "install --no-install-recommends haproxy" in result.op("Install HAProxy").commands[-1]
    commands = result.op("HAProxy: local").commands
    assert any(command.startswith("( haproxy -c -q -f /etc/haproxy/.haproxy.cfg.spectra-new )") for command in commands)
    assert "systemctl start haproxy.service" in commands


def test_balancer_reloads_on_a_changed_config() -> None:
    data = {**NODE, "apiserver_lb_servers": [["cp1", "10.0.0.11:6443"]]}
    state = {
        "files": {"/etc/haproxy/haproxy.cfg": {"sha256": "0" * 64, "mode": "644", "user": "root", "group": "root"}},
        "units": {"haproxy.service": RUNNING},
    }
    facts = {ConfigState: state, "deb.DebPackages": {"haproxy": ["2.6.12"]}}
    result = run_deploy(apiserver_lb.apiserver_lb, facts=facts, data=data)
    assert result.op("HAProxy: local").commands[-1] == "systemctl reload haproxy.service"
    assert not result.op("Install HAProxy").changed


# --- kubelet ---------------------------------------------------------------------------------------------


def kubelet_run(data: dict[str, Any] | None = None, facts: dict[Any, Any] | None = None) -> Any:
    return run_deploy(
        kubelet.kubelet,
        facts=fresh({CgroupVersion: "v2", **(facts or {})}),
        data={**NODE, "kubernetes_sha256": SUMS, **(data or {})},
    )


def kubelet_config_of(result: Any) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(result.uploads["/var/lib/kubelet/.config.yaml.spectra-new"])
    return config


def test_kubelet_config_is_cis_aligned() -> None:
    config = kubelet_config_of(kubelet_run())
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["webhook"]["enabled"] is True
    assert config["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/pki/ca.crt"
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["rotateCertificates"] is True and config["protectKernelDefaults"] is True
    assert config["tlsCertFile"] == "/etc/kubernetes/pki/kubelet/kubelet.crt"
    assert config["cgroupDriver"] == "systemd" and "failCgroupV1" not in config
    assert config["address"] == "10.0.0.12" and config["port"] == 10250
    assert config["clusterDNS"] == ["10.96.0.10"] and config["clusterDomain"] == "cluster.local"
    assert config["podPidsLimit"] == 4096 and config["seccompDefault"] is True  # CIS 4.2.13, 4.2.14
    ported = kubelet_config_of(kubelet_run({"kubelet_port": 11250, "kubernetes_pki_dir": "/srv/pki"}))
    assert ported["port"] == 11250 and ported["tlsCertFile"] == "/srv/pki/kubelet/kubelet.crt"
    assert ported["authentication"]["x509"]["clientCAFile"] == "/srv/pki/ca.crt"


def test_kubelet_registers_at_node_address() -> None:
    where = {"node_address": "10.9.0.12", "private_ip": "10.0.0.99", "ssh_hostname": "203.0.113.12"}
    result = kubelet_run(where)
    assert kubelet_config_of(result)["address"] == "10.9.0.12"
    unit = result.uploads["/etc/systemd/system/.kubelet.service.spectra-new"]
    assert "--node-ip=10.9.0.12" in unit and "--kubeconfig=/etc/kubernetes/kubelet.conf" in unit
    assert not any(other in unit for other in ("10.0.0.99", "203.0.113.12"))
    with pytest.raises(DeployError, match="'node2.example' is not an IP address for kubelet's node IP"):
        kubelet_run({"node_address": "node2.example"})


def test_kubelet_unit_registers_with_inventory_name_address_and_zone() -> None:
    result = kubelet_run()
    unit = result.uploads["/etc/systemd/system/.kubelet.service.spectra-new"]
    assert "--hostname-override=testhost" in unit and "--node-ip=10.0.0.12" in unit
    assert "--node-labels=topology.kubernetes.io/region=us-east-1,topology.kubernetes.io/zone=us-east-1b" in unit
    assert "--register-with-taints" not in unit
    download = result.op("Install kubelet v1.36.3").commands[0]
    assert "https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubelet /usr/local/bin/kubelet " + KUBELET_SUM in download
    assert result.op("kubelet running").commands == [
        "systemctl daemon-reload", "systemctl start kubelet.service", "systemctl enable kubelet.service",
    ]  # fmt: skip
    cp_unit = kubelet_run({"roles": ["control_plane"]}).uploads["/etc/systemd/system/.kubelet.service.spectra-new"]
    assert "--register-with-taints=node-role.kubernetes.io/control-plane:NoSchedule" in cp_unit


def test_kubelet_resolv_conf_follows_systemd_resolved() -> None:
    assert kubelet_config_of(kubelet_run())["resolvConf"] == "/etc/resolv.conf"
    resolved = {"type": "file", "mode": "644", "user": "systemd-resolve", "group": "systemd-resolve", "sha256": "0"}

    def files(paths: list[str], **_: Any) -> dict[str, Any]:
        return {path: resolved if path == "/run/systemd/resolve/resolv.conf" else None for path in paths}

    config = kubelet_config_of(kubelet_run(facts={FileStates: files}))
    assert config["resolvConf"] == "/run/systemd/resolve/resolv.conf"
    chosen = kubelet_config_of(kubelet_run({"kubelet_resolv_conf": "/etc/k8s-resolv.conf"}, facts={FileStates: files}))
    assert chosen["resolvConf"] == "/etc/k8s-resolv.conf"


def test_kubelet_refuses_cgroup_v1_unless_allowed() -> None:
    with pytest.raises(DeployError, match="kubelet 1.35\\+ refuses cgroup v1"):
        kubelet_run(facts={CgroupVersion: "hybrid"})
    config = kubelet_config_of(kubelet_run({"kubelet_allow_cgroup_v1": True}, facts={CgroupVersion: "hybrid"}))
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"


def test_kubelet_may_not_set_role_labels() -> None:
    data = {**NODE, "kubernetes_sha256": SUMS, "kubelet_node_labels": {"node-role.kubernetes.io/worker": ""}}
    with pytest.raises(DeployError, match="(?s)invalid settings:.*NodeRestriction"):
        run_component(kubelet.COMPONENT, facts=fresh(), data=data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kubelet_pod_pids_limit": 10}, "kubelet_pod_pids_limit=10: -1 (no limit) or a whole number of at least 64"),
        ({"kubelet_pod_pids_limit": True}, "kubelet_pod_pids_limit=True: -1"),
        ({"kubelet_seccomp_default": "yes"}, "kubelet_seccomp_default='yes': true or false"),
    ],
)
def test_kubelet_pids_and_seccomp_settings_checked(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match="invalid settings") as error:
        run_component(kubelet.COMPONENT, facts=fresh(), data={**NODE, "kubernetes_sha256": SUMS, **data})
    assert message in str(error.value)
    unlimited = kubelet_config_of(kubelet_run({"kubelet_pod_pids_limit": -1, "kubelet_seccomp_default": False}))
    assert unlimited["podPidsLimit"] == -1 and unlimited["seccompDefault"] is False


def test_kubelet_overrides_merge_deeply() -> None:
    config = kubelet_config_of(
        kubelet_run({"kubelet_config_overrides": {"authentication": {"webhook": {"cacheTTL": "30s"}}}})
    )
    assert config["authentication"]["webhook"] == {"enabled": True, "cacheTTL": "30s"}
    assert config["authentication"]["anonymous"] == {"enabled": False}


def test_kubelet_converged_changes_nothing_and_restarts_only_on_change() -> None:
    first = kubelet_run()
    stamp = stamp_path("/usr/local/bin/kubelet")
    installed = {"type": "file", "mode": "755", "user": "root", "group": "root", "size": 9, "mtime": 1.5, "ctime": 2.5,
                 "inode": 7, "sha256": None}  # fmt: skip
    uploads_files = files_from_uploads(first.uploads, modes={
        "/var/lib/kubelet/config.yaml": "600", "/etc/systemd/system/kubelet.service": "600"})  # fmt: skip

    def files(paths: list[str], **kwargs: Any) -> dict[str, Any]:
        found = uploads_files(paths)
        found["/usr/local/bin/kubelet"] = installed
        found[stamp] = {**installed, "content": f"{KUBELET_SUM} {KUBELET_SUM} 9 1.5 2.5 7\n", "mode": "644"}
        return found

    again = kubelet_run(facts={FileStates: files, SystemdUnits: {"kubelet.service": RUNNING}})
    assert again.commands == [], [op.name for op in again.changed_ops]
    # a new binary (another version's sum) restarts kubelet, and so does a changed config
    newer = kubelet_run({"kubernetes_sha256": {"v1.36.3": {"amd64": {"kubelet": "e" * 64}}}},
                        facts={FileStates: files, SystemdUnits: {"kubelet.service": RUNNING}})  # fmt: skip
    assert newer.op("kubelet running").commands == ["systemctl restart kubelet.service"]
    tuned = kubelet_run({"kubelet_max_pods": 50}, facts={FileStates: files, SystemdUnits: {"kubelet.service": RUNNING}})
    assert tuned.op("kubelet running").commands == ["systemctl restart kubelet.service"]


# --- kube-proxy -------------------------------------------------------------------------------------------


def test_kube_proxy_config() -> None:
    result = run_deploy(kube_proxy.kube_proxy, facts=fresh(), data={**NODE, "kubernetes_sha256": SUMS})
    config = yaml.safe_load(result.uploads["/var/lib/kube-proxy/.config.yaml.spectra-new"])
    assert config["mode"] == "nftables" and config["clusterCIDR"] == "10.244.0.0/16"
    assert config["metricsBindAddress"] == "127.0.0.1:10249"  # CIS 4.3.1
    assert config["clientConnection"]["kubeconfig"] == "/etc/kubernetes/kube-proxy.conf"
    assert config["conntrack"] == {"maxPerCore": 32768}
    assert config["hostnameOverride"] == "testhost"
    lab = run_deploy(kube_proxy.kube_proxy, facts=fresh(), data={**NODE, "kubernetes_sha256": SUMS,
                                                                  "kube_proxy_conntrack_max_per_core": 0})  # fmt: skip
    assert yaml.safe_load(lab.uploads["/var/lib/kube-proxy/.config.yaml.spectra-new"])["conntrack"] == {"maxPerCore": 0}
    with pytest.raises(
        DeployError, match="(?s)invalid settings:.*kube_proxy_mode='ipvs': not one of 'nftables', 'iptables'"
    ):
        run_component(kube_proxy.COMPONENT, facts=fresh(), data={**NODE, "kube_proxy_mode": "ipvs"})
    with pytest.raises(DeployError, match="kube_proxy_metrics_bind_address='localhost:10249'"):
        run_component(
            kube_proxy.COMPONENT, facts=fresh(), data={**NODE, "kube_proxy_metrics_bind_address": "localhost:10249"}
        )


# --- role labels -------------------------------------------------------------------------------------------


def test_wanted_and_missing_role_labels() -> None:
    nodes = members(("cp", "10.0.0.11", ["control_plane", "etcd"]), ("w", "10.0.0.12", ["workers", "gpu"]))
    wanted = node_roles.wanted_labels(nodes, node_roles.DEFAULTS["node_roles_labels"], ["etcd", "monitoring"])
    assert wanted == {
        "cp": {"node-role.kubernetes.io/control-plane": ""},
        "w": {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/gpu": ""},
    }
    current = {"cp": {"labels": {"node-role.kubernetes.io/control-plane": ""}}, "w": {"labels": {}}}
    assert node_roles.missing_labels(wanted, current) == {"w": wanted["w"]}
    assert node_roles.missing_labels(wanted, {}) == wanted


def nodes_fact(labels: dict[str, str]) -> dict[str, Any]:
    return {"state": "ok", "message": "", "nodes": {"testhost": {"labels": labels, "taints": [], "ready": True}}}


def test_role_labels_waits_for_registration_then_labels() -> None:
    data = {"roles": ["control_plane"], "ssh_hostname": "10.0.0.11"}
    result = run_deploy(node_roles.node_roles, facts={KubernetesNodes: nodes_fact({})}, data=data)
    wait, label = result.op("Role labels").commands
    assert "get node testhost" in wait and "did not register within 180s" in wait
    assert label.endswith("label node testhost --overwrite node-role.kubernetes.io/control-plane=")
    done = nodes_fact({"node-role.kubernetes.io/control-plane": ""})
    assert run_deploy(node_roles.node_roles, facts={KubernetesNodes: done}, data=data).commands == []


def test_kubernetes_nodes_fact_parses_kubectl() -> None:
    fact = KubernetesNodes()
    items = {
        "items": [
            {
                "metadata": {"name": "n1", "labels": {"a": "b"}},
                "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        ]
    }
    node = {"labels": {"a": "b"}, "taints": ["k:NoSchedule"], "ready": True}
    assert fact.process(["J|" + json.dumps(items)]) == {"state": "ok", "message": "", "nodes": {"n1": node}}
    assert fact.process(["U|/usr/local/bin/kubectl or /etc/kubernetes/admin.conf missing"])["state"] == "unavailable"
    assert fact.process(["E|The connection to the server was refused"])["state"] == "error"
