"""Current values of many sysctl keys, read from /proc/sys in one remote command."""

from __future__ import annotations

from collections.abc import Sequence

from pyinfra.api import FactBase, QuoteString, StringCommand

# Given "key path" pairs: "key<TAB>-" for a key whose /proc/sys file is absent or unreadable,
# "P|key<TAB>path" for the others, then one grep prints "path:line" for every line of every present file
# (the value: its lines joined with spaces, whitespace squeezed when processed). A fixed number of
# processes, not a few per key (the lab's nodes share the machine's CPUs with the run).
_SCRIPT = (
    "i=0; n=$(($# / 2)); "
    'while [ "$i" -lt "$n" ]; do k=$1; p=$2; shift 2; i=$((i + 1)); '
    'if [ -f "$p" ] && [ -r "$p" ]; then printf \'P|%s\\t%s\\n\' "$k" "$p"; set -- "$@" "$p"; '
    "else printf '%s\\t-\\n' \"$k\"; fi; done; "
    "if [ $# -gt 0 ]; then grep -H '' -- \"$@\" 2>/dev/null; fi; true"
)


def proc_path(key: str) -> str:
    """``net.ipv4.ip_forward`` -> ``/proc/sys/net/ipv4/ip_forward`` (as ``sysctl`` maps it)."""
    return "/proc/sys/" + key.replace(".", "/")


def normalise_value(value: object) -> str:
    """``1`` -> ``"1"``; ``"32768\\t60999"``/``[32768, 60999]`` -> ``"32768 60999"``."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return " ".join(str(value).split())


class SysctlValues(FactBase[dict[str, str | None]]):
    """
    ``{"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": None}``: ``None`` when the
    key does not exist (its module is not loaded, or it belongs to another network namespace type).
    Multi-value keys come as one space-separated string.
    """

    def command(self, keys: Sequence[str]) -> StringCommand:
        args: list[QuoteString] = []
        for key in keys:
            args += [QuoteString(key), QuoteString(proc_path(key))]
        return StringCommand("sh", "-c", QuoteString(_SCRIPT), "sh", *args)

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        paths: dict[str, str] = {}  # path -> key
        lines: dict[str, list[str]] = {}
        for line in output:
            if line.startswith("P|"):
                key, _, path = line[2:].partition("\t")
                paths[path] = key
                lines[key] = []
                continue
            if line.startswith("/"):
                path, sep, value = line.partition(":")
                while sep and path not in paths:  # a path with ":" in it
                    more, sep, value = value.partition(":")
                    path = f"{path}:{more}"
                if path in paths:
                    lines[paths[path]].append(value)
                continue
            key, sep, rest = line.partition("\t")
            if not sep or not key:
                continue
            values[key] = normalise_value(rest[1:]) if rest.startswith("+") else None
        for key, found in lines.items():
            values[key] = normalise_value(" ".join(found))
        return values
