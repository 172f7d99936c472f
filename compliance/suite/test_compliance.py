"""Every check of compliance/checks.py on every host testinfra is given.

    spectra comply INVENTORY            (hosts, groups and data from a pyinfra inventory; reports)
    pytest -p compliance.plugin compliance/suite --hosts=ssh://node1 --ssh-config=...   (by hand)

A failing check fails its test; a check that does not apply to a host is skipped with the reason
("not applicable: ..."). The structured outcome goes to the report through ``user_properties``.
"""

from __future__ import annotations

from typing import Any

import pytest

from compliance.checks import check_ids
from compliance.plugin import PROPERTY, outcome_property, probe_for
from compliance.probes import run_check


@pytest.mark.parametrize("check_id", check_ids())
def test_check(host: Any, check_id: str, request: pytest.FixtureRequest) -> None:
    probe = probe_for(host)
    outcome = run_check(check_id, probe)
    request.node.user_properties.append((PROPERTY, outcome_property(probe.context.name, check_id, outcome)))
    if outcome.status == "fail":
        pytest.fail(f"{check_id}: {outcome.reason}", pytrace=False)
    if outcome.status == "not_applicable":
        pytest.skip(f"not applicable: {outcome.reason}")
