"""``enable()``: pyinfra's operation ordering without ``inspect.stack()``, for the entry deploys.

deploys/node.py and deploys/cluster.py call it before adding operations. The patch, what it measured and
when it is installed (verified pyinfra versions only) live in :mod:`spectra.pyinfra_compat`, with every other
use of pyinfra internals.
"""

from __future__ import annotations

from spectra import pyinfra_compat


def enable() -> bool:
    """True when the fast operation order is installed (or already was)."""
    return pyinfra_compat.enable_fast_operation_order()
