"""``spectra checksums kubernetes``: add a Kubernetes release's published sums to a checksum table.

    spectra checksums kubernetes --version v1.36.4 [--from-url BASE] [--arch amd64,arm64]
                                 [--binary kubelet,...] [--table PATH] [--dry-run] [--replace]

Reads ``BASE/<version>/bin/linux/<arch>/<binary>.sha256`` (BASE defaults to https://dl.k8s.io/release)
for every architecture and binary asked for, checks that each file is one sha256 digest, and merges them
into the table (default ``deploys/checksums/kubernetes.yaml``). Every sum is fetched and checked before the
table is touched, and the table is replaced in one rename: a failure leaves it as it was. A sum the table
already holds with another value is refused, since upstream never changes a published sum (one of the two
is wrong); ``--replace`` takes the fetched one.

Prints one line per sum, tab separated: ``added|present|replaced  version  arch  binary  sha256``.

Exit codes: 0 the table holds the sums (written now, already there, or --dry-run); 1 the source failed
(unreachable, HTTP error, malformed sum file), a sum differs from the table's, or the table could not be
written; 2 invalid arguments or an invalid existing table (nothing fetched).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploys import checksums
from deploys.checksums import upstream

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


@dataclass(frozen=True)
class Entry:
    status: str  # added, present, replaced, differs
    version: str
    arch: str
    binary: str
    sha256: str
    previous: str | None = None

    def line(self) -> str:
        was = f"\t(was {self.previous})" if self.status == "replaced" else ""
        return f"{self.status}\t{self.version}\t{self.arch}\t{self.binary}\t{self.sha256}{was}"


def compare(table: checksums.Table, fetched: checksums.Table) -> list[Entry]:
    """What merging ``fetched`` into ``table`` does to each sum (``differs``: the table holds another)."""
    entries = []
    for version, arches in fetched.items():
        for arch, sums in arches.items():
            for binary, digest in sums.items():
                previous = table.get(version, {}).get(arch, {}).get(binary)
                if previous is None:
                    status = "added"
                elif previous == digest:
                    status = "present"
                else:
                    status = "differs"
                entries.append(Entry(status, version, arch, binary, digest, previous))
    return entries


def _items(values: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """``--arch amd64,arm64 --arch s390x`` -> [amd64, arm64, s390x], duplicates dropped."""
    if not values:
        return list(default)
    items = [item.strip() for value in values for item in value.split(",")]
    return list(dict.fromkeys(item for item in items if item))


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "checksums",
        help="add a release's published sha256 sums to a checksum table",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    kubernetes = kinds.add_parser(
        "kubernetes",
        help="Kubernetes release binaries (deploys/checksums/kubernetes.yaml)",
        description="Read <BASE>/<version>/bin/linux/<arch>/<binary>.sha256 and add the sums to the table.",
    )
    kubernetes.add_argument("--version", required=True, help="release tag, e.g. v1.36.4")
    kubernetes.add_argument(
        "--from-url",
        default=checksums.UPSTREAM_KUBERNETES_BASE_URL,
        metavar="BASE",
        help="release root in upstream's layout (default: %(default)s)",
    )
    kubernetes.add_argument(
        "--arch",
        action="append",
        help=f"architectures, comma separated or repeated (default: {','.join(upstream.DEFAULT_ARCHES)})",
    )
    kubernetes.add_argument(
        "--binary",
        action="append",
        help=f"binaries, comma separated or repeated (default: all of {','.join(checksums.KUBERNETES_BINARIES)})",
    )
    kubernetes.add_argument(
        "--table", type=Path, default=checksums.KUBERNETES_TABLE, help="table to write (default: %(default)s)"
    )
    kubernetes.add_argument("--dry-run", action="store_true", help="fetch and check, print, write nothing")
    kubernetes.add_argument("--replace", action="store_true", help="take fetched sums that differ from the table's")
    kubernetes.add_argument(
        "--timeout", type=float, default=upstream.TIMEOUT_SECONDS, help="seconds per file (default: %(default)s)"
    )


def _error(message: str) -> None:
    print(f"spectra: checksums: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """``spectra checksums kubernetes``; the exit codes are in the module docstring."""
    arches = _items(args.arch, upstream.DEFAULT_ARCHES)
    binaries = _items(args.binary, checksums.KUBERNETES_BINARIES)
    table_path: Path = args.table
    try:
        upstream.check_kubernetes_version(args.version)
        upstream.check_base_url(args.from_url)
        for arch in arches:
            upstream.check_arch(arch)
        for binary in binaries:
            upstream.check_binary(binary)
        table = checksums.load_table(table_path)  # a broken table stops the command before any fetch
    except checksums.ChecksumError as exc:
        _error(str(exc))
        return EXIT_INVALID

    try:
        fetched = upstream.kubernetes_sums(args.from_url, args.version, arches, binaries, timeout=args.timeout)
    except checksums.ChecksumError as exc:
        _error(f"{exc}; {table_path} is unchanged")
        return EXIT_FAILED

    entries = compare(table, fetched)
    differing = [entry for entry in entries if entry.status == "differs"]
    if differing and not args.replace:
        for entry in differing:
            _error(
                f"{entry.version} {entry.arch} {entry.binary}: {args.from_url} publishes {entry.sha256}, "
                f"{table_path} holds {entry.previous}"
            )
        _error(f"{len(differing)} sum(s) differ from the table; {table_path} is unchanged (--replace takes them)")
        return EXIT_FAILED
    entries = [
        Entry("replaced", e.version, e.arch, e.binary, e.sha256, e.previous) if e.status == "differs" else e
        for e in entries
    ]
    for entry in entries:
        print(entry.line())

    counts = {status: sum(entry.status == status for entry in entries) for status in ("added", "replaced", "present")}
    summary = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    if args.dry_run:
        print(f"spectra: checksums: {table_path}: {summary} (dry run: nothing written)", file=sys.stderr)
        return EXIT_OK
    merged = table
    for arch, sums in fetched[args.version].items():
        merged = checksums.with_entries(merged, args.version, arch, sums)
    try:
        wrote = checksums.write_table(table_path, merged)
    except OSError as exc:
        _error(f"cannot write {table_path}: {exc}")
        return EXIT_FAILED
    print(f"spectra: checksums: {table_path}: {summary}{'' if wrote else ' (unchanged)'}", file=sys.stderr)
    return EXIT_OK
