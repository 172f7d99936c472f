"""pyinfra inventory of the local lab: `pyinfra inventories/lab.py deploy.py` or `spectra deploy ...`.

Reads ``$SPECTRA_LAB_DIR/inventory.json`` (default ``/var/lib/spectra-lab``), written by
``python -m lab up``. Hosts get the usual role groups, ``az_lab_*`` zone groups, ``env_lab`` and ``lab``
(this file's name), so ``group_data/lab.py`` and ``group_data/env_lab.py`` apply to them.
A missing state file or an empty lab is an error: zero hosts never pass silently.
"""

from inventories import ssh_tuning
from inventories.grouping import build_groups, file_group
from inventories.sources.lab import lab_records

ssh_tuning.enable()  # loaded before pyinfra connects: TCP_NODELAY, ~2 ms per remote command instead of ~44 ms

globals().update(build_groups(lab_records(), inventory_group=file_group(__file__)))
