"""The cluster's Secrets encryption key: one for the whole cluster, made once in the PKI directory on the
machine running pyinfra (``<pki_dir>/secrets-encryption.key``, 0600, beside the CA keys; back it up with them)
and never regenerated: without it the Secrets stored in etcd cannot be read. A host whose installed
configuration holds another key (a PKI directory restored without its key file, another cluster's) stops the
run before anything changes, unless told to replace it. A helper of the control plane component, with no
settings of its own.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import yaml
from pyinfra import host, logger
from pyinfra.api import DeployError

from spectra.pki.store import KEY_MODE, locked, write_atomic

ENCRYPTION_KEY_FILE = "secrets-encryption.key"  # in the PKI directory on the machine running pyinfra

_KEYS: WeakKeyDictionary[Any, dict[Path, bytes]] = WeakKeyDictionary()


def encryption_key(directory: Path) -> bytes:
    """The cluster's 32-byte Secrets encryption key, from ``directory/secrets-encryption.key`` (base64), made
    there once (0600, under the PKI directory's lock) when missing, never replaced."""
    run = _KEYS.setdefault(host.state, {})
    if directory in run:
        return run[directory]
    path = directory / ENCRYPTION_KEY_FILE
    with locked(directory):
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = None
        if text is None:
            key = secrets.token_bytes(32)
            write_atomic(path, (base64.b64encode(key).decode() + "\n").encode(), KEY_MODE)
        else:
            try:
                key = base64.b64decode(text.strip(), validate=True)
            except ValueError:
                key = b""
            if len(key) != 32:
                raise DeployError(
                    f"{path} does not hold a base64 32-byte key: restore it from your backup of {directory} "
                    "(it is never regenerated: the Secrets stored in etcd are encrypted with it)"
                )
            if path.stat().st_mode & 0o777 != KEY_MODE:
                path.chmod(KEY_MODE)
    run[directory] = key
    return key


def installed_keys(text: str) -> set[str] | None:
    """The key secrets (base64) of an installed encryption configuration; None when it cannot be read."""
    try:
        document = yaml.safe_load(text)
        found = set()
        for resource in document["resources"]:
            for provider in resource["providers"]:
                for options in provider.values():
                    for key in (options or {}).get("keys") or []:
                        found.add(str(key["secret"]))
        return found
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


def check_encryption_key(state: Any, key: bytes, path: str, directory: Path, allow_change: bool) -> None:
    """Stop when the host's encryption configuration holds keys but not the PKI directory's key: a PKI directory
    restored without its key file (or another cluster's) would otherwise make every stored Secret unreadable.

    + allow_change: ``control_plane_allow_encryption_key_change``: warn and go on instead
    """
    if not state or state.get("content") is None:
        return
    keys = installed_keys(str(state["content"]))
    if keys is not None and base64.b64encode(key).decode() in keys:
        return
    what = "cannot be read" if keys is None else "holds another key"
    message = f"{path} {what} than {directory}/{ENCRYPTION_KEY_FILE}"
    if allow_change:
        logger.warning(f"{host.name}: {message}: replacing it (control_plane_allow_encryption_key_change)")
        return
    raise DeployError(
        f"{host.name}: {message}: the Secrets stored in etcd are encrypted with the installed one. Restore "
        f"{ENCRYPTION_KEY_FILE} from the backup of {directory} (or point pki_dir at this cluster's PKI "
        "directory); set control_plane_allow_encryption_key_change=True only if those Secrets may be lost."
    )
