"""CIS Kubernetes Benchmark section 1.1: control plane configuration files, on control-plane (and, for the
etcd data directory, etcd) hosts.

A component's "pod specification" is its static pod manifest (kubeadm) or its systemd unit (ours): either
is checked where present. Files absent before the control plane is installed are not applicable; the PKI
and the etcd data directory missing although their component is installed fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from compliance.model import CIS, Check, Evaluate, Outcome, Scope, failed, not_applicable
from compliance.modes import MODE_600, ROOT_OWNED, FileExpectation, PresentFiles
from compliance.probe import Probe
from spectra import topology

SECTION = "cis-control-plane"
SECTION_TITLE = "CIS Kubernetes control plane files (section 1.1)"

MANIFESTS = "/etc/kubernetes/manifests"
PKI_DIR = "/etc/kubernetes/pki"
ETCD_DATA_DIR = "/var/lib/etcd"
CONTROL_PLANE_UNITS = ("kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service")
# Read together: one systemctl call for this module.
UNITS = (*CONTROL_PLANE_UNITS, "etcd.service")

CONTROL_PLANE_HOSTS = Scope(
    frozenset({topology.CONTROL_PLANE}), "not a control_plane host (CIS section 1 applies to control-plane hosts only)"
)
ETCD_HOSTS = Scope(frozenset({topology.CONTROL_PLANE, topology.ETCD}), "not a control_plane or etcd host")

NO_CONTROL_PLANE = "no control plane on this host yet (no kube-apiserver manifest or unit)"
ADMIN_KUBECONFIGS = ("/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf")
SCHEDULER_KUBECONFIG = "/etc/kubernetes/scheduler.conf"
CONTROLLER_MANAGER_KUBECONFIG = "/etc/kubernetes/controller-manager.conf"


def control_plane_present(probe: Probe) -> bool:
    units = probe.units(UNITS)
    return bool(probe.files([f"{MANIFESTS}/kube-apiserver.yaml"])) or any(
        units[unit] is not None for unit in CONTROL_PLANE_UNITS
    )


def etcd_present(probe: Probe) -> bool:
    return bool(probe.files([f"{MANIFESTS}/etcd.yaml"])) or probe.units(UNITS)["etcd.service"] is not None


def control_plane_absent(probe: Probe) -> str:
    return "not used by this control plane" if control_plane_present(probe) else NO_CONTROL_PLANE


def needed_by_etcd(probe: Probe) -> str | None:
    return "etcd is installed here" if etcd_present(probe) else None


def spec_files(name: str) -> tuple[str, ...]:
    """A component's "pod specification": its static pod manifest (kubeadm) or its systemd unit (ours)."""
    return (f"{MANIFESTS}/{name}.yaml", f"/etc/systemd/system/{name}.service")


def control_plane_files(paths: tuple[str, ...], expect: FileExpectation) -> PresentFiles:
    return PresentFiles(paths, expect, control_plane_absent)


@dataclass(frozen=True, eq=False)
class PkiFiles:
    """The PKI directory tree, all of it (``suffix`` None) or its regular files ending in ``suffix``."""

    expect: FileExpectation
    suffix: str | None = None

    def __call__(self, probe: Probe) -> Outcome:
        tree = probe.tree(PKI_DIR)
        if not tree:
            if control_plane_present(probe):
                return failed(f"{PKI_DIR} missing although the control plane is installed here")
            return not_applicable(f"{PKI_DIR} absent: {NO_CONTROL_PLANE}")
        if self.suffix is None:
            return self.expect.evaluate(tree)
        files = {path: state for path, state in tree.items() if path.endswith(self.suffix) and state["type"] == "file"}
        if not files:
            return not_applicable(f"no *{self.suffix} files under {PKI_DIR}")
        return self.expect.evaluate(files)


def _cis_check(
    id: str, title: str, rationale: str, fix: str, evaluate: Evaluate, scope: Scope = CONTROL_PLANE_HOSTS
) -> Check:
    """A check of this section: CIS section 1.1, on control-plane hosts unless said otherwise."""
    return Check(
        id=id, section=SECTION, title=title, rationale=rationale, fix=fix, evaluate=evaluate, scope=scope, reference=CIS
    )


