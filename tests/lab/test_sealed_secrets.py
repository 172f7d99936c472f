"""Secrets in git only encrypted, on the lab cluster: a Secret sealed offline with the lab PKI's certificate
(``spectra seal``, kubeseal with ``--cert``, no cluster access) becomes the Secret in its namespace; the
apiserver's dry run checks a SealedSecret file against the CRD before anything of the set changes; and a
restore drill: the PKI directory backed up, the lab taken down and the PKI directory lost with it, fresh
nodes, the backup put back, one converge, and the same file decrypts to the same Secret.

The lab's sealing key is the lab's own (``$SPECTRA_LAB_DIR/pki/sealed-secrets``), so the file is sealed here,
for this lab, and handed to the deploy with ``--data sealed_secrets_files=...``. The drill leaves a converged
lab for the tests after it, without the sample (its file taken out of the setting prunes it). Timings are
printed (``pytest -s``).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.cluster_support import kubectl, until
from tests.lab.conftest import LAB_DIR, LAB_UP_ARGS, REPO, SPECTRA, Lab, lab_cli, reused_network, spectra_deploy

pytestmark = pytest.mark.lab

PKI_DIR = LAB_DIR / "pki"  # group_data/lab.py: pki_dir
CERT = PKI_DIR / "sealed-secrets" / "sealing.crt"
NAMESPACE = "shop-api"  # a team namespace of the lab (group_data/lab.py), made by the namespaces set
NAME = "db-credentials"
DATA = {"username": "shop", "password": f"lab-{secrets.token_hex(12)}"}  # new every session: nothing stale passes
CONTROLLER = "-n sealed-secrets"
CERT_PROXY = "/api/v1/namespaces/sealed-secrets/services/http:sealed-secrets-controller:http/proxy/v1/cert.pem"


def kubeseal() -> Path:
    """kubeseal of the pinned version from the lab cache (built with the controller's image at `lab up`)."""
    from lab.images import sealed_secrets as image

    return image.kubeseal_path()


def seal(path: Path, **data: str) -> Path:
    """``spectra seal`` for the lab: kubeseal with the PKI's certificate, and no kubeconfig to reach a cluster."""
    literals = [arg for key, value in data.items() for arg in ("--from-literal", f"{key}={value}")]
    command = [SPECTRA, "seal", "inventories/lab.py", "--namespace", NAMESPACE, "--name", NAME, *literals,
               "--kubeseal", str(kubeseal())]  # fmt: skip
    env = dict(os.environ, KUBECONFIG=str(path.parent / "no-such-kubeconfig"))
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    path.write_text(result.stdout)
    return path


def secret_data(lab: Lab) -> dict[str, str] | None:
    text = kubectl(lab, f"-n {NAMESPACE} get secret {NAME} -o json --ignore-not-found", check=False)
    if not text.strip():
        return None
    secret = json.loads(text)
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def cluster_key_cert(lab: Lab) -> bytes:
    encoded = kubectl(lab, rf"{CONTROLLER} get secret sealed-secrets-key -o jsonpath='{{.data.tls\.crt}}'")
    return base64.b64decode(encoded)


def deploy(tmp_path: Path, name: str, entry: str, *files: Path, timeout: int = 1800) -> tuple[Any, dict[str, Any]]:
    data = ["--data", f"sealed_secrets_files={json.dumps([str(file) for file in files])}"] if files else []
    started = time.monotonic()
    result, summary = spectra_deploy(tmp_path / f"{name}.json", "inventories/lab.py", entry, *data, timeout=timeout)
    print(f"sealed-secrets: {name}: {entry} in {time.monotonic() - started:.0f} s (exit {result.returncode})")
    return result, dict(summary)


def no_changes(summary: dict[str, Any]) -> bool:
    return all(not ops for ops in summary["changed_operations"].values())


@pytest.fixture(scope="module")
def sealed_file(converged: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.monotonic()
    path = seal(tmp_path_factory.mktemp("sealed") / f"{NAME}.yaml", **DATA)
    print(f"sealed-secrets: sealed offline in {time.monotonic() - started:.1f} s")
    document = yaml.safe_load(path.read_text())
    assert (document["kind"], document["metadata"]["namespace"]) == ("SealedSecret", NAMESPACE)
    assert DATA["password"] not in path.read_text()
    return path


def test_a_sealed_file_becomes_the_secret(converged: dict[str, Any], lab: Lab, sealed_file: Path,
                                          tmp_path: Path) -> None:  # fmt: skip
    # the controller holds the PKI's key and no key of its own, and seals (kubeseal --fetch-cert) with it
    assert cluster_key_cert(lab) == CERT.read_bytes()
    keys = kubectl(lab, f"{CONTROLLER} get secrets -l sealedsecrets.bitnami.com/sealed-secrets-key -o name")
    assert keys.split() == ["secret/sealed-secrets-key"]
    assert kubectl(lab, f"get --raw '{CERT_PROXY}'").encode() == CERT.read_bytes()

    result, _ = deploy(tmp_path, "apply", "deploys/addons.py", sealed_file)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    started = time.monotonic()
    found = until("the Secret from the SealedSecret", lambda: ((data := secret_data(lab)) == DATA, data), 120)
    assert found == DATA
    print(f"sealed-secrets: Secret there {time.monotonic() - started:.1f} s after the deploy")
    sealed = json.loads(kubectl(lab, f"-n {NAMESPACE} get sealedsecret {NAME} -o json"))
    assert sealed["status"]["conditions"][0]["type"] == "Synced"
    assert sealed["status"]["conditions"][0]["status"] == "True"
    owners = json.loads(kubectl(lab, f"-n {NAMESPACE} get secret {NAME} -o json"))["metadata"]["ownerReferences"]
    assert [(owner["kind"], owner["name"]) for owner in owners] == [("SealedSecret", NAME)]

    _, again = deploy(tmp_path, "again", "deploys/addons.py", sealed_file)
    assert no_changes(again), again["changed_operations"]


def test_a_file_the_crd_refuses_stops_the_set(converged: dict[str, Any], lab: Lab, sealed_file: Path,
                                              tmp_path: Path) -> None:  # fmt: skip
    document = yaml.safe_load(sealed_file.read_text())
    document["metadata"]["name"] = document["spec"]["template"]["metadata"]["name"] = "not-a-string-type"
    document["spec"]["template"]["type"] = 5  # the CRD says string; the toolkit's own checks do not look
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    kept = kubectl(lab, f"-n {NAMESPACE} get sealedsecret {NAME} -o name", check=False).strip()
    result, _ = deploy(tmp_path, "refused", "deploys/addons.py", bad)
    assert result.returncode != 0
    assert "spec.template.type" in result.stdout + result.stderr, result.stdout[-4000:]
    # the dry run refused the set: nothing of it changed (the earlier SealedSecret is still there)
    assert kubectl(lab, f"-n {NAMESPACE} get sealedsecret {NAME} -o name", check=False).strip() == kept
    assert kubectl(lab, f"-n {NAMESPACE} get sealedsecret not-a-string-type --ignore-not-found -o name") == ""


def test_restore_drill_decrypts_the_same_file_on_a_fresh_lab(converged: dict[str, Any], lab: Lab,
                                                             sealed_file: Path, tmp_path: Path) -> None:  # fmt: skip
    started = time.monotonic()
    backup = tmp_path / "pki-backup"
    shutil.copytree(PKI_DIR, backup)  # copy2: modes kept
    network = reused_network()  # read before `down` removes the state it reads
    down = lab_cli("down")
    assert down.returncode == 0, down.stderr
    # `lab down` keeps the PKI directory; the drill loses it with the deploying machine
    shutil.rmtree(PKI_DIR)
    try:
        phase = time.monotonic()
        up = lab_cli(*LAB_UP_ARGS, *network, timeout=3600)
        assert up.returncode == 0, up.stderr[-4000:] + up.stdout[-2000:]
        print(f"sealed-secrets: drill: fresh lab up in {time.monotonic() - phase:.0f} s")
        shutil.copytree(backup, PKI_DIR)  # the restore
        result, _ = deploy(tmp_path, "drill converge", "deploys/site.py", sealed_file, timeout=3600)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    finally:
        if not PKI_DIR.exists():  # never leave the lab without its PKI
            shutil.copytree(backup, PKI_DIR)
    found = until("the same Secret on the fresh lab", lambda: ((data := secret_data(lab)) == DATA, data), 180)
    assert found == DATA
    assert cluster_key_cert(lab) == (backup / "sealed-secrets" / "sealing.crt").read_bytes()
    print(f"sealed-secrets: drill: backup to decrypted Secret in {time.monotonic() - started:.0f} s")

    # leave the lab as a plain converge would: the sample's file out of the setting prunes it and its Secret
    result, _ = deploy(tmp_path, "prune", "deploys/addons.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    until("the sample pruned", lambda: (secret_data(lab) is None, None), 120)
    _, again = deploy(tmp_path, "settled", "deploys/addons.py")
    assert no_changes(again), again["changed_operations"]
