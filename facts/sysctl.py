"""Current values of many sysctl keys, read from /proc/sys in one remote command."""

from __future__ import annotations

from collections.abc import Sequence

from pyinfra.api import FactBase, QuoteString, StringCommand

# For each key: "key<TAB>+value" (whitespace runs squeezed to one space) or "key<TAB>-" when absent.
_SCRIPT = (
    'for k in "$@"; do p="/proc/sys/$(echo "$k" | tr . /)"; '
    'if [ -r "$p" ] && v="$(cat "$p" 2>/dev/null)"; then '
    "printf '%s\\t+%s\\n' \"$k\" \"$(printf '%s' \"$v\" | tr '\\n' ' ')\"; "
    "else printf '%s\\t-\\n' \"$k\"; fi; done"
)


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
        return StringCommand("sh", "-c", QuoteString(_SCRIPT), "sh", *[QuoteString(key) for key in keys])

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for line in output:
            key, sep, rest = line.partition("\t")
            if not sep or not key:
                continue
            values[key] = normalise_value(rest[1:]) if rest.startswith("+") else None
        return values
