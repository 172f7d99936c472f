"""Kubernetes release binaries (kubelet, kube-apiserver, kubectl, ...), shared by the components that run them.

Not a deploy of its own: a component (control plane, kubelet, kube-proxy) asks for the binaries it runs and
keeps ONE remote command per host by adding :func:`binary_paths` to its own ``FileStates`` request (and
``Platform``, for the arch, to its fact requests), then calls :func:`install_binaries` with that snapshot and
restarts its services when an install ``will_change``. Those components list :func:`check` among theirs.

* URL: ``{kubernetes_download_base_url}/{kubernetes_version}/bin/linux/{arch}/{binary}``, upstream's layout
  (``https://dl.k8s.io/release``); an internal mirror or the lab mirror serves the same layout.
* sha256: ``deploys/checksums/kubernetes.yaml`` (the sums upstream publishes), with ``kubernetes_sha256``
  (same shape: version -> arch -> binary -> sha256) added on top; an entry there wins. A binary with no sum
  stops the host before anything is installed, naming the missing entry and how to add it.
* Install: ``deploys/operations/download.py`` (temporary file, sha256 checked, atomic rename, stamp), into
  ``kubernetes_bin_dir``, mode 0755, root-owned. A no-op run trusts the stamp and the binary's stat (size,
  mtime, ctime, inode); ``kubernetes_verify_binary`` hashes the installed binaries on every run instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError

from deploys import checksums
from deploys.operations.download import download, download_paths, download_stat_only
from deploys.prepare import prepared_fact
from deploys.settings import setting
from facts.platform import Platform

DEFAULTS: dict[str, Any] = {
    "kubernetes_version": "v1.36.3",  # release tag (v1.MINOR.PATCH) of every Kubernetes binary
    # release root, upstream layout: {base}/{version}/bin/linux/{arch}/{binary}
    "kubernetes_download_base_url": checksums.UPSTREAM_KUBERNETES_BASE_URL,
    # sums on top of deploys/checksums/kubernetes.yaml: {version: {arch: {binary: sha256}}}; an entry here wins
    "kubernetes_sha256": {},
    "kubernetes_bin_dir": "/usr/local/bin",  # where the binaries go (root, 0755)
    "kubernetes_verify_binary": False,  # hash the installed binaries on every run instead of trusting the stamp
}

TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()


def check(settings: Mapping[str, Any]) -> list[str]:
    """The version's format and the ``kubernetes_sha256`` table's shape (pure: the components that install
    binaries list it among their checks, so ``spectra validate`` runs it too)."""
    problems = []
    version = settings["kubernetes_version"]
    if not checksums.VERSION_RE.match(str(version)):
        problems.append(f"kubernetes_version={version!r}: a release tag like v1.36.3")
    try:
        checksums.validate_table(settings["kubernetes_sha256"] or {}, "kubernetes_sha256")
    except checksums.ChecksumError as error:
        problems.append(str(error))
    if not str(settings["kubernetes_bin_dir"]).startswith("/"):
        problems.append(f"kubernetes_bin_dir={settings['kubernetes_bin_dir']!r}: an absolute path")
    return problems


def binary_path(name: str) -> str:
    return f"{str(setting('kubernetes_bin_dir')).rstrip('/')}/{name}"


def binary_paths(names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """``(paths, contents, stat_only)`` the installs of ``names`` decide on: add them to the caller's own
    ``FileStates`` request (``managed.snapshot_files_kwargs``) and pass that snapshot to
    :func:`install_binaries`."""
    verify = bool(setting("kubernetes_verify_binary"))
    paths: list[str] = []
    contents: list[str] = []
    stat_only: list[str] = []
    for name in names:
        dest = binary_path(name)
        dest_and_stamp = download_paths(dest)
        paths += dest_and_stamp
        contents.append(dest_and_stamp[1])
        stat_only += download_stat_only(dest, verify=verify)
    return paths, contents, stat_only


def sha256_table() -> checksums.Table:
    """The repository's table with ``kubernetes_sha256`` merged over it, binary by binary."""
    try:
        table = checksums.load_table(checksums.KUBERNETES_TABLE)
        extra = checksums.validate_table(setting("kubernetes_sha256") or {}, "kubernetes_sha256")
    except checksums.ChecksumError as error:
        raise DeployError(f"{host.name}: {error}") from None
    for version, arches in extra.items():
        for arch, sums in arches.items():
            table = checksums.with_entries(table, version, arch, sums)
    return table


def install_binaries(names: list[str], files: dict[str, Any]) -> dict[str, Any]:
    """Install ``names`` (verified, atomic). ``files``: the caller's ``FileStates`` snapshot holding
    :func:`binary_paths` of ``names``. Returns the download operation of each binary, by name (restart a
    service when its binary's ``.will_change``). Every sum is looked up first: one missing stops the host
    with nothing installed."""
    version = str(setting("kubernetes_version"))
    arch = str(prepared_fact(Platform).get("arch") or "unknown")
    base = str(setting("kubernetes_download_base_url"))
    table = sha256_table()
    artifacts: dict[str, tuple[str, str]] = {}
    for name in names:
        try:
            artifacts[name] = checksums.artifact(table, base, version, arch, name)
        except checksums.ChecksumError as error:
            raise DeployError(
                f"{host.name}: {error} (or set kubernetes_sha256[{version!r}][{arch!r}][{name!r}]); "
                "nothing is installed without it"
            ) from None
    return {
        name: download(
            name=f"Install {name} {version}",
            url=url,
            dest=binary_path(name),
            sha256=sha256,
            current=files,
            verify=bool(setting("kubernetes_verify_binary")),
        )
        for name, (url, sha256) in artifacts.items()
    }
