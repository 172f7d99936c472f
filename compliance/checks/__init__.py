"""The registry of compliance checks, the one list the test suite, the waivers and the reports share.

Each module of this package is one section of the report and holds its checks as records
(:class:`compliance.model.Check`): metadata, scope and code together. The registry lists them in report
order, module by module; ids are unique and stable (waivers and reports name checks by id).
"""

from __future__ import annotations

from compliance.checks import cis_control_plane, cis_worker, os_baseline, services, ssh
from compliance.model import Check, Outcome
from compliance.probe import Probe

MODULES = (os_baseline, ssh, services, cis_worker, cis_control_plane)

SECTIONS: dict[str, str] = {module.SECTION: module.SECTION_TITLE for module in MODULES}

CHECKS: tuple[Check, ...] = tuple(item for module in MODULES for item in module.CHECKS)

BY_ID: dict[str, Check] = {}
for _item in CHECKS:
    if _item.id in BY_ID:
        raise RuntimeError(f"check id {_item.id} is declared twice")
    BY_ID[_item.id] = _item


def check_ids() -> list[str]:
    return [item.id for item in CHECKS]


def get(check_id: str) -> Check:
    try:
        return BY_ID[check_id]
    except KeyError:
        raise KeyError(f"unknown check id {check_id!r}") from None


def run_check(check_id: str, probe: Probe) -> Outcome:
    """The outcome of one check on the probe's host."""
    return get(check_id).run(probe)
