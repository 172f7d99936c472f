"""Every check of the registry (compliance/checks/) on every host testinfra is given.

    spectra comply INVENTORY            (hosts, groups and data from a pyinfra inventory; reports)
    pytest -p compliance.plugin compliance/suite --hosts=ssh://node1 --ssh-config=...   (by hand)

A failing check fails its test; a check that does not apply to a host is skipped with the reason
("not applicable: ..."). The structured outcome goes to the report through ``user_properties``.
"""

from __future__ import annotations

from typing import Any

import pytest

from compliance.checks import CHECKS
from compliance.model import Check
from compliance.plugin import PROPERTY, outcome_property, probe_for


@pytest.mark.parametrize("check", CHECKS, ids=[item.id for item in CHECKS])
def test_check(host: Any, check: Check, request: pytest.FixtureRequest) -> None:
    probe = probe_for(host)
    outcome = check.run(probe)
    request.node.user_properties.append((PROPERTY, outcome_property(probe.context.name, check.id, outcome)))
    if outcome.status == "fail":
        pytest.fail(f"{check.id}: {outcome.reason}", pytrace=False)
    if outcome.status == "not_applicable":
        pytest.skip(f"not applicable: {outcome.reason}")
