"""Fixtures of the host-state suite: each host's context and expectations (compliance.node.expected), and a
probe reading the host with the same parsers as the compliance checks."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.context import HostContext
from compliance.node.expected import EXPORTER_UNIT, Expectations, expectations, host_context
from compliance.plugin import context_for, host_name
from compliance.probe import Probe, SshReader


@pytest.fixture
def context(host: Any) -> HostContext:
    name = host_name(host)
    return host_context(
        name, context_for(name), lambda: host.run(f"systemctl show -p ExecStart {EXPORTER_UNIT}").stdout
    )


@pytest.fixture
def expected(context: HostContext) -> Expectations:
    return expectations(context)


@pytest.fixture
def probe(host: Any, context: HostContext) -> Probe:
    return Probe(SshReader(host, context.name), context)
