"""sealed-secrets: application Secrets live in git only encrypted, as SealedSecrets the cluster decrypts.

Two addon sets, both switched by ``sealed_secrets_enabled``:

* ``sealed-secrets`` (namespace ``sealed-secrets``, Pod Security ``restricted``): the ``SealedSecret`` CRD
  (``bitnami.com/v1alpha1``), the controller's RBAC, its sealing key as a ``kubernetes.io/tls`` Secret, the
  controller's Deployment and its Service (``kubeseal --fetch-cert`` through the apiserver's service proxy, and
  the metrics port). Templates under ``templates/addons/sealed-secrets/``.
* ``sealed-secrets-files``: the SealedSecret manifests of the repository (``sealed_secrets_files``), applied
  after the controller: the CRD exists by then, so the apiserver's dry run checks every file against it and a
  bad file stops the set before anything of it changes. A file taken out of the setting is pruned, and the
  controller's Secret goes with its SealedSecret (an owner reference). Each file names its namespace, which
  must exist by then (a team namespace: the ``namespaces`` set makes it first).

**The sealing key is the toolkit's**, not the controller's: an RSA 4096 key and a self-signed certificate made
once in the cluster's PKI directory on the deploying machine (``<pki_dir>/sealed-secrets/``,
``spectra.pki.sealing``), so the PKI backup holds it and a cluster rebuilt from that backup decrypts the same
files. It is pushed as the Secret ``sealed-secrets-key`` labelled ``sealedsecrets.bitnami.com/sealed-secrets-key:
active`` (earlier pairs of ``retired/`` as ``sealed-secrets-key-retired-<name>``), and the controller runs with
``--key-renew-period=0``: its own renewal would add a key that exists only in the cluster (and seal new secrets
for it), which no backup of the PKI holds. The controller reads its keys when it starts, so the pods carry the
certificates' sha256: a new key rolls them. Rotation: ``spectra.pki.sealing`` (move the pair to ``retired/``);
never SIGUSR1 the controller (it would make a key of its own). The private key is also in the kept manifest on
the first control plane (``<cluster_addons_dir>/sealed-secrets.yaml``, 0600), as metrics-server's is.

**Sealing**, offline, with the PKI's certificate (no cluster access)::

    spectra seal inventories/prod.py --namespace shop-api --name db --from-literal password=... > secrets/db.yaml

or ``kubeseal --cert <pki_dir>/sealed-secrets/sealing.crt --format yaml < secret.yaml``. The default (strict)
scope binds the ciphertext to the namespace and name.

**RBAC** as upstream's chart, less what this setup never uses: SealedSecrets read (and their status written),
Secrets read, created and updated in every namespace (the controller recreates a deleted one), events; no
Secret ``delete`` (only upstream's ``--old-gc-behavior`` deletes; here garbage collection does). Its own key
Secrets are covered by the same rules. Every authenticated user may GET the controller's certificate through
the service proxy (``kubeseal --fetch-cert``); POSTs (``--validate``, ``--re-encrypt``) are not granted.

Image: upstream's ``docker.io/bitnami/sealed-secrets-controller`` (``/usr/local/bin/controller``; the pods run as
65534 rather than the image's 1001: the controller owns no file); the lab builds it from the Go module
(``lab/images/sealed_secrets.py``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import yaml
from pyinfra import host, logger

from deploys import addon
from spectra import values
from spectra.pki import sealing
from spectra.pki.x509 import PKIError

NAMESPACE = "sealed-secrets"
NAME = "sealed-secrets-controller"  # kubeseal's default --controller-name
KEY_SECRET = "sealed-secrets-key"  # the controller's --key-prefix; the active key's Secret has this name
KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"
TEMPLATES = tuple(f"addons/sealed-secrets/{name}" for name in ("crd.yaml.j2", "rbac.yaml.j2", "controller.yaml.j2"))
FILES_TEMPLATES = ("addons/sealed-secrets/files.yaml.j2",)
HTTP_PORT = 8080  # upstream's container ports: certificate, verify, rotate, healthz
METRICS_PORT = 8081
USER = 65534  # nobody: a high uid outside the nodes' users (upstream's image runs as 1001)
API_VERSION = "bitnami.com/v1alpha1"
REPO = Path(__file__).resolve().parents[2]  # relative sealed_secrets_files are read from here
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

DEFAULTS: dict[str, Any] = {
    "sealed_secrets_enabled": True,  # the controller, its CRD and key, and the repository's SealedSecrets
    "sealed_secrets_image": "docker.io/bitnami/sealed-secrets-controller:0.40.0",  # upstream's, pinned
    "sealed_secrets_cpu_request": "50m",
    "sealed_secrets_memory_request": "64Mi",
    "sealed_secrets_cpu_limit": "500m",  # RSA decryption of many SealedSecrets at start
    "sealed_secrets_memory_limit": "256Mi",
    # SealedSecret manifests to apply: files, or directories (every .yaml/.yml/.json under them); relative paths
    # from the repository root (secrets/ say). A path that does not exist stops the deploy.
    "sealed_secrets_files": [],
}
# one path as text is a list of one (--data sealed_secrets_files=secrets/)
TYPES: dict[str, type | tuple[type, ...]] = {"sealed_secrets_files": (list, tuple, str)}
RESOURCE_KEYS = (
    "sealed_secrets_cpu_request",
    "sealed_secrets_memory_request",
    "sealed_secrets_cpu_limit",
    "sealed_secrets_memory_limit",
)

_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

# Seam for tests: how the sealing key is made (RSA 4096 takes a second or more).
key_factory: sealing.SealingKeyFactory = sealing.new_sealing_key

_RUNS: WeakKeyDictionary[Any, dict[Path, sealing.SealingKeys]] = WeakKeyDictionary()


def file_list(value: Any) -> list[str] | None:
    """``sealed_secrets_files`` as a list of paths (one path given as text, ``--data``, is a list of one);
    None when it is neither."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple) and all(isinstance(item, str) and item for item in value):
        return list(value)
    return None


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []

    def expect(ok: bool, key: str, expected: str) -> None:
        if not ok:
            problems.append(f"{key}={settings[key]!r}: {expected}")

    image = settings["sealed_secrets_image"]
    expect(isinstance(image, str) and bool(_IMAGE.match(image)), "sealed_secrets_image",
           "an image reference such as docker.io/bitnami/sealed-secrets-controller:0.40.0")  # fmt: skip
    for key in RESOURCE_KEYS:
        value = settings[key]
        expect(values.is_quantity(value), key,
               "a Kubernetes quantity such as 50m, 1 or 64Mi")  # fmt: skip
    expect(file_list(settings["sealed_secrets_files"]) is not None, "sealed_secrets_files",
           "a list of SealedSecret files or directories (relative to the repository root)")  # fmt: skip
    return problems


