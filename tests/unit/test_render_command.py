"""`spectra render INVENTORY --out DIR`, run as a real process: every addon set and the cluster files written,
0600 in 0700; bad input (an unknown key, a missing secret, an addon that cannot be placed, a directory it did
not write) exits 2 with the reason and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

SPECTRA = str(Path(sys.executable).parent / "spectra")
REPO = Path(__file__).resolve().parents[2]
INVENTORY = """
    from inventories.grouping import HostRecord, build_groups, file_group

    _hosts = [
        HostRecord("cp1", {"ssh_hostname": "192.0.2.11"}, roles=("control_plane", "etcd"), zone="a"),
        HostRecord("wk1", {"ssh_hostname": "192.0.2.21"}, roles=ROLES, zone="b"),
    ]
    globals().update(build_groups(_hosts, inventory_group=file_group(__file__)))
"""


def spectra(
    tmp: Path, roles: tuple[str, ...], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inventory = tmp / "inv.py"
    inventory.write_text(textwrap.dedent(INVENTORY).replace("ROLES", repr(roles)))
    data = ["--data", f"pki_dir={tmp / 'pki'}", "--data", "fluentd_enabled=False"]
    return subprocess.run(
        [SPECTRA, "render", str(inventory), *data, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_render_writes_every_set_and_the_cluster_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = spectra(tmp_path, ("workers", "monitoring"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    names = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert {"addons/namespaces.yaml", "addons/coredns.yaml", "addons/prometheus.yaml",
            "hosts/cp1/command-lines/kube-apiserver.yaml", "hosts/wk1/var/lib/kubelet/config.yaml",
            "image-scan/trivy-cronjob.yaml"} <= names  # fmt: skip
    assert all(yaml.safe_load_all((out / name).read_text()) for name in names if name.endswith(".yaml"))
    assert (out / "addons/prometheus.yaml").stat().st_mode & 0o777 == 0o600
    assert all(path.stat().st_mode & 0o777 == 0o700 for path in out.rglob("*") if path.is_dir())
    assert f"{out}/addons/coredns.yaml" in done.stdout.splitlines()


@pytest.mark.parametrize(
    "roles, args, message",
    [
        (("workers",), (), "Prometheus needs a node for its data"),  # no monitoring host: an addon cannot be placed
        (("workers", "monitoring"), ("--data", "coredns_replica=2"), "unknown key (did you mean 'coredns_replicas'?)"),
        (("workers", "monitoring"), ("--group-data", "SECRETS"), "SPECTRA_TEST_UNSET_SECRET is not set"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, roles: tuple[str, ...], args: tuple[str, ...],
                                              message: str) -> None:  # fmt: skip
    out = tmp_path / "out"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "all.py").write_text(
        "from spectra.secrets import from_env\n"
        'alertmanager_receivers = [{"name": "ops", "type": "webhook", "url": from_env("SPECTRA_TEST_UNSET_SECRET")}]\n'
    )
    args = tuple(str(secrets) if arg == "SECRETS" else arg for arg in args)
    done = spectra(tmp_path, roles, "--out", str(out), *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not out.exists()


def test_a_directory_it_did_not_write_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    done = spectra(tmp_path, ("workers", "monitoring"), "--out", str(out))
    assert done.returncode == 2 and "not written by `spectra render`" in done.stderr
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