CHECKS: tuple[Check, ...] = (
    _cis_check(
        id="1.1.1",
        title="API server pod specification (manifest or unit) permissions are 600 or more restrictive",
        rationale="it sets every API server flag",
        fix="chmod 600 the manifest or /etc/systemd/system/kube-apiserver.service",
        evaluate=control_plane_files(spec_files("kube-apiserver"), MODE_600),
    ),
    _cis_check(
        id="1.1.2",
        title="API server pod specification (manifest or unit) ownership is root:root",
        rationale="it sets every API server flag",
        fix="chown root:root the manifest or /etc/systemd/system/kube-apiserver.service",
        evaluate=control_plane_files(spec_files("kube-apiserver"), ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.3",
        title="Controller manager pod specification (manifest or unit) permissions are 600 or more restrictive",
        rationale="it sets the controller manager's flags",
        fix="chmod 600 the manifest or /etc/systemd/system/kube-controller-manager.service",
        evaluate=control_plane_files(spec_files("kube-controller-manager"), MODE_600),
    ),
    _cis_check(
        id="1.1.4",
        title="Controller manager pod specification (manifest or unit) ownership is root:root",
        rationale="it sets the controller manager's flags",
        fix="chown root:root the manifest or /etc/systemd/system/kube-controller-manager.service",
        evaluate=control_plane_files(spec_files("kube-controller-manager"), ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.5",
        title="Scheduler pod specification (manifest or unit) permissions are 600 or more restrictive",
        rationale="it sets the scheduler's flags",
        fix="chmod 600 the manifest or /etc/systemd/system/kube-scheduler.service",
        evaluate=control_plane_files(spec_files("kube-scheduler"), MODE_600),
    ),
    _cis_check(
        id="1.1.6",
        title="Scheduler pod specification (manifest or unit) ownership is root:root",
        rationale="it sets the scheduler's flags",
        fix="chown root:root the manifest or /etc/systemd/system/kube-scheduler.service",
        evaluate=control_plane_files(spec_files("kube-scheduler"), ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.7",
        title="etcd pod specification (manifest or unit) permissions are 600 or more restrictive",
        rationale="it sets etcd's flags",
        fix="chmod 600 the manifest or /etc/systemd/system/etcd.service",
        evaluate=control_plane_files(spec_files("etcd"), MODE_600),
    ),
    _cis_check(
        id="1.1.8",
        title="etcd pod specification (manifest or unit) ownership is root:root",
        rationale="it sets etcd's flags",
        fix="chown root:root the manifest or /etc/systemd/system/etcd.service",
        evaluate=control_plane_files(spec_files("etcd"), ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.11",
        title="etcd data directory permissions are 700 or more restrictive",
        rationale="the data directory is the whole cluster state, secrets included",
        fix=f"chmod 700 {ETCD_DATA_DIR}",
        evaluate=PresentFiles(
            (ETCD_DATA_DIR,),
            FileExpectation(max_mode=0o700),
            "no etcd on this host yet (no etcd manifest or unit)",
            required=needed_by_etcd,
        ),
        scope=ETCD_HOSTS,
    ),
    _cis_check(
        id="1.1.12",
        title="etcd data directory ownership is etcd:etcd",
        rationale="the data directory is the whole cluster state, secrets included",
        fix=f"chown etcd:etcd {ETCD_DATA_DIR}",
        evaluate=PresentFiles(
            (ETCD_DATA_DIR,),
            FileExpectation(user="etcd", groups=("etcd",)),
            "no etcd on this host yet (no etcd manifest or unit)",
            required=needed_by_etcd,
        ),
        scope=ETCD_HOSTS,
    ),
    _cis_check(
        id="1.1.13",
        title="admin.conf (and super-admin.conf) permissions are 600 or more restrictive",
        rationale="cluster-admin credentials",
        fix=f"chmod 600 {' '.join(ADMIN_KUBECONFIGS)}",
        evaluate=control_plane_files(ADMIN_KUBECONFIGS, MODE_600),
    ),
    _cis_check(
        id="1.1.14",
        title="admin.conf (and super-admin.conf) ownership is root:root",
        rationale="cluster-admin credentials",
        fix=f"chown root:root {' '.join(ADMIN_KUBECONFIGS)}",
        evaluate=control_plane_files(ADMIN_KUBECONFIGS, ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.15",
        title="scheduler.conf permissions are 600 or more restrictive",
        rationale="the scheduler's credentials",
        fix=f"chmod 600 {SCHEDULER_KUBECONFIG}",
        evaluate=control_plane_files((SCHEDULER_KUBECONFIG,), MODE_600),
    ),
    _cis_check(
        id="1.1.16",
        title="scheduler.conf ownership is root:root",
        rationale="the scheduler's credentials",
        fix=f"chown root:root {SCHEDULER_KUBECONFIG}",
        evaluate=control_plane_files((SCHEDULER_KUBECONFIG,), ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.17",
        title="controller-manager.conf permissions are 600 or more restrictive",
        rationale="the controller manager's credentials",
        fix=f"chmod 600 {CONTROLLER_MANAGER_KUBECONFIG}",
        evaluate=control_plane_files((CONTROLLER_MANAGER_KUBECONFIG,), MODE_600),
    ),
    _cis_check(
        id="1.1.18",
        title="controller-manager.conf ownership is root:root",
        rationale="the controller manager's credentials",
        fix=f"chown root:root {CONTROLLER_MANAGER_KUBECONFIG}",
        evaluate=control_plane_files((CONTROLLER_MANAGER_KUBECONFIG,), ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.19",
        title="The Kubernetes PKI directory and its files are owned by root:root",
        rationale="whoever owns the PKI can mint cluster identities",
        fix=f"chown -R root:root {PKI_DIR}",
        evaluate=PkiFiles(ROOT_OWNED),
    ),
    _cis_check(
        id="1.1.20",
        title="Kubernetes PKI certificate files are 600 or more restrictive",
        rationale="certificates decide whom the cluster trusts",
        fix=f"chmod 600 {PKI_DIR}/*.crt",
        evaluate=PkiFiles(MODE_600, ".crt"),
    ),
    _cis_check(
        id="1.1.21",
        title="Kubernetes PKI key files are 600 or more restrictive",
        rationale="private keys are the cluster's identities",
        fix=f"chmod 600 {PKI_DIR}/*.key",
        evaluate=PkiFiles(MODE_600, ".key"),
    ),
)