# --- the sealing key ---------------------------------------------------------------------------------------


def pki_location() -> tuple[Path, str]:
    """The cluster's PKI directory and the cluster's name (the same for every host of the inventory)."""
    from deploys.components import pki

    directory, spec = pki.cluster_spec(list(host.state.inventory))
    return directory, spec.name


def sealing_keys() -> sealing.SealingKeys:
    """The PKI directory's sealing keys, the active pair made on first use; read once per run."""
    from pyinfra.api import DeployError

    directory, cluster_name = pki_location()
    run = _RUNS.setdefault(host.state, {})
    if directory not in run:
        try:
            found = sealing.ensure(directory, cluster_name, keys=key_factory)
        except PKIError as error:
            raise DeployError(f"PKI {directory}: {error}") from None
        if found.created:
            logger.info(f"PKI {directory}: created the sealed-secrets sealing key ({found.cert_file}); back it up")
        run[directory] = found
    return run[directory]


@dataclass(frozen=True)
class KeySecret:
    name: str
    cert: str
    key: str


def key_secrets(keys: sealing.SealingKeys) -> list[KeySecret]:
    """The Secrets the controller finds its keys in: the active pair, then each retired one."""
    found = [KeySecret(KEY_SECRET, keys.active.cert_pem.decode(), keys.active.key_pem.decode())]
    for old in keys.retired:
        name = f"{KEY_SECRET}-retired-{old.name.lower()}"
        if not _DNS_NAME.match(name):
            raise addon.AddonError(
                f"{keys.directory}/{sealing.RETIRED}/{old.name}.key: its name cannot name a Secret "
                "(lower-case letters, digits, '-' and '.')"
            )
        found.append(KeySecret(name, old.cert_pem.decode(), old.key_pem.decode()))
    return found


def keys_digest(keys: sealing.SealingKeys) -> str:
    """sha256 over every certificate the controller holds: on the pods, so a new or retired key restarts them."""
    digest = hashlib.sha256()
    for one in (keys.active, *keys.retired):
        digest.update(one.cert_pem)
    return digest.hexdigest()


