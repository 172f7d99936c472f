"""Objects read from a cluster's API with kubectl on a host (one command, answers that never fail the fact)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand

# $1 kubectl, $2 kubeconfig, $3 server URL, then the binding names. Lines: "U|why" when kubectl or the
# kubeconfig is missing, "J|..." the JSON kubectl printed, "E|..." its error output, "R|rc" its exit status.
_SCRIPT = r"""k="$1"; c="$2"; s="$3"; shift 3
if [ ! -x "$k" ] || [ ! -r "$c" ]; then echo "U|$k or $c missing"; exit 0; fi
e="$(mktemp)" || exit 1
o="$("$k" --kubeconfig "$c" --server "$s" --request-timeout=10s get clusterrolebindings "$@" \
  --ignore-not-found -o json 2>"$e")"; rc=$?
if [ -n "$o" ]; then printf '%s\n' "$o" | sed 's/^/J|/'; fi
while IFS= read -r l || [ -n "$l" ]; do printf 'E|%s\n' "$l"; done < "$e"; rm -f "$e"; echo "R|$rc"
"""


class Binding(TypedDict):
    role: str  # roleRef as "Kind/name"
    subjects: list[str]  # "Kind:name" each


class BindingsState(TypedDict):
    # "ok": read (``bindings`` holds those that exist); "forbidden": the identity may not read them (for an
    # identity whose rights come from a binding: that binding is missing); "unavailable": no kubectl or no
    # kubeconfig on the host; "error": anything else (apiserver down, TLS, ...), ``message`` says what
    state: str
    bindings: dict[str, Binding]
    message: str


class ClusterRoleBindings(FactBase[BindingsState]):
    """
    ClusterRoleBindings by name, read with ``kubectl get`` as the identity of ``kubeconfig``:

    .. code:: python

        {"state": "ok", "message": "",
         "bindings": {"kubeadm:cluster-admins": {"role": "ClusterRole/cluster-admin",
                                                 "subjects": ["Group:kubeadm:cluster-admins"]}}}

    + kubectl: path of kubectl on the host
    + kubeconfig: the identity to read as
    + server: the apiserver URL (overrides the kubeconfig's: ask one apiserver, not a balancer)
    + names: the bindings to look for; those that do not exist are absent from ``bindings``
    """

    def command(self, kubectl: str, kubeconfig: str, server: str, names: Sequence[str]) -> StringCommand:
        return StringCommand(
            "sh", "-c", QuoteString(_SCRIPT), "sh", QuoteString(kubectl), QuoteString(kubeconfig),
            QuoteString(server), *[QuoteString(name) for name in names],
        )  # fmt: skip

    @staticmethod
    def default() -> BindingsState:
        return {"state": "unavailable", "bindings": {}, "message": "no answer"}

    def process(self, output: list[str]) -> BindingsState:
        body: list[str] = []
        errors: list[str] = []
        rc: str | None = None
        for line in output:
            kind, _, rest = line.partition("|")
            if kind == "U":
                return {"state": "unavailable", "bindings": {}, "message": rest}
            if kind == "J":
                body.append(rest)
            elif kind == "E":
                errors.append(rest)
            elif kind == "R":
                rc = rest.strip()
        message = "\n".join(errors).strip()
        if rc != "0":
            state = "forbidden" if "(Forbidden)" in message else "error"
            return {"state": state, "bindings": {}, "message": message or f"kubectl exited {rc}"}
        try:
            document: Any = json.loads("\n".join(body)) if body else {}
        except ValueError as error:
            return {"state": "error", "bindings": {}, "message": f"kubectl printed no JSON: {error}"}
        items = document.get("items", []) if document.get("kind") == "List" else [document] if document else []
        bindings: dict[str, Binding] = {}
        for item in items:
            role = item.get("roleRef") or {}
            subjects = [f"{s.get('kind')}:{s.get('name')}" for s in item.get("subjects") or []]
            bindings[str(item.get("metadata", {}).get("name"))] = {
                "role": f"{role.get('kind')}/{role.get('name')}",
                "subjects": subjects,
            }
        return {"state": "ok", "bindings": bindings, "message": message}
