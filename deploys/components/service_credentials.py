"""Restart a service whose TLS files changed since its last (re)start (etcd, the control plane's services).

systemd hands ``LoadCredential=`` files over only at start, and the control plane's services read theirs only
at start: a reissued certificate reaches them with a restart. Each service keeps a stamp of the files' sha256
sums as they were at its last (re)start; a sum that differs restarts it (``systemctl try-restart``: only if it
runs) and records the new ones. A helper of those components, with no settings of its own.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import OperationError, QuoteString, StringCommand, operation

from deploys.operations import managed
from facts.files import FileStates
from facts.systemd import unit_name


def credentials_stamp(sums: dict[str, str | None]) -> str:
    return "".join(f"{sums[path]}  {path}\n" for path in sorted(sums))


@operation()
def restart_on_new_credentials(unit: str, paths: list[str], stamp: str, current: Any = managed.UNSET):
    """
    Restart ``unit`` (if it runs: ``systemctl try-restart``) when the sha256 of one of ``paths`` differs
    from ``stamp``, then record the sums.

    + current: a ``FileStates`` snapshot holding ``paths`` (hashed) and ``stamp`` (content), read at prepare;
      read again here when an earlier operation of the run changed the host (the PKI may just have
      reissued a certificate)
    """
    wanted = sorted(set(paths))
    states = managed.fresh(current, FileStates, paths=[*wanted, stamp], contents=[stamp])
    sums = {path: (states.get(path) or {}).get("sha256") for path in wanted}
    missing = [path for path, digest in sums.items() if not digest]
    if missing:
        raise OperationError(f"{unit}: TLS files missing on the host: {', '.join(missing)} (install the PKI first)")
    text = credentials_stamp(sums)
    if ((states.get(stamp) or {}).get("content") or "") == text:
        host.noop(f"{unit}: TLS files unchanged since its last start")
        return
    yield StringCommand("systemctl", "try-restart", QuoteString(unit_name(unit)))
    yield from managed.content._inner(stamp, text, mode="0644", current=states.get(stamp))