def args() -> list[str]:
    return [
        f"--key-prefix={KEY_SECRET}",
        # the key stays the one the PKI holds (and backs up): no key made by the controller
        "--key-renew-period=0",
        "--update-status",
        f"--listen-addr=:{HTTP_PORT}",
        f"--listen-metrics-addr=:{METRICS_PORT}",
    ]


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    keys = sealing_keys()
    return {
        "namespace": NAMESPACE,
        "name": NAME,
        "image": settings["sealed_secrets_image"],
        "args": args(),
        "http_port": HTTP_PORT,
        "metrics_port": METRICS_PORT,
        "user": USER,
        "key_label": KEY_LABEL,
        "key_secrets": key_secrets(keys),
        "keys_digest": keys_digest(keys),
        "resources": {key.removeprefix("sealed_secrets_"): settings[key] for key in RESOURCE_KEYS},
    }


# --- the repository's SealedSecrets ---------------------------------------------------------------------------


def manifest_files(paths: list[str], base: Path = REPO) -> list[Path]:
    """Every file the paths name (a directory: its manifests, recursively, by name); a missing path raises."""
    found: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base / path
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise addon.AddonError(f"sealed_secrets_files: {text!r} ({path}) is neither a file nor a directory")
    return found


def _without_null_timestamps(document: dict[str, Any]) -> dict[str, Any]:
    # kubeseal writes `creationTimestamp: null` in both metadata blocks; the apiserver drops it
    for metadata in (document.get("metadata"), ((document.get("spec") or {}).get("template") or {}).get("metadata")):
        if isinstance(metadata, dict) and "creationTimestamp" in metadata and metadata["creationTimestamp"] is None:
            del metadata["creationTimestamp"]
    document.pop("status", None)
    return document


def sealed_secret(document: Any, where: str) -> dict[str, Any]:
    """``document`` when it is a SealedSecret the set can apply; an ``AddonError`` saying what is wrong."""
    if not isinstance(document, dict):
        raise addon.AddonError(f"{where}: not a Kubernetes object")
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if kind == "Secret":
        raise addon.AddonError(
            f"{where}: a plain Secret; only SealedSecrets belong in the repository (seal it: spectra seal), and "
            "remove the plain one from the repository's history"
        )
    if (api_version, kind) != (API_VERSION, "SealedSecret"):
        raise addon.AddonError(f"{where}: {api_version}/{kind}, expected a {API_VERSION} SealedSecret")
    metadata = document.get("metadata") or {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str) or not _DNS_NAME.match(name):
        raise addon.AddonError(f"{where}: metadata.name {name!r} is not a Secret name")
    if not values.is_dns_label(namespace):
        # strict scope seals for namespace/name: without a namespace it would land in "default"
        raise addon.AddonError(f"{where}: metadata.namespace {namespace!r}: the namespace it was sealed for")
    encrypted = (document.get("spec") or {}).get("encryptedData")
    if not isinstance(encrypted, dict) or not encrypted:
        raise addon.AddonError(f"{where}: spec.encryptedData holds nothing")
    return _without_null_timestamps(document)


def sealed_secrets(settings: Mapping[str, Any], base: Path = REPO) -> list[dict[str, Any]]:
    """The SealedSecrets of ``sealed_secrets_files``, in file order; a namespace/name given twice raises."""
    paths = file_list(settings["sealed_secrets_files"]) or []
    found: dict[tuple[str, str], str] = {}
    documents = []
    for path in manifest_files(paths, base):
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as error:
            raise addon.AddonError(f"sealed_secrets_files: {path}: {error}") from None
        for index, document in enumerate(loaded):
            if document is None:
                continue
            where = f"{path}" + (f" (document {index + 1})" if len(loaded) > 1 else "")
            one = sealed_secret(document, where)
            ref = (one["metadata"]["namespace"], one["metadata"]["name"])
            if ref in found:
                raise addon.AddonError(f"{where}: SealedSecret {ref[0]}/{ref[1]} is also in {found[ref]}")
            found[ref] = where
            documents.append(one)
    return documents


def files_context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    return {"documents": sealed_secrets(settings)}


@dataclass(frozen=True)
class _FilesAddon(addon.Addon):
    """The SealedSecrets' set: on with the controller (without its CRD they cannot be applied)."""

    @property
    def switch(self) -> str:
        return "sealed_secrets_enabled"


ADDON = addon.Addon(
    name="sealed-secrets",
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    namespace=NAMESPACE,
    pod_security="restricted",
    checks=(check,),
)
COMPONENT = addon.addon_component(ADDON)
# the module's checks run once, with COMPONENT
FILES_ADDON = _FilesAddon(name="sealed-secrets-files", defaults=DEFAULTS, templates=FILES_TEMPLATES,
                          context=files_context)  # fmt: skip
FILES_COMPONENT = addon.addon_component(FILES_ADDON)
