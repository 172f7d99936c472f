"""pytest plugin for the compliance suite (``-p compliance.plugin``).

* ``probe_for(host)``: one cached :class:`~compliance.probe.Probe` per testinfra host and process, with
  the host's inventory context read from ``$SPECTRA_COMPLY_CONTEXT`` (written by ``spectra comply``).
* Collects every check outcome (from the reports' ``user_properties``, so it works across xdist
  workers) and, on the controller, writes them as JSON to ``$SPECTRA_COMPLY_RESULTS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from compliance.context import HostContext
from compliance.model import Outcome
from compliance.probe import Probe, SshReader

CONTEXT_ENV = "SPECTRA_COMPLY_CONTEXT"
RESULTS_ENV = "SPECTRA_COMPLY_RESULTS"
PROPERTY = "spectra_check"

_probes: dict[str, Probe] = {}
_contexts: dict[str, HostContext] | None = None


def load_contexts(path: str | None) -> dict[str, HostContext]:
    if not path:
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        name: HostContext(name, list(item.get("roles", [])), list(item.get("groups", [])), dict(item.get("data", {})))
        for name, item in data["hosts"].items()
    }


def host_name(host: Any) -> str:
    return str(host.backend.get_hostname())


def context_for(name: str) -> HostContext | None:
    """The inventory's context of host ``name`` from ``$SPECTRA_COMPLY_CONTEXT``; None without one."""
    global _contexts
    if _contexts is None:
        _contexts = load_contexts(os.environ.get(CONTEXT_ENV))
    return _contexts.get(name)


def probe_for(host: Any) -> Probe:
    name = host_name(host)
    if name not in _probes:
        _probes[name] = Probe(SshReader(host, name), context_for(name) or HostContext(name))
    return _probes[name]


def outcome_property(host: str, check_id: str, outcome: Outcome) -> str:
    return json.dumps({"host": host, "check": check_id, "status": outcome.status, "reason": outcome.reason})


class ResultCollector:
    def __init__(self) -> None:
        self.results: dict[tuple[str, str], dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROPERTY:
                item = json.loads(str(value))
                self.results[(item["host"], item["check"])] = item


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        config.pluginmanager.register(ResultCollector(), "spectra_compliance_results")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RESULTS_ENV)
    collector = session.config.pluginmanager.get_plugin("spectra_compliance_results")
    if path and isinstance(collector, ResultCollector):
        Path(path).write_text(json.dumps(list(collector.results.values())), encoding="utf-8")
