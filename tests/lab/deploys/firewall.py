"""Lab test deploy: the firewall alone, exactly as the node deploy runs it (its checks, lockout preflight,
facts, guarded load).

    spectra deploy inventories/lab.py tests/lab/deploys/firewall.py --limit node3
    (see tests/lab/test_firewall_lockout.py)
"""

from __future__ import annotations

from deploys.component import run
from deploys.components import firewall

run([firewall.COMPONENT])
