"""Grafana dashboard files, read without Grafana: load one, check its structure, list its panels' PromQL.

Pure (reads files, nothing else): the Grafana addon's check (``spectra validate``, the deploy) and the unit and
lab tests use it. What it checks in a dashboard file:

* it is JSON, an object with a ``title``, a ``uid`` (Grafana's limit: 40 characters of ``[A-Za-z0-9_-]``; a
  provisioned dashboard without one gets a new uid each time Grafana's emptyDir database starts afresh, and
  links to it break) and ``panels``;
* every panel that queries (not a row, text or list panel) has a title unique in the dashboard, a Prometheus
  datasource (the provisioned one, :data:`DATASOURCE_UID`, or a ``$variable``) and at least one target with an
  ``expr``; every ``$variable`` of a query is a dashboard variable or one of Grafana's built-ins
  (:data:`BUILTINS`).

Which panels have no data yet: a top-level key Grafana ignores (like its own ``__inputs`` and ``__requires``
keys of exported dashboards) lists them, each with why::

    "__spectra": {"no_data_expected": {"<panel title>": "<why: the component not deployed yet>"}}

The lab test runs every other panel's queries against the lab's Prometheus and wants a result; it wants the
listed ones to parse and to return nothing (a panel that gets data must leave the list).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

# Grafana's built-in variables, with the values the queries are checked with (a 15 s scrape interval: Grafana's
# $__rate_interval is at least four of them).
BUILTINS: dict[str, str] = {
    "__rate_interval": "1m",
    "__rate_interval_ms": "60000",
    "__interval": "30s",
    "__interval_ms": "30000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# panel types without queries
NO_QUERY_TYPES = frozenset({"row", "text", "dashlist", "news", "annolist", "welcome", "gettingstarted"})
SPECTRA_KEY = "__spectra"
DATASOURCE_UID = "prometheus"  # the uid of the datasource the Grafana addon provisions
_UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
# $name, ${name}, ${name:format}, [[name]], [[name:format]]; $1 (a regex capture in label_replace) is no variable
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]")


class DashboardError(ValueError):
    """A dashboard file that cannot be used; the message names the file."""


class PanelQuery(NamedTuple):
    dashboard: str  # the file's name
    panel: str  # the panel's title
    expr: str  # PromQL, variables substituted
    expects_data: bool


def load(path: Path) -> dict[str, Any]:
    """The dashboard in ``path``; a file that is not JSON, or not a JSON object, raises naming the file."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise DashboardError(f"{path}: cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise DashboardError(f"{path}: not JSON: {error}") from None
    if not isinstance(document, dict):
        raise DashboardError(f"{path}: not a dashboard (a JSON object)")
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries, rows opened (a collapsed row keeps its panels inside it)."""
    for panel in dashboard.get("panels") or []:
        if not isinstance(panel, dict):
            continue
        if panel.get("type") == "row":
            yield from panels(panel)
        elif panel.get("type") not in NO_QUERY_TYPES and "libraryPanel" not in panel:
            yield panel


def variable_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """What each dashboard variable stands for when nothing is chosen: its "All" value where it has one (the
    widest query), else its current value."""
    found: dict[str, str] = {}
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if not isinstance(variable, dict) or not variable.get("name"):
            continue
        current = (variable.get("current") or {}).get("value")
        if variable.get("includeAll") and variable.get("allValue"):
            value = str(variable["allValue"])
        elif isinstance(current, list) and current and current != ["$__all"]:
            value = "(" + "|".join(str(one) for one in current) + ")"
        elif isinstance(current, str) and current and current != "$__all":
            value = current
        else:
            value = ".+"  # a multi-value "All" without allValue: Grafana joins every value into a regex
        found[str(variable["name"])] = value
    return found


def variable_queries(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """The PromQL (``label_values(...)`` etc.) of each query variable, by name."""
    found: dict[str, str] = {}
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if isinstance(variable, dict) and variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            found[str(variable.get("name"))] = str(text or variable.get("definition") or "")
    return found


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$", re.S)


def label_values(query: str) -> tuple[str, str | None] | None:
    """``label_values(selector, label)`` (or ``label_values(label)``) as (label, selector or None); None for
    another kind of variable query."""
    match = _LABEL_VALUES.match(query)
    return (match.group("label"), match.group("selector")) if match else None


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with every variable replaced; an unknown one raises ``KeyError`` naming it."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name.isdigit():
            return match.group(0)
        if name in values:
            return values[name]
        if name in BUILTINS:
            return BUILTINS[name]
        raise KeyError(name)

    return _VARIABLE.sub(one, expr)


def no_data_expected(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Panel title -> why it has no data yet (the dashboard's ``__spectra.no_data_expected``)."""
    spectra = dashboard.get(SPECTRA_KEY) or {}
    listed = spectra.get("no_data_expected") if isinstance(spectra, dict) else None
    return {str(title): str(why) for title, why in listed.items()} if isinstance(listed, dict) else {}


