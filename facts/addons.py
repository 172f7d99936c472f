"""What the cluster holds of each addon set, in one command: the manifest last applied and its drift.

An addon set is applied from one host (the first control plane) and the manifest applied last is kept there
(``<dir>/<set>.yaml``, see ``deploys/addon.py``). For each set this fact returns that manifest and what a
server-side ``kubectl diff`` of it against the live cluster says: the objects whose live state differs
from what applying the kept manifest would give (a hand edit of a field we own, an object deleted by hand).
The diff is a dry-run apply on the apiserver, so it sees exactly what the next apply would change.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import TypedDict

from pyinfra.api import FactBase, FactProcessError, QuoteString, StringCommand

FIELD_MANAGER = "spectra"


class AddonSetState(TypedDict):
    kept: str | None  # the manifest applied last, None when the set was never applied from this host
    drift: list[str] | None  # objects that differ ("apps.v1.Deployment.monitoring.prometheus"); None: unknown
    error: str | None  # why the drift is unknown (no kubectl yet, the apiserver refused or did not answer)


# "K|set|base64 manifest" for a kept manifest; "R|set|exit code|base64 output" for its diff (only where kubectl
# is installed). `diff -qr` names the differing objects only: a Secret's data never reaches the output.
_SCRIPT = (
    'dir="$1"; kubectl="$2"; kubeconfig="$3"; manager="$4"; shift 4; '
    "tmp=$(mktemp -d) || exit 1; "
    # the diffs run side by side (each is a dry-run apply per object on the apiserver), then print in order
    'for name in "$@"; do f="$dir/$name.yaml"; [ -f "$f" ] && [ -x "$kubectl" ] || continue; '
    '  ( KUBECTL_EXTERNAL_DIFF="diff -qr" "$kubectl" --kubeconfig "$kubeconfig" --request-timeout=20s '
    '    diff --server-side --force-conflicts --field-manager="$manager" -f "$f" >"$tmp/$name.out" 2>&1; '
    '    echo $? >"$tmp/$name.rc" ) & '
    "done; wait; "
    'for name in "$@"; do f="$dir/$name.yaml"; [ -f "$f" ] || continue; '
    '  printf \'K|%s|%s\\n\' "$name" "$(base64 -w0 -- "$f")"; '
    '  [ -f "$tmp/$name.rc" ] || continue; '
    '  printf \'R|%s|%s|%s\\n\' "$name" "$(cat "$tmp/$name.rc")" "$(base64 -w0 <"$tmp/$name.out")"; '
    'done; rm -rf "$tmp"; true'
)

_DIFFERS = re.compile(r"^Files \S+/(?:LIVE|MERGED)-[^/\s]+/(\S+) and \S+ differ$")
_ONLY_IN = re.compile(r"^Only in \S*/(LIVE|MERGED)-[^/\s:]+: (\S+)$")


def drifted_objects(diff_output: str) -> list[str]:
    """The objects ``diff -qr LIVE MERGED`` names (kubectl's file names: group.version.Kind.namespace.name)."""
    found = []
    for line in diff_output.splitlines():
        if match := _DIFFERS.match(line.strip()):
            found.append(match.group(1))
        elif match := _ONLY_IN.match(line.strip()):
            # only in MERGED: the object is gone from the cluster; only in LIVE cannot happen for an apply
            found.append(match.group(2))
    return sorted(set(found))


class AddonSets(FactBase[dict[str, AddonSetState]]):
    """
    Per addon set: the manifest kept at ``<directory>/<set>.yaml`` and the drift of the cluster from it.

    .. code:: python

        {"monitoring": {"kept": "apiVersion: v1...", "drift": [], "error": None},
         "coredns": {"kept": None, "drift": None, "error": None}}     # never applied

    + directory: where the applied manifests are kept
    + names: the addon sets
    + kubectl: path of kubectl on the host (absent: the drift is unknown)
    + kubeconfig: the admin kubeconfig
    """

    def command(self, directory: str, names: Sequence[str], kubectl: str, kubeconfig: str) -> StringCommand:
        return StringCommand(
            "sh", "-c", QuoteString(_SCRIPT), "sh", QuoteString(directory.rstrip("/")), QuoteString(kubectl),
            QuoteString(kubeconfig), FIELD_MANAGER, *[QuoteString(name) for name in names],
        )  # fmt: skip

    @staticmethod
    def default() -> dict[str, AddonSetState]:
        return {}

    def process(self, output: list[str]) -> dict[str, AddonSetState]:
        states: dict[str, AddonSetState] = {}
        for line in output:
            kind, _, rest = line.partition("|")
            if kind == "K":
                name, _, encoded = rest.partition("|")
                states[name] = AddonSetState(kept=_decode(encoded, name), drift=None, error="kubectl not installed")
            elif kind == "R":
                name, code, encoded = (rest.split("|", 2) + ["", ""])[:3]
                if name not in states:
                    raise FactProcessError(f"addon set {name}: a diff without a kept manifest")
                text = _decode(encoded, name)
                kept = states[name]["kept"]
                if code == "0":
                    states[name] = AddonSetState(kept=kept, drift=[], error=None)
                elif code == "1" and (objects := drifted_objects(text)):
                    states[name] = AddonSetState(kept=kept, drift=objects, error=None)
                else:
                    lines = [line for line in text.splitlines() if line.strip()]
                    error = f"kubectl diff exited {code}: " + " | ".join(lines[-3:])
                    states[name] = AddonSetState(kept=kept, drift=None, error=error)
        return states


def _decode(encoded: str, name: str) -> str:
    try:
        return base64.b64decode(encoded).decode(errors="replace")
    except (binascii.Error, ValueError) as error:
        raise FactProcessError(f"addon set {name}: bad base64: {error}") from error


def describe(state: AddonSetState | None) -> str:
    """Why a set is applied again, for the operation's name; '' when it is converged."""
    if not state or state["kept"] is None:
        return "never applied"
    if state["drift"]:
        return "drifted: " + ", ".join(state["drift"])
    if state["drift"] is None:
        return f"drift unknown ({state['error']})"
    return ""


__all__ = ["AddonSetState", "AddonSets", "FIELD_MANAGER", "describe", "drifted_objects"]
