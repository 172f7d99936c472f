"""The dashboards in the repository (templates/addons/grafana/dashboards/) and spectra.dashboards, without
Grafana or Prometheus: files that parse, panels that query the provisioned Prometheus, variables all
substituted, every metric one that the job it names exports, and a short, explained no-data list. The lab test
(tests/lab/test_dashboards.py) runs the same queries against the lab's Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from deploys.components import grafana
from spectra import dashboards

pytestmark = pytest.mark.unit

FILES = sorted(grafana.DASHBOARDS_DIR.glob("*.json"))
# the scrape jobs of the Prometheus addon (test_addon_prometheus.py checks that list)
JOBS = {"prometheus", "node-exporter", "kubelet", "cadvisor", "apiserver", "etcd", "kube-controller-manager",
        "kube-scheduler", "coredns", "alertmanager"}  # fmt: skip
# which jobs export a metric, by name prefix; "*": every job (Prometheus' own series per target, process_*)
EXPORTERS = {
    "node_": {"node-exporter"},
    "kubelet_": {"kubelet"},
    "container_": {"cadvisor"},
    "apiserver_": {"apiserver"},
    "etcd_request_duration_seconds": {"apiserver"},  # the apiserver's etcd client
    "etcd_": {"etcd"},
    "grpc_server_": {"etcd"},
    "scheduler_": {"kube-scheduler"},
    "workqueue_": {"apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"},
    "rest_client_": {"kube-controller-manager", "kube-scheduler", "kubelet"},
    "leader_election_": {"kube-controller-manager", "kube-scheduler"},
    "prometheus_": {"prometheus"},
    "coredns_": {"coredns"},
    "process_": {"*"},
    "up": {"*"},
    "scrape_": {"*"},
}
# metrics only no-data panels may query, and the jobs that will scrape them
NOT_DEPLOYED = {"fluentd_": "Fluentd exposes no metrics yet", "vl_": "VictoriaLogs is not scraped yet"}
NOT_SCRAPED = {"fluentd", "victorialogs"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
            "inf", "nan"}  # fmt: skip


def selectors(expr: str) -> list[tuple[str, set[str] | None]]:
    """Each metric the query reads and the jobs its ``job`` matcher allows (None: no job matcher)."""
    found: list[tuple[str, set[str] | None]] = []
    for metric, matchers in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        job = re.search(r'\bjob\s*(=~?)\s*"([^"]*)"', matchers)
        found.append((metric, None if job is None else set(job.group(2).split("|"))))
    bare = re.sub(r"\[[^\]]*\]", " ", re.sub(r"\{[^}]*\}", "{}", re.sub(r'"[^"]*"', '""', expr)))
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    for name in re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*[({])", bare):
        if name.lower() not in KEYWORDS:
            found.append((name, None))
    return found


def exporter(metric: str) -> tuple[str, set[str]] | None:
    prefixes = [prefix for prefix in EXPORTERS if metric == prefix or metric.startswith(prefix)]
    if not prefixes:
        return None
    prefix = max(prefixes, key=len)
    return prefix, EXPORTERS[prefix]


@pytest.fixture(params=FILES, ids=[path.name for path in FILES])
def path(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


def test_the_five_dashboards_are_there() -> None:
    assert [p.stem for p in FILES] == ["cluster-capacity", "control-plane", "etcd", "logs-pipeline", "node-overview"]


def test_dashboard_has_no_problem(path: Path) -> None:
    assert dashboards.check_file(path) == []


def test_every_panel_queries_the_provisioned_prometheus(path: Path) -> None:
    board = dashboards.load(path)
    found = list(dashboards.panels(board))
    assert found
    for panel in found:
        assert panel["datasource"] == {"type": "prometheus", "uid": dashboards.DATASOURCE_UID}, panel["title"]
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_substituted_queries_leave_no_variable(path: Path) -> None:
    queries = dashboards.file_queries(path)
    assert queries
    for query in queries:
        assert not re.search(r"\$\w|\$\{|\[\[", query.expr), query
    assert {q.dashboard for q in queries} == {path.name}


def test_every_metric_is_exported_by_the_job_the_query_names(path: Path) -> None:
    for query in dashboards.file_queries(path):
        for metric, jobs in selectors(query.expr):
            assert jobs is None or jobs <= JOBS | NOT_SCRAPED, (query.panel, metric, jobs)
            if jobs and jobs & NOT_SCRAPED:
                assert not query.expects_data, f"{query.panel}: {metric}: no job {jobs} is scraped yet"
            pending = next((why for prefix, why in NOT_DEPLOYED.items() if metric.startswith(prefix)), None)
            if pending:
                assert not query.expects_data, f"{query.panel}: {metric}: {pending}: list it in no_data_expected"
                continue
            found = exporter(metric)
            assert found, f"{query.panel}: {metric}: no scrape job exports it"
            prefix, exporters = found
            if "*" not in exporters:
                assert jobs, f"{query.panel}: {metric}: name its job ({sorted(exporters)}) in the selector"
                assert jobs <= exporters, f"{query.panel}: {metric} comes from {sorted(exporters)}, not {jobs}"


def test_node_overview_selects_nodes_from_the_node_exporters() -> None:
    board = dashboards.load(grafana.DASHBOARDS_DIR / "node-overview.json")
    assert dashboards.variable_queries(board) == {"node": 'label_values(up{job="node-exporter"}, node)'}
    assert all('node=~"$node"' in target["expr"] for panel in dashboards.panels(board) for target in panel["targets"])


def test_the_no_data_list_is_short_and_says_why() -> None:
    listed = {path.name: dashboards.no_data_expected(dashboards.load(path)) for path in FILES}
    assert {name: sorted(panels) for name, panels in listed.items() if panels} == {
        "logs-pipeline.json": [
            "Fluentd output buffer queue", "Fluentd output retries and errors", "Logs store ingestion (VictoriaLogs)",
        ]
    }  # fmt: skip
    board = dashboards.load(grafana.DASHBOARDS_DIR / "logs-pipeline.json")
    for panel in dashboards.panels(board):
        why = listed["logs-pipeline.json"].get(panel["title"])
        if why:  # the reason is on the panel too, where Grafana's users see it
            assert why in panel["description"]
    assert sum(q.expects_data for q in dashboards.file_queries(grafana.DASHBOARDS_DIR / "logs-pipeline.json")) >= 10


# --- spectra.dashboards on made-up dashboards ----------------------------------------------------------------

DS = {"type": "prometheus", "uid": "prometheus"}


def board(**extra: Any) -> dict[str, Any]:
    panel = {"id": 1, "type": "timeseries", "title": "CPU", "datasource": DS,
             "targets": [{"refId": "A", "expr": 'rate(x{node=~"$node"}[$__rate_interval])'}]}  # fmt: skip
    variable = {"name": "node", "type": "query", "includeAll": True, "allValue": ".+",
                "query": {"query": "label_values(up, node)"}}  # fmt: skip
    return {"uid": "u", "title": "T", "panels": [panel], "templating": {"list": [variable]}, **extra}


def write(tmp_path: Path, document: Any, name: str = "d.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '{"uid": "u", "panels": [}', "broken.json")
    (problem,) = dashboards.check_file(path)
    assert problem.startswith(f"{path}: not JSON")
    with pytest.raises(dashboards.DashboardError, match=re.escape(str(path))):
        dashboards.load(path)
    assert dashboards.check_file(write(tmp_path, "[1, 2]")) == [
        f"{tmp_path / 'd.json'}: not a dashboard (a JSON object)"
    ]


def test_variables_and_builtins_are_substituted() -> None:
    values = {"node": "(a|b)"}
    assert dashboards.substitute('x{node=~"$node"}[$__rate_interval]', values) == 'x{node=~"(a|b)"}[1m]'
    assert dashboards.substitute('x{n=~"${node}", m=~"${node:regex}", o=~"[[node]]"}', values) == (
        'x{n=~"(a|b)", m=~"(a|b)", o=~"(a|b)"}'
    )
    # longer built-in names are not cut short; $1 (a label_replace capture) is no variable
    assert dashboards.substitute("$__range_s $__range $__interval_ms", {}) == "3600 1h 30000"
    kept = 'label_replace(x, "a", "$1", "b", "(.*)")'
    assert dashboards.substitute(kept, {}) == kept
    with pytest.raises(KeyError, match="nodes"):
        dashboards.substitute("x{node=~'$nodes'}", values)


def test_queries_use_the_all_value_or_what_is_chosen() -> None:
    (query,) = dashboards.queries(board(), "d.json")
    assert query == dashboards.PanelQuery("d.json", "CPU", 'rate(x{node=~".+"}[1m])', True)
    (chosen,) = dashboards.queries(board(), "d.json", {"node": "node2"})
    assert chosen.expr == 'rate(x{node=~"node2"}[1m])'
    single = board()
    single["templating"]["list"][0] = {"name": "node", "current": {"value": ["n1", "n2"]}}
    assert dashboards.queries(single, "d.json")[0].expr == 'rate(x{node=~"(n1|n2)"}[1m])'


def test_rows_are_opened_and_panels_without_queries_skipped() -> None:
    inner = {"id": 3, "type": "stat", "title": "Inside", "datasource": DS, "targets": [{"expr": "up"}]}
    document = board()
    document["panels"] += [
        {"id": 2, "type": "row", "title": "Collapsed", "collapsed": True, "panels": [inner]},
        {"id": 4, "type": "text", "title": "Notes"},
    ]
    assert [panel["title"] for panel in dashboards.panels(document)] == ["CPU", "Inside"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("uid"), "uid None: 1 to 40 characters"),
        (lambda d: d.update(uid="a" * 41), "uid 'aaaa"),
        (lambda d: d["panels"][0].update(datasource={"type": "loki", "uid": "x"}), "panel 'CPU': datasource"),
        (lambda d: d["panels"][0].update(datasource={"type": "prometheus", "uid": "other"}), "datasource"),
        (lambda d: d["panels"][0].update(targets=[]), "needs at least one target"),
        (lambda d: d["panels"][0]["targets"][0].update(expr="x{a=~'$zone'}"), "$zone is neither"),
        (lambda d: d["panels"].append(dict(d["panels"][0], id=2)), "the title is used twice"),
        (lambda d: d.update(__spectra={"no_data_expected": {"Gone": "why"}}), "names 'Gone', no panel"),
        (lambda d: d.update(__spectra={"no_data_expected": {"CPU": ""}}), "why it has no data yet"),
        (lambda d: d.update(__spectra={"other": 1}), "holds only no_data_expected"),
    ],
)
def test_problems_are_named(change: Any, message: str) -> None:
    document = board()
    change(document)
    problems = dashboards.problems(document, "d.json")
    assert any(message in problem for problem in problems), problems
    assert all(problem.startswith("d.json") for problem in problems)


def test_a_listed_panel_does_not_expect_data() -> None:
    document = board(__spectra={"no_data_expected": {"CPU": "the exporter is not deployed yet"}})
    assert dashboards.problems(document, "d.json") == []
    assert [q.expects_data for q in dashboards.queries(document, "d.json")] == [False]


def test_label_values_queries() -> None:
    assert dashboards.label_values('label_values(up{job="etcd"}, instance)') == ("instance", 'up{job="etcd"}')
    assert dashboards.label_values("label_values(node)") == ("node", None)
    assert dashboards.label_values("query_result(up)") is None


def test_the_metric_check_reads_selectors_and_bare_names() -> None:
    expr = 'sum by (node) (rate(node_cpu_seconds_total{job="node-exporter", mode="idle"}[1m])) / on (node) up'
    assert selectors(expr) == [("node_cpu_seconds_total", {"node-exporter"}), ("up", None)]
    assert exporter("etcd_request_duration_seconds_bucket") == ("etcd_request_duration_seconds", {"apiserver"})
    assert exporter("nginx_requests_total") is None  # a metric no scrape job exports
