"""The Grafana dashboards against the lab's real Prometheus, and the Grafana addon's manifest against its real
apiserver. Grafana itself does not run here: its image cannot be had (its Go module is AGPL-licensed and not
served to the lab, which builds its images from Go modules), so ``group_data/lab.py`` turns the addon off.

* Every panel query of every dashboard (``templates/addons/grafana/dashboards/``), its template variables
  substituted the way Grafana would with "All" selected (``spectra.dashboards``), goes to Prometheus' query
  API through the apiserver's service proxy: it must parse, and a panel that should have data must return a
  result. The panels a dashboard lists under ``__spectra.no_data_expected`` (components not deployed yet)
  must parse and return nothing: one that gets data must leave that list. A dashboard querying a metric no
  one exports fails here.
* Every query variable (``label_values(...)``) must have values.
* The Grafana addon set, rendered with Grafana on, passes ``kubectl apply --server-side --dry-run=server``
  on the lab's apiserver (schema, Pod Security admission of the ``restricted`` monitoring namespace) without
  a warning, and nothing of it is created.

Runs on the converged lab (the same no-op converge as test_monitoring.py, so it also works on its own).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from deploys import addon
from deploys.components import grafana
from spectra import dashboards
from tests.lab.cluster_support import KUBECTL, control_plane
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

PROXY = "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy"
DASHBOARD_FILES = sorted(grafana.DASHBOARDS_DIR.glob("*.json"))
# how long data may take to show after a converge (a rate() over $__rate_interval needs two scrapes in it)
SETTLE_SECONDS = 240


class Answer(NamedTuple):
    kind: str  # "data", "empty", "invalid" (Prometheus refused the query) or "unavailable" (try again)
    detail: str


def get_raw(lab: Lab, path: str, **query: str) -> Answer:
    """One GET through the apiserver's proxy; Prometheus' own error message when it refuses the request
    (kubectl hides the body of a 400 unless verbose)."""
    url = f"{PROXY}{path}?{urllib.parse.urlencode(query)}"  # quoted: no ' left for the shell
    node = control_plane(lab)
    done = subprocess.run(lab.ssh_args(node, f"{KUBECTL} get --raw '{url}'"), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    if done.returncode == 0:
        body = json.loads(done.stdout)
        if body.get("status") != "success":
            return Answer("invalid", json.dumps(body))
        data = body["data"]
        found = data.get("result") if isinstance(data, dict) else data
        return Answer("data" if found else "empty", json.dumps(found)[:300])
    if "BadRequest" not in done.stderr:
        return Answer("unavailable", done.stderr.strip()[-500:])
    verbose = subprocess.run(lab.ssh_args(node, f"{KUBECTL} get -v=8 --raw '{url}' 2>&1"), capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    bodies = re.findall(r'"Response Body" body="(.*)"$', verbose.stdout, re.M)
    return Answer("invalid", bodies[0].encode().decode("unicode_escape") if bodies else done.stderr.strip())


def all_queries() -> list[dashboards.PanelQuery]:
    return [query for path in DASHBOARD_FILES for query in dashboards.file_queries(path)]


def test_every_dashboard_is_checked() -> None:
    assert {path.stem for path in DASHBOARD_FILES} >= {
        "node-overview", "cluster-capacity", "control-plane", "etcd", "logs-pipeline",
    }  # fmt: skip


def test_every_variable_has_values(converged: dict[str, Any], lab: Lab) -> None:
    missing = []
    for path in DASHBOARD_FILES:
        for name, query in dashboards.variable_queries(dashboards.load(path)).items():
            parsed = dashboards.label_values(query)
            assert parsed, f"{path.name}: variable {name}: only label_values(...) queries are checked: {query}"
            label, selector = parsed
            answer = get_raw(lab, f"/api/v1/label/{label}/values", **({"match[]": selector} if selector else {}))
            if answer.kind != "data":
                missing.append((path.name, name, query, answer))
    assert missing == [], missing


def test_every_panel_query_parses_and_has_the_data_it_should(converged: dict[str, Any], lab: Lab) -> None:
    queries = all_queries()
    pending = list(queries)
    invalid: list[tuple[dashboards.PanelQuery, str]] = []
    last: dict[dashboards.PanelQuery, Answer] = {}
    deadline = time.monotonic() + SETTLE_SECONDS
    with ThreadPoolExecutor(max_workers=8) as pool:
        while pending:
            answers = list(pool.map(lambda q: get_raw(lab, "/api/v1/query", query=q.expr), pending))
            waiting = []
            for query, answer in zip(pending, answers, strict=True):
                last[query] = answer
                if answer.kind == "invalid":
                    invalid.append((query, answer.detail))  # a parse error does not go away: no retry
                elif answer.kind == "unavailable" or (answer.kind == "data") != query.expects_data:
                    waiting.append(query)
            pending = waiting
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(5)
    assert invalid == [], "\n".join(f"{q.dashboard} / {q.panel}: {q.expr}\n  {why}" for q, why in invalid)
    wrong = [
        f"{q.dashboard} / {q.panel}: {'no data' if q.expects_data else 'data, yet listed in no_data_expected'}"
        f" ({last[q].kind}: {last[q].detail[:200]})\n  {q.expr}"
        for q in pending
    ]
    assert wrong == [], "\n".join(wrong)
    panels = {(q.dashboard, q.panel) for q in queries}
    quiet = {(q.dashboard, q.panel) for q in queries if not q.expects_data}
    print(f"{len(DASHBOARD_FILES)} dashboards, {len(panels)} panels, {len(queries)} queries: "
          f"{len(panels - quiet)} panels with data, {len(quiet)} listed as not deployed yet")  # fmt: skip


def test_grafana_not_runnable_here_manifests_accepted_by_apiserver(
    converged: dict[str, Any], lab: Lab, tmp_path: Path
) -> None:
    # the set as production renders it (Grafana on; the password is only for this dry run)
    manifest = addon.render_addon(grafana.ADDON, {"grafana_enabled": True, "grafana_admin_password": "dry-run-only"})
    objects = addon.objects(manifest)
    assert {ref.kind for ref in objects} >= {"Secret", "ConfigMap", "ServiceAccount", "Deployment", "Service"}
    node = control_plane(lab)
    apply = f"{KUBECTL} apply --server-side --field-manager=spectra --force-conflicts --dry-run=server -f -"
    done = subprocess.run(lab.ssh_args(node, apply), input=manifest, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # every object accepted, and Pod Security admission (restricted) had nothing to say
    assert done.stdout.count("serverside-applied (server dry run)") == len(objects), done.stdout
    assert "Warning" not in done.stderr and "PodSecurity" not in done.stderr, done.stderr
    # a dry run: nothing of it exists
    left = lab.ssh(node, f"{KUBECTL} -n monitoring get deployment/grafana service/grafana --ignore-not-found -o name")
    assert left.strip() == "", left
