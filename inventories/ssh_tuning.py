"""``enable()``: TCP_NODELAY on every SSH socket pyinfra opens (~2 ms per remote command instead of ~44 ms).

Each inventory file calls it: inventory files are loaded before any connection, by ``pyinfra`` and
``spectra`` alike. The patch itself (paramiko's ``Transport``, which pyinfra's SSH connector uses) lives in
:mod:`spectra.pyinfra_compat`, with every other use of pyinfra internals.
"""

from __future__ import annotations

from spectra import pyinfra_compat


def enable() -> bool:
    """True when the option is set on new SSH connections (installed now or before)."""
    return pyinfra_compat.enable_ssh_tcp_nodelay()
