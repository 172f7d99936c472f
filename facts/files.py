"""State of many files at once (type, mode, owner, group, sha256, optionally content): one command."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any, TypedDict

from pyinfra.api import FactBase, FactProcessError, QuoteString, StringCommand


class FileState(TypedDict, total=False):
    type: str  # "file", "directory", "link" (dangling), "other"
    mode: str  # octal permission digits as stat prints them: "644", "4755"
    user: str
    group: str
    size: int
    mtime: str  # modification time, seconds with nanoseconds as stat prints them ("1700000000.123456789")
    ctime: str  # inode change time, same form: any write, chmod, chown or rename of the file moves it
    inode: str
    sha256: str | None  # regular files only, when asked for (never for ``stat_only`` paths)
    content: str | None  # only for paths listed in ``contents``


# Output, one line each: "A|path" for every path asked; "S|type|mode|user|group|size|mtime|ctime|inode|path"
# for every path that exists (stat -L follows links: the state of what the path points to; the path last,
# so it may contain "|"); "L|path" for a dangling link; "H|<sha256sum line>" for hashed regular files;
# "C|base64|path" for paths whose content was asked. An asked path with neither S nor L is missing.
# Paths come in the order contents, hashed, stat-only: only the first "$nhash" may be hashed.
# A fixed number of processes whatever the number of paths (one stat, one sha256sum), not a few per path:
# the no-op run reads dozens of paths on every host.
_SCRIPT = (
    'hash="$1"; ncontent="$2"; nhash="$3"; shift 3; '
    "printf 'A|%s\\n' \"$@\"; "
    "stat -L -c 'S|%F|%a|%U|%G|%s|%.9Y|%.9Z|%i|%n' -- \"$@\" 2>/dev/null; "
    'for p in "$@"; do if [ -L "$p" ] && [ ! -e "$p" ]; then printf \'L|%s\\n\' "$p"; fi; done; '
    'if [ "$hash" = 1 ] && [ "$nhash" -gt 0 ]; then '
    '  i=0; for p in "$@"; do i=$((i+1)); [ "$i" -le "$nhash" ] || break; '
    '    if [ -f "$p" ]; then printf \'%s\\n\' "$p"; fi; done '
    "  | xargs -d '\\n' -r sha256sum -- 2>/dev/null | while IFS= read -r l; do printf 'H|%s\\n' \"$l\"; done; "
    "fi; "
    'i=0; for p in "$@"; do i=$((i+1)); [ "$i" -le "$ncontent" ] || break; '
    '  if [ -f "$p" ]; then printf \'C|%s|%s\\n\' "$(base64 -w0 -- "$p" 2>/dev/null)" "$p"; fi; done; '
    "true"
)

# Line kinds of this fact's output (for facts that add their own lines to the same command).
LINE_PREFIXES = ("A|", "S|", "L|", "H|", "C|")

_TYPES = {"regular file": "file", "regular empty file": "file", "directory": "directory"}


class FileStates(FactBase[dict[str, FileState | None]]):
    """
    The state of many paths in one remote command. ``None`` for a missing path:

    .. code:: python

        {
            "/etc/containerd/config.toml": {"type": "file", "mode": "644", "user": "root",
                                            "group": "root", "size": 812, "sha256": "9f86d0..."},
            "/usr/local/bin/node_exporter": None,
        }

    + paths: the paths to look at
    + contents: paths (small files, e.g. stamps) whose content to return as ``content``
    + sha256: compute the sha256 of regular files (default on)
    + stat_only: paths never hashed (large files whose sum a stamp records: compare size, mtime, ctime
      and inode with the stamp instead, see ``deploys.operations.download``)
    """

    def command(
        self,
        paths: Sequence[str],
        contents: Sequence[str] = (),
        sha256: bool = True,
        stat_only: Sequence[str] = (),
    ) -> StringCommand:
        # Contents first, then hashed paths, then stat-only ones: the script tells them by position.
        first = list(dict.fromkeys(contents))
        hashed = [p for p in dict.fromkeys(paths) if p not in first and p not in stat_only]
        last = [p for p in dict.fromkeys([*paths, *stat_only]) if p not in first and p not in hashed]
        ordered = [*first, *hashed, *last]
        return StringCommand(
            "sh",
            "-c",
            QuoteString(_SCRIPT),
            "sh",
            "1" if sha256 else "0",
            str(len(first)),
            str(len(first) + len(hashed)),
            *[QuoteString(path) for path in ordered],
        )

    @staticmethod
    def default() -> dict[str, FileState | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, FileState | None]:
        asked: list[str] = []
        states: dict[str, FileState | None] = {}
        sums: dict[str, str] = {}
        contents: dict[str, str] = {}
        for line in output:
            kind, _, rest = line.partition("|")
            if kind == "A":
                if rest:
                    asked.append(rest)
            elif kind == "S":
                bits = rest.split("|", 8)
                if len(bits) != 9:
                    raise FactProcessError(f"unexpected file state line: {line!r}")
                file_type, mode, user, group, size, mtime, ctime, inode, path = bits
                states[path] = FileState(
                    type=_TYPES.get(file_type, "other"),
                    mode=mode,
                    user=user,
                    group=group,
                    size=int(size) if size.isdigit() else 0,
                    mtime=mtime,
                    ctime=ctime,
                    inode=inode,
                    sha256=None,
                )
            elif kind == "L":
                states[rest] = FileState(type="link", mode="", user="", group="", size=0, sha256=None)
            elif kind == "H":
                digest, path = _sum_line(rest)
                sums[path] = digest
            elif kind == "C":
                encoded, _, path = rest.partition("|")
                try:
                    contents[path] = base64.b64decode(encoded).decode(errors="replace")
                except (binascii.Error, ValueError) as error:
                    raise FactProcessError(f"bad content for {path}: {error}") from error
        for path in asked:
            states.setdefault(path, None)
        for path, state in states.items():
            if state is None:
                continue
            if path in sums:
                state["sha256"] = sums[path]
            if path in contents:
                state["content"] = contents[path]
        return states


def _sum_line(line: str) -> tuple[str, str]:
    """``<sha256>  <path>`` as sha256sum prints it; a leading backslash means the path is escaped."""
    escaped = line.startswith("\\")
    if escaped:
        line = line[1:]
    digest, separator, path = line.partition("  ")
    if not separator or len(digest) != 64:
        raise FactProcessError(f"unexpected sha256sum line: {line!r}")
    if escaped:
        path = re.sub(r"\\(.)", lambda match: "\n" if match.group(1) == "n" else match.group(1), path)
    return digest, path


def normalise_mode(mode: int | str | None) -> str | None:
    """``"0644"``/``"644"``/``644`` -> ``"644"`` (the way stat prints it); None stays None.

    An int is read the way pyinfra reads modes: its decimal digits are the octal digits (644).
    """
    if mode is None:
        return None
    if isinstance(mode, int):
        text = str(mode)
    else:
        text = mode.strip()
        if text.startswith("0o"):
            text = text[2:]
    text = text.lstrip("0") or "0"
    if not set(text) <= set("01234567"):
        raise ValueError(f"not an octal mode: {mode!r}")
    return text


def state_matches(
    state: FileState | None,
    sha256: str | None = None,
    mode: int | str | None = None,
    user: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """What differs between ``state`` and what is wanted: {} when nothing does."""
    if state is None:
        return {"exists": False}
    diff: dict[str, Any] = {}
    if sha256 is not None and state.get("sha256") != sha256:
        diff["sha256"] = state.get("sha256")
    wanted_mode = normalise_mode(mode)
    if wanted_mode is not None and state.get("mode") != wanted_mode:
        diff["mode"] = state.get("mode")
    if user is not None and state.get("user") != user:
        diff["user"] = state.get("user")
    if group is not None and state.get("group") != group:
        diff["group"] = state.get("group")
    return diff