def problems(dashboard: Mapping[str, Any], name: str) -> list[str]:
    """What is wrong with the dashboard ``name`` (its file): see the module's docstring."""
    found: list[str] = []
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not _UID.match(uid):
        found.append(f"{name}: uid {uid!r}: 1 to 40 characters of A-Z a-z 0-9 _ - (a stable uid keeps links working)")
    if not isinstance(dashboard.get("title"), str) or not dashboard["title"].strip():
        found.append(f"{name}: no title")
    if not isinstance(dashboard.get("panels"), list):
        found.append(f"{name}: no panels list")
        return found
    spectra = dashboard.get(SPECTRA_KEY, {})
    if not isinstance(spectra, dict) or set(spectra) - {"no_data_expected"}:
        found.append(f"{name}: {SPECTRA_KEY} holds only no_data_expected (panel title -> why)")
    listed = spectra.get("no_data_expected", {}) if isinstance(spectra, dict) else {}
    if not isinstance(listed, dict) or not all(isinstance(why, str) and why.strip() for why in listed.values()):
        found.append(f"{name}: {SPECTRA_KEY}.no_data_expected: panel title -> why it has no data yet (not empty)")
        listed = {}
    values = variable_values(dashboard)
    titles: list[str] = []
    for panel in panels(dashboard):
        title = panel.get("title")
        where = f"{name}: panel {title!r}"
        if not isinstance(title, str) or not title.strip():
            found.append(f"{name}: panel id {panel.get('id')!r} has no title")
            continue
        if title in titles:
            found.append(f"{where}: the title is used twice (no_data_expected and reports name panels by title)")
        titles.append(title)
        targets = [target for target in panel.get("targets") or [] if isinstance(target, dict)]
        for datasource in [panel.get("datasource"), *(t["datasource"] for t in targets if "datasource" in t)]:
            if not _prometheus(datasource):
                found.append(f"{where}: datasource {datasource!r}: {{\"type\": \"prometheus\", \"uid\": "
                             f"\"{DATASOURCE_UID}\"}} (or a $variable uid)")  # fmt: skip
        exprs = [target.get("expr") for target in targets]
        if not exprs or not all(isinstance(expr, str) and expr.strip() for expr in exprs):
            found.append(f"{where}: needs at least one target, each with a PromQL expr")
            continue
        for expr in exprs:
            try:
                substitute(str(expr), values)
            except KeyError as error:
                found.append(f"{where}: ${error.args[0]} is neither a dashboard variable nor a Grafana built-in")
    for title in sorted(set(listed) - set(titles)):
        found.append(f"{name}: {SPECTRA_KEY}.no_data_expected names {title!r}, no panel of the dashboard")
    return found


def _prometheus(datasource: Any) -> bool:
    if not isinstance(datasource, dict) or datasource.get("type") != "prometheus":
        return False
    uid = str(datasource.get("uid", DATASOURCE_UID))
    return uid == DATASOURCE_UID or uid.startswith("$")


def check_file(path: Path) -> list[str]:
    """The problems of the dashboard file ``path``, each naming it (an unreadable or non-JSON file is one)."""
    try:
        return problems(load(path), str(path))
    except DashboardError as error:
        return [str(error)]


def queries(dashboard: Mapping[str, Any], name: str, values: Mapping[str, str] | None = None) -> list[PanelQuery]:
    """Every query of every panel, variables substituted (``values`` over the dashboard's defaults); an unknown
    variable raises ``DashboardError`` naming the dashboard and panel."""
    chosen = {**variable_values(dashboard), **(values or {})}
    quiet = no_data_expected(dashboard)
    found = []
    for panel in panels(dashboard):
        title = str(panel.get("title"))
        for target in panel.get("targets") or []:
            if not isinstance(target, dict) or not target.get("expr") or target.get("hide"):
                continue
            try:
                expr = substitute(str(target["expr"]), chosen)
            except KeyError as error:
                raise DashboardError(f"{name}: panel {title!r}: unknown variable ${error.args[0]}") from None
            found.append(PanelQuery(name, title, expr, title not in quiet))
    return found


def file_queries(path: Path, values: Mapping[str, str] | None = None) -> list[PanelQuery]:
    return queries(load(path), path.name, values)
