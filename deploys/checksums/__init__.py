"""Checksum tables for downloaded release binaries: version -> architecture -> binary -> sha256.

A table is data, not code. Production reads ``deploys/checksums/kubernetes.yaml`` (sums published by the
upstream project, copied from its ``<binary>.sha256`` files); the lab reads the table its own build wrote
(``$SPECTRA_LAB_DIR/checksums/kubernetes.yaml``). The code that downloads and verifies is the same for both:
only the base URL and the table differ.

Adding a patch release needs no code change::

    spectra checksums kubernetes --version v1.36.4

fetches each ``<base>/<version>/bin/linux/<arch>/<binary>.sha256`` (:mod:`deploys.checksums.upstream`) and
writes the entries into the table (:mod:`spectra_cli.checksums`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

CHECKSUMS_DIR = Path(__file__).resolve().parent
KUBERNETES_TABLE = CHECKSUMS_DIR / "kubernetes.yaml"

# The upstream download site's release root: <base>/<version>/bin/<os>/<arch>/<binary>(.sha256)
UPSTREAM_KUBERNETES_BASE_URL = "https://dl.k8s.io/release"

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+$")
ARCH_RE = re.compile(r"^[a-z0-9]+$")
BINARY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# The Kubernetes release binaries Spectra installs (and the lab builds): the table holds sums for these.
KUBERNETES_BINARIES = (
    "kubelet",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
)

Table = dict[str, dict[str, dict[str, str]]]

TABLE_HEADER = """\
# sha256 of release binaries: version -> architecture (linux) -> binary -> sha256 (hex).
# Data only. Add a release with:
#   spectra checksums kubernetes --version vX.Y.Z [--from-url BASE_URL] [--arch amd64,arm64] [--table PATH]
# A binary missing here is refused at install time (never installed unverified).
"""


class ChecksumError(Exception):
    """A table, sum file or lookup that is not valid; the message names what and where."""


def parse_sha256_file(text: str, source: str = "sha256 file", filename: str | None = None) -> str:
    """Return the hex digest of a ``.sha256`` file: just the digest (upstream) or ``digest  filename``.

    One line only (a list of sums is not the sum of one file); with ``filename``, a name on that line must
    be it (``*name``, sha256sum's binary mode, included)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ChecksumError(f"{source} is empty")
    if len(lines) > 1:
        raise ChecksumError(f"{source} has {len(lines)} lines; a .sha256 file holds one digest: {text[:80]!r}")
    fields = lines[0].split()
    digest = fields[0].lower()
    if not SHA256_RE.match(digest):
        raise ChecksumError(f"{source} does not start with a sha256 hex digest: {text[:80]!r}")
    if len(fields) > 2:
        raise ChecksumError(f"{source} is not `digest` or `digest  filename`: {text[:80]!r}")
    if filename is not None and len(fields) == 2 and fields[1].lstrip("*").rsplit("/", 1)[-1] != filename:
        raise ChecksumError(f"{source} is the sum of {fields[1]!r}, not of {filename!r}")
    return digest


def validate_table(raw: Any, source: str = "checksum table") -> Table:
    """Check a loaded table's shape and values; return it as plain dicts of strings."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ChecksumError(f"{source}: expected a mapping of versions, got {type(raw).__name__}")
    table: Table = {}
    for version, arches in raw.items():
        version = str(version)
        if not VERSION_RE.match(version):
            raise ChecksumError(f"{source}: version {version!r} is not of the form vX.Y.Z")
        if not isinstance(arches, Mapping):
            raise ChecksumError(f"{source}: {version} must map architectures to binaries")
        table[version] = {}
        for arch, binaries in arches.items():
            arch = str(arch)
            if not ARCH_RE.match(arch):
                raise ChecksumError(f"{source}: {version}: architecture {arch!r} is not valid")
            if not isinstance(binaries, Mapping):
                raise ChecksumError(f"{source}: {version}/{arch} must map binaries to sha256 sums")
            table[version][arch] = {}
            for binary, digest in binaries.items():
                binary = str(binary)
                if not BINARY_RE.match(binary):
                    raise ChecksumError(f"{source}: {version}/{arch}: binary name {binary!r} is not valid")
                if not isinstance(digest, str) or not SHA256_RE.match(digest):
                    raise ChecksumError(f"{source}: {version}/{arch}/{binary}: {digest!r} is not a sha256 hex digest")
                table[version][arch][binary] = digest
    return table


def load_table(path: Path) -> Table:
    """Read a table; a missing file is an empty table."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ChecksumError(f"{path} is not valid YAML: {exc}") from exc
    return validate_table(raw, str(path))


def lookup(table: Table, version: str, arch: str, binary: str, source: str = "checksum table") -> str:
    """The sha256 for one binary, or an error that says which entry is missing and how to add it."""
    try:
        return table[version][arch][binary]
    except KeyError:
        raise ChecksumError(
            f"{source} has no sha256 for {binary} {version} linux/{arch}; add it with "
            f"`spectra checksums kubernetes --version {version} --arch {arch}`"
        ) from None


def with_entries(table: Table, version: str, arch: str, sums: Mapping[str, str]) -> Table:
    """A copy of ``table`` with ``sums`` set for version/arch (other binaries of that entry are kept)."""
    merged = validate_table({**table, version: {**table.get(version, {}), arch: {
        **table.get(version, {}).get(arch, {}), **dict(sums)}}})  # fmt: skip
    return merged


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version[1:].split("."))


def dump_table(table: Table) -> str:
    """YAML text with a fixed header and a stable order (newest version first), so diffs stay small."""
    ordered = {
        version: {arch: dict(sorted(table[version][arch].items())) for arch in sorted(table[version])}
        for version in sorted(table, key=_version_key, reverse=True)
    }
    body = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False) if ordered else "{}\n"
    return TABLE_HEADER + body


def write_table(path: Path, table: Table) -> bool:
    """Write atomically (temporary file, then rename). Returns whether the file changed."""
    text = dump_table(validate_table(table, str(path)))
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def release_url(base_url: str, version: str, arch: str, binary: str, os_name: str = "linux") -> str:
    """``<base>/<version>/bin/<os>/<arch>/<binary>``: the upstream layout, which the lab mirror copies."""
    return f"{base_url.rstrip('/')}/{version}/bin/{os_name}/{arch}/{binary}"


def artifact(table: Table, base_url: str, version: str, arch: str, binary: str) -> tuple[str, str]:
    """``(url, sha256)`` for one binary: what a deploy hands to the verified download operation.

    Production passes the upstream base URL and the repository table; the lab passes its mirror's URL
    (``http://<lab gateway>:8080/release``) and the table its own build wrote. Nothing else differs.
    """
    return release_url(base_url, version, arch, binary), lookup(table, version, arch, binary)
