"""Certificate expiry metrics: facts in, commands out; and the rendered script run for real with ``sh``.

The script is run locally against a temporary PKI directory, kubeconfig directory, kubelet certificate
directory and textfile directory (its CERT_METRICS_* variables), with certificates made here with known
notAfter, so every metric line and value is asserted exactly.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyinfra.api import DeployError
from pyinfra.facts.deb import DebPackages

from deploys.components import certificate_metrics
from deploys.components.certificate_metrics import COMPONENT, check, is_time_span
from deploys.operations import managed
from deploys.settings import owners
from facts.config_state import ConfigState
from tests.unit.component_facts import RUNNING, fresh
from tests.unit.pyinfra_harness import Result, run_component

pytestmark = pytest.mark.unit

SCRIPT = "/usr/local/sbin/spectra-certificate-metrics"
SERVICE = "/etc/systemd/system/spectra-certificate-metrics.service"
TIMER = "/etc/systemd/system/spectra-certificate-metrics.timer"
STAGED = {path: f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}.spectra-new" for path in (SCRIPT, SERVICE, TIMER)}
TIMER_UNIT = "spectra-certificate-metrics.timer"
EMPTY: dict[str, dict[str, Any]] = {"files": {}, "units": {}}
# apt calls wait for the apt/dpkg locks (deploys.operations.managed.apt_command, apt_lock_timeout=300)
APT = shlex.join(["sh", "-c", managed._APT_LOCK_SCRIPT, "spectra-apt", "300"])


def deploy(data: dict[str, Any] | None = None, facts: dict[Any, Any] | None = None) -> Result:
    """The component as an entry file runs it (settings checked, its gate, its facts in one command)."""
    return run_component(COMPONENT, facts=fresh({ConfigState: EMPTY, **(facts or {})}), data=data)


def sha(result: Result, path: str) -> str:
    return hashlib.sha256(result.uploads[STAGED[path]].encode()).hexdigest()


def install(result: Result, path: str, mode: str) -> list[str]:
    staged = STAGED[path]
    return [
        f"upload {staged} sha256={sha(result, path)}",
        f"chown root:root {staged} && chmod {mode} {staged}",
        *(
            [
                f"( sh -n {staged} ) || {{ rm -f {staged} ; "
                f"echo 'validation failed, {path} left unchanged' >&2 ; exit 1 ; }}"
            ]
            if path == SCRIPT
            else []
        ),
        f"mv -f {staged} {path}",
    ]


def test_fresh_host_commands() -> None:
    result = deploy()
    assert result.commands == [
        "function say_if_apt_locked",
        f"{APT} install --no-install-recommends openssl",
        "mkdir -p /usr/local/sbin",
        *install(result, SCRIPT, "755"),
        "mkdir -p /etc/systemd/system",
        *install(result, SERVICE, "644"),
        "mkdir -p /etc/systemd/system",
        *install(result, TIMER, "644"),
        "systemctl daemon-reload",
        f"systemctl enable {TIMER_UNIT}",
        f"systemctl start {TIMER_UNIT}",
    ]
    assert len(result.fact_reads) == 1  # packages, the three files and the timer in one command
    service = result.uploads[STAGED[SERVICE]].splitlines()
    for line in (
        "Type=oneshot",
        f"ExecStart={SCRIPT}",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/node_exporter/textfile_collector",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "PrivateNetwork=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=CAP_DAC_OVERRIDE",
    ):
        assert line in service, line
    assert not [line for line in service if line.startswith(("User=", "ReadWritePaths=/etc", "[Install]"))]
    timer = result.uploads[STAGED[TIMER]].splitlines()
    assert "OnBootSec=2min" in timer and "OnUnitActiveSec=1h" in timer and "WantedBy=timers.target" in timer
    script = result.uploads[STAGED[SCRIPT]]
    assert script.startswith("#!/bin/sh\n")
    for line in (
        "pki_dir=/etc/kubernetes/pki",
        "kubeconfig_dir=/etc/kubernetes",
        "kubelet_dir=/var/lib/kubelet/pki",
        "textfile_dir=/var/lib/node_exporter/textfile_collector",
    ):
        assert line in script.splitlines(), line


def converged(result: Result) -> dict[Any, Any]:
    """Facts of a host on which ``result`` (a fresh run) has landed."""
    modes = {SCRIPT: "755", SERVICE: "644", TIMER: "644"}
    files = {
        path: {"type": "file", "mode": mode, "user": "root", "group": "root", "size": 1, "sha256": sha(result, path)}
        for path, mode in modes.items()
    }
    units = {TIMER_UNIT: {"id": TIMER_UNIT, **RUNNING, "sub": "waiting"}}
    return {ConfigState: {"files": files, "units": units}, DebPackages: {"openssl": {"3.0.17-1~deb12u2"}}}


def test_converged_host_changes_nothing() -> None:
    second = deploy(facts=converged(deploy()))
    assert second.commands == []
    assert len(second.fact_reads) == 1


def test_new_interval_rewrites_the_timer_and_restarts_only_it() -> None:
    facts = converged(deploy())
    result = deploy(data={"certificate_metrics_interval": "15min"}, facts=facts)
    assert result.commands == [
        *install(result, TIMER, "644"),
        "systemctl daemon-reload",
        f"systemctl restart {TIMER_UNIT}",
    ]
    assert "OnUnitActiveSec=15min" in result.uploads[STAGED[TIMER]].splitlines()


def test_directories_come_from_their_owners() -> None:
    data = {
        "kubernetes_pki_dir": "/srv/k8s/pki",
        "kubernetes_config_dir": "/srv/k8s",
        "kubelet_cert_dir": "/srv/kubelet/pki",
        "node_exporter_textfile_dir": "/srv/textfile",
        "certificate_metrics_script": "/opt/bin/cert-metrics",
    }
    result = deploy(data=data)
    script = result.uploads["/opt/bin/.cert-metrics.spectra-new"].splitlines()
    for line in ("pki_dir=/srv/k8s/pki", "kubeconfig_dir=/srv/k8s", "kubelet_dir=/srv/kubelet/pki"):
        assert line in script
    assert "textfile_dir=/srv/textfile" in script
    service = result.uploads[STAGED[SERVICE]].splitlines()
    assert "ReadWritePaths=/srv/textfile" in service and "ExecStart=/opt/bin/cert-metrics" in service


@pytest.mark.parametrize(
    "data", [{"certificate_metrics_enabled": False}, {"node_exporter_enabled": False}], ids=["off", "no-exporter"]
)
def test_gate_reads_and_does_nothing(data: dict[str, Any]) -> None:
    result = run_component(COMPONENT, facts={}, data=data)
    assert result.ops == [] and result.fact_reads == []


def test_bad_interval_refused_before_any_operation() -> None:
    with pytest.raises(DeployError, match=r"certificate_metrics_interval='hourly': a systemd time span"):
        deploy(data={"certificate_metrics_interval": "hourly"})


@pytest.mark.parametrize("value", ["15min", "1h", "30s", "1h 30min", "2d", "1.5h", "3600", 600])
def test_time_spans_accepted(value: object) -> None:
    assert is_time_span(value)


@pytest.mark.parametrize(
    "value", ["hourly", "0", "0s", "", "1 fortnight", "-1h", " 1h", "1h\nExecStart=/x", True, None]
)
def test_time_spans_refused(value: object) -> None:
    assert not is_time_span(value)


def test_check_names_the_key() -> None:
    settings = {key: owner.default for key, owner in owners().items()}
    assert check(settings) == []
    bad = {
        **settings,
        "certificate_metrics_interval": "daily",
        "certificate_metrics_script": "relative/script",
        "node_exporter_textfile_dir": "/var/lib/text file",
    }
    assert check(bad) == [
        "certificate_metrics_interval='daily': a systemd time span longer than zero, such as 15min, 1h or 30s",
        "certificate_metrics_script='relative/script': an absolute, normal path of letters, digits and _./+-",
        "node_exporter_textfile_dir='/var/lib/text file': an absolute, normal path of letters, digits and _./+-",
    ]


def test_settings_have_this_module_as_owner() -> None:
    for key in certificate_metrics.DEFAULTS:
        assert owners()[key].module == "deploys.components.certificate_metrics"


# --- the script itself, run with sh -------------------------------------------------------------------------

UTC = datetime.UTC
KEY = ec.generate_private_key(ec.SECP256R1())


def certificate(name: str, not_after: datetime.datetime) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2019, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after)
        .sign(KEY, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM)


KEY_PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def at(day: int) -> datetime.datetime:
    """Distinct, known notAfter values (whole seconds: what a certificate holds)."""
    return datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC) + datetime.timedelta(days=day, seconds=day * 61)


def seconds(when: datetime.datetime) -> int:
    return int(when.timestamp())


def kubeconfig(cert: bytes, quoted: bool = False) -> str:
    data = base64.b64encode(cert).decode()
    value = f'"{data}"' if quoted else data
    return (
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: "
        f"{base64.b64encode(certificate('ca', at(99))).decode()}\n    server: https://127.0.0.1:6443\n"
        "  name: spectra\nusers:\n- name: someone\n  user:\n"
        f"    client-certificate-data: {value}\n    client-key-data: {base64.b64encode(KEY_PEM).decode()}\n"
    )


# PKI file (relative) -> notAfter; garbage and a key beside them
PKI_CERTS = {
    "ca.crt": at(10),
    "apiserver.crt": at(1),
    "apiserver-kubelet-client.crt": at(2),
    "apiserver-etcd-client.crt": at(3),
    "front-proxy-ca.crt": at(11),
    "front-proxy-client.crt": datetime.datetime(2020, 2, 3, 4, 5, 6, tzinfo=UTC),  # expired: still reported
    "etcd/ca.crt": at(12),
    "etcd/server.crt": at(4),
    "etcd/peer.crt": at(5),
    "etcd/healthcheck-client.crt": at(6),
    "kubelet/kubelet.crt": at(7),
}
KUBECONFIGS = {"admin.conf": at(20), "scheduler.conf": at(21), "super-admin.conf": at(22)}


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    pki, config, kubelet, textfile = (tmp_path / name for name in ("pki", "kubernetes", "kubelet-pki", "textfile"))
    for directory in (pki / "etcd", pki / "kubelet", config, kubelet, textfile):
        directory.mkdir(parents=True)
    for relative, when in PKI_CERTS.items():
        (pki / relative).write_bytes(certificate(relative, when))
    (pki / "garbage.crt").write_text("this is not a certificate\n")
    (pki / "etcd" / "truncated.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (pki / "apiserver.key").write_bytes(KEY_PEM)
    os.mkfifo(pki / "sa.key")  # opening it would block: proves the script never opens a key
    for name, when in KUBECONFIGS.items():
        (config / name).write_text(kubeconfig(certificate(name, when), quoted=name == "scheduler.conf"))
    (config / "broken.conf").write_text("users:\n- user:\n    client-certificate-data: bm90IGEgY2VydA==\n")
    (config / "kubelet.conf").write_text(  # a file reference, no embedded certificate: the file is reported
        "users:\n- user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n"
    )
    (config / "control-plane.yaml").write_text("not: a kubeconfig\n")
    (kubelet / "kubelet-client-2030-01-01-00-00-00.pem").write_bytes(certificate("old", at(30)) + KEY_PEM)
    (kubelet / "kubelet-client-2030-02-01-00-00-00.pem").write_bytes(certificate("kubelet", at(31)) + KEY_PEM)
    (kubelet / "kubelet-client-current.pem").symlink_to("kubelet-client-2030-02-01-00-00-00.pem")
    (kubelet / "kubelet.crt").write_bytes(certificate("serving", at(32)))
    (kubelet / "kubelet.key").write_bytes(KEY_PEM)
    (textfile / "other.prom").write_text("other_metric 1\n")
    return {"pki": pki, "config": config, "kubelet": kubelet, "textfile": textfile, "root": tmp_path}


def rendered_script(root: Path) -> Path:
    script = root / "spectra-certificate-metrics"
    script.write_text(deploy().uploads[STAGED[SCRIPT]])
    return script


def run_script(tree: dict[str, Path], mv_log: Path | None = None) -> subprocess.CompletedProcess[str]:
    root = tree["root"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CERT_METRICS_PKI_DIR": str(tree["pki"]),
        "CERT_METRICS_KUBECONFIG_DIR": str(tree["config"]),
        "CERT_METRICS_KUBELET_DIR": str(tree["kubelet"]),
        "CERT_METRICS_TEXTFILE_DIR": str(tree["textfile"]),
    }
    if mv_log is not None:
        # an mv that records what it renames, and a copy of the source as it was just before
        wrappers = root / "bin"
        wrappers.mkdir(exist_ok=True)
        wrapper = wrappers / "mv"
        wrapper.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "$@" >"$MV_LOG"\ncp "$2" "$MV_LOG.source"\nexec {shutil.which("mv")} "$@"\n'
        )
        wrapper.chmod(0o755)
        env["PATH"] = f"{wrappers}:{env['PATH']}"
        env["MV_LOG"] = str(mv_log)
    return subprocess.run(
        ["sh", str(rendered_script(root))], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def expected_lines(tree: dict[str, Path]) -> list[str]:
    pki, config, kubelet = tree["pki"], tree["config"], tree["kubelet"]
    metric = "spectra_certificate_expiry_timestamp_seconds"

    def line(component: str, path: Path, when: datetime.datetime) -> str:
        return f'{metric}{{component="{component}",path="{path}"}} {seconds(when)}'

    return [
        f"# HELP {metric} When a cluster certificate expires (its notAfter), in seconds since the epoch.",
        f"# TYPE {metric} gauge",
        # the PKI directory, in path order
        line("etcd-client", pki / "apiserver-etcd-client.crt", at(3)),
        line("apiserver", pki / "apiserver-kubelet-client.crt", at(2)),
        line("apiserver", pki / "apiserver.crt", at(1)),
        line("ca", pki / "ca.crt", at(10)),
        line("etcd-ca", pki / "etcd/ca.crt", at(12)),
        line("etcd-client", pki / "etcd/healthcheck-client.crt", at(6)),
        line("etcd-peer", pki / "etcd/peer.crt", at(5)),
        line("etcd", pki / "etcd/server.crt", at(4)),
        line("front-proxy", pki / "front-proxy-ca.crt", at(11)),
        line("front-proxy", pki / "front-proxy-client.crt", PKI_CERTS["front-proxy-client.crt"]),
        line("kubelet", pki / "kubelet/kubelet.crt", at(7)),
        # the kubeconfigs with an embedded client certificate
        line("admin", config / "admin.conf", at(20)),
        line("scheduler", config / "scheduler.conf", at(21)),
        line("super-admin", config / "super-admin.conf", at(22)),
        # kubelet's own files: the current client certificate (not the old ones) and the serving certificate
        line("kubelet", kubelet / "kubelet-client-current.pem", at(31)),
        line("kubelet", kubelet / "kubelet.crt", at(32)),
        "# HELP spectra_certificate_parse_errors Certificate files of the last run that could not be read or parsed.",
        "# TYPE spectra_certificate_parse_errors gauge",
        "spectra_certificate_parse_errors 3",
        "# HELP spectra_certificate_metrics_last_run_timestamp_seconds When the certificate metrics were last written.",
        "# TYPE spectra_certificate_metrics_last_run_timestamp_seconds gauge",
    ]


def test_script_writes_every_certificate_expiry(tree: dict[str, Path]) -> None:
    started = int(time.time())
    finished = run_script(tree)
    ended = int(time.time())
    assert finished.returncode == 0, finished.stderr
    lines = (tree["textfile"] / "spectra_certificates.prom").read_text().splitlines()
    *metrics, last_run = lines
    assert metrics == expected_lines(tree)
    name, value = last_run.split(" ")
    assert name == "spectra_certificate_metrics_last_run_timestamp_seconds" and started <= int(value) <= ended
    # the files without a certificate are named, each once, and nothing else failed
    assert sorted(finished.stderr.splitlines()) == [
        f"spectra-certificate-metrics: no readable certificate in {path}"
        for path in sorted(
            [tree["config"] / "broken.conf", tree["pki"] / "etcd/truncated.crt", tree["pki"] / "garbage.crt"]
        )
    ]


def test_script_replaces_the_file_atomically(tree: dict[str, Path]) -> None:
    textfile = tree["textfile"]
    output = textfile / "spectra_certificates.prom"
    output.write_text("spectra_certificate_parse_errors 99\n")
    mv_log = tree["root"] / "mv.log"
    with open(output) as old:
        finished = run_script(tree, mv_log=mv_log)
        assert finished.returncode == 0, finished.stderr
        # the old file was not written to: it was replaced by another one (a rename over it)
        assert old.read() == "spectra_certificate_parse_errors 99\n"
        assert os.fstat(old.fileno()).st_ino != output.stat().st_ino
    flag, source, target = mv_log.read_text().splitlines()
    # renamed from a hidden file of the same directory that the collector ignores (not *.prom) ...
    assert flag == "-f" and target == str(output)
    assert Path(source).parent == textfile
    assert Path(source).name.startswith(".spectra_certificates.prom.") and not source.endswith(".prom")
    # ... and it was complete before the rename
    assert Path(f"{mv_log}.source").read_text() == output.read_text()
    assert "spectra_certificate_parse_errors 3" in output.read_text().splitlines()
    assert oct(output.stat().st_mode & 0o777) == "0o644"  # the exporter's user reads it
    # nothing left behind, the other collector files untouched
    assert sorted(path.name for path in textfile.iterdir()) == ["other.prom", "spectra_certificates.prom"]
    assert (textfile / "other.prom").read_text() == "other_metric 1\n"


def test_script_without_any_certificate(tree: dict[str, Path]) -> None:
    for key in ("pki", "config", "kubelet"):
        shutil.rmtree(tree[key])  # not a control plane, not yet joined: the directories are missing
    finished = run_script(tree)
    assert finished.returncode == 0, finished.stderr
    *metrics, last_run = (tree["textfile"] / "spectra_certificates.prom").read_text().splitlines()
    headers = [line for line in expected_lines(tree) if line.startswith("#")]
    assert metrics == [*headers[:4], "spectra_certificate_parse_errors 0", *headers[4:]]
    assert last_run.startswith("spectra_certificate_metrics_last_run_timestamp_seconds ")
    assert finished.stderr == ""
