"""The cluster's Node objects as a control plane sees them (kubectl with a kubeconfig on the host)."""

from __future__ import annotations

import json
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

# $1 kubectl, $2 kubeconfig. "U|why" when either is missing; "J|<json>" on success; "E|<error>" otherwise.
_SCRIPT = r"""k="$1"; c="$2"
if [ ! -x "$k" ] || [ ! -r "$c" ]; then echo "U|$k or $c missing"; exit 0; fi
if o="$("$k" --kubeconfig "$c" --request-timeout=10s get nodes -o json 2>&1)"; then
  printf 'J|%s\n' "$(printf '%s' "$o" | tr -d '\n')"
else
  printf 'E|%s\n' "$(printf '%s' "$o" | tr '\n' ' ')"
fi
"""


def node_summary(item: dict[str, Any]) -> dict[str, Any]:
    conditions = {c.get("type"): c.get("status") for c in item.get("status", {}).get("conditions", []) or []}
    return {
        "labels": dict(item.get("metadata", {}).get("labels") or {}),
        "taints": [
            f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"
            for t in item.get("spec", {}).get("taints", []) or []
        ],
        "ready": conditions.get("Ready") == "True",
    }


class KubernetesNodes(FactBase[dict[str, Any]]):
    """
    Nodes by name, with labels, taints and readiness:

    .. code:: python

        {"state": "ok", "message": "",
         "nodes": {"node1": {"labels": {...}, "taints": ["node-role.kubernetes.io/control-plane:NoSchedule"],
                             "ready": True}}}

    ``state`` is "unavailable" when kubectl or the kubeconfig is not on the host (a first run), "error"
    when kubectl failed (apiserver down, no rights; ``message`` says what).
    """

    def command(self, kubectl: str, kubeconfig: str) -> StringCommand:
        return StringCommand(
            "sh", "-c", QuoteString(_SCRIPT), "spectra-nodes", QuoteString(kubectl), QuoteString(kubeconfig)
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        text = "\n".join(output)
        kind, _, rest = text.partition("|")
        if kind == "J":
            try:
                items = json.loads(rest).get("items", [])
            except json.JSONDecodeError as error:
                return {"state": "error", "message": f"kubectl printed no JSON: {error}", "nodes": {}}
            nodes = {item["metadata"]["name"]: node_summary(item) for item in items}
            return {"state": "ok", "message": "", "nodes": nodes}
        if kind == "U":
            return {"state": "unavailable", "message": rest, "nodes": {}}
        return {"state": "error", "message": rest or text, "nodes": {}}
