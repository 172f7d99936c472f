"""checkov over everything the repository renders (every addon on, a control plane, workers, monitoring; the
cluster deploy's Kubernetes files and command lines; workflow files), against scan/checkov_baseline.yaml: a
finding not in the baseline fails, and so does a baseline entry nothing matches any more. The comparison and
the report parsing are tested on synthetic findings, so that the scan can fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from spectra_cli import render, scan

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return render.everything(scan.representative_inventory(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def findings(rendered: dict[str, str]) -> list[scan.Finding]:
    return scan.scan_files(rendered, scan.REPO / scan.WORKFLOWS)


def test_the_scan_covers_every_addon_the_cluster_files_and_the_command_lines(rendered: dict[str, str]) -> None:
    from deploys import addon

    sets = {path.removeprefix("addons/").removesuffix(".yaml") for path in rendered if path.startswith("addons/")}
    assert {one.name for one in addon.registered()} <= sets | {"tenancy"}  # tenancy without teams: empty
    assert "namespaces" in sets
    assert "hosts/cp1/etc/kubernetes/audit-policy.yaml" in rendered
    assert "hosts/node2/var/lib/kubelet/config.yaml" in rendered
    for service in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        view = yaml.safe_load(rendered[f"hosts/cp1/command-lines/{service}.yaml"])
        assert view["spec"]["containers"][0]["command"][0] == service
    assert render.IMAGE_SCAN_FILE in rendered


def test_no_finding_outside_the_baseline_and_no_stale_entry(findings: list[scan.Finding]) -> None:
    result = scan.compare(findings, scan.load_baseline())
    if result.in_progress:
        print(result.report())  # shown with -s or on failure: the lead's review list
    assert result.ok, "\n" + result.report()


def test_baseline_is_of_the_pinned_checkov_and_every_entry_has_a_reason() -> None:
    baseline = scan.load_baseline()
    pinned = (scan.REPO / "scan" / "requirements.txt").read_text()
    assert f"checkov=={baseline.checkov}\n" in pinned
    for entry in baseline.accepted:
        assert len(entry.reason) > 20, entry
    assert len({entry.check for entry in baseline.accepted}) == len(baseline.accepted), "one entry per check"


def test_command_line_views_keep_flag_findings_only(findings: list[scan.Finding]) -> None:
    on_views = {finding.check for finding in findings if "/command-lines/" in finding.file}
    assert "CKV_K8S_113" in on_views  # a flag check
    assert not on_views & {"CKV_K8S_8", "CKV_K8S_13", "CKV_K8S_22", "CKV_K8S_43"}  # Pod-form checks dropped


def test_a_privileged_pod_and_a_workflow_injection_are_new_findings(tmp_path: Path) -> None:
    """End to end, so the scan can fail: a bad addon manifest and a bad workflow file beside it."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "ci.yml").write_text(
        "on: [pull_request_target]\npermissions: write-all\njobs:\n  build:\n    runs-on: ubuntu-latest\n"
        '    steps:\n      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    container = {"name": "bad", "image": "x:1", "securityContext": {"privileged": True}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "monitoring"},
           "spec": {"containers": [container]}}  # fmt: skip
    found = scan.scan_files({"addons/bad.yaml": yaml.safe_dump(pod)}, workflows)
    new = scan.compare(found, scan.load_baseline()).new
    assert ("CKV_K8S_16", "Pod.monitoring.bad") in {f.key for f in new}  # privileged container
    assert "CKV_GHA_2" in {f.check for f in new if f.file == ".github/workflows/ci.yml"}  # shell injection


# --- the comparison and the report, on synthetic findings -------------------------------------------------


def finding(check: str, resource: str, file: str = "rendered/addons/coredns.yaml") -> scan.Finding:
    return scan.Finding(check, resource, file)


BASELINE = scan.Baseline(
    accepted=(scan.Accepted("CKV_1", ("Deployment.a.b", "Deployment.a.c"), "because"),),
    in_progress=(scan.InProgress("wip", addon_set="wip-set"), scan.InProgress("wip", check="CKV2_9")),
)


def test_a_finding_not_in_the_baseline_fails() -> None:
    result = scan.compare([finding("CKV_1", "Deployment.a.b"), finding("CKV_1", "Deployment.a.c"),
                           finding("CKV_2", "Deployment.a.b")], BASELINE)  # fmt: skip
    assert not result.ok
    assert [f.key for f in result.new] == [("CKV_2", "Deployment.a.b")]
    assert "new finding" in result.report() and "CKV_2 Deployment.a.b" in result.report()


def test_an_accepted_resource_found_no_more_is_stale() -> None:
    result = scan.compare([finding("CKV_1", "Deployment.a.b")], BASELINE)
    assert not result.ok and result.new == []
    assert result.stale == [("CKV_1", "Deployment.a.c")]
    assert "stale baseline entry" in result.report()


def test_in_progress_findings_are_reported_not_failed() -> None:
    found = [
        finding("CKV_1", "Deployment.a.b"),
        finding("CKV_1", "Deployment.a.c"),
        finding("CKV_7", "DaemonSet.x.y", "rendered/addons/wip-set.yaml"),
        finding("CKV2_9", "Pod.a.b"),
    ]
    result = scan.compare(found, BASELINE)
    assert result.ok
    assert [f.check for f in result.in_progress] == ["CKV2_9", "CKV_7"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("accepted:\n  - check: CKV_1\n    resources: [Pod.a.b]\n", "'reason' must be a non-empty string"),
        ("accepted:\n  - check: CKV_1\n    reason: why\n", "'resources' must be a non-empty list"),
        ("accepted:\n  - resources: [Pod.a.b]\n    reason: why\n", "'check' must be"),
        ("in_progress:\n  - reason: why\n", "one of 'addon_set' and 'check'"),
    ],
)
def test_a_baseline_entry_without_its_parts_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "baseline.yaml"
    path.write_text(text)
    with pytest.raises(scan.ScanError, match=message):
        scan.load_baseline(path)


def test_report_parsing_takes_one_report_or_a_list_and_relative_paths(tmp_path: Path) -> None:
    def report(check: str, path: Path) -> dict[str, Any]:
        failed = {"check_id": check, "resource": "Pod.a.b", "file_path": "/x", "file_abs_path": str(path),
                  "check_name": "title"}  # fmt: skip
        return {"check_type": "kubernetes", "results": {"failed_checks": [failed]}}

    one = scan.parse(json.dumps(report("CKV_1", tmp_path / "rendered/a.yaml")), tmp_path)
    assert [(f.check, f.file) for f in one] == [("CKV_1", "rendered/a.yaml")]
    both = [report("CKV_1", tmp_path / "a.yaml"), {"passed": 0, "failed": 0}, report("CKV_GHA_2", tmp_path / "b")]
    assert [f.check for f in scan.parse(json.dumps(both), tmp_path)] == ["CKV_1", "CKV_GHA_2"]
    with pytest.raises(scan.ScanError, match="no JSON"):
        scan.parse("Traceback ...", tmp_path)


def test_missing_checkov_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(scan.ScanError, match=r"\.ci/setup"):
        scan.run_checkov(tmp_path, checkov=tmp_path / "no-checkov")


def test_render_writes_private_files_and_refuses_a_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = render.write(out, {"addons/a.yaml": "kind: X\n"})
    assert [path.relative_to(out).as_posix() for path in written] == ["addons/a.yaml"]
    assert oct(out.stat().st_mode & 0o777) == "0o700" and oct(written[0].stat().st_mode & 0o777) == "0o600"
    render.write(out, {"addons/b.yaml": "kind: Y\n"})  # written by render before: cleared, then written
    assert sorted(p.name for p in (out / "addons").iterdir()) == ["b.yaml"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(render.RenderError, match="not written by `spectra render`"):
        render.write(foreign, {"addons/a.yaml": "kind: X\n"})
    assert (foreign / "keep.txt").read_text() == "mine"


def test_the_image_scan_lists_every_addon_image(rendered: dict[str, str]) -> None:
    docs = list(yaml.safe_load_all(rendered[render.IMAGE_SCAN_FILE]))
    (cronjob,) = [doc for doc in docs if doc["kind"] == "CronJob"]
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    manifests = {path: text for path, text in rendered.items() if path.startswith("addons/")}
    assert container["args"][2:] == render.images(manifests)
    assert "quay.io/prometheus/prometheus" in " ".join(container["args"])
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    namespace = next(doc for doc in docs if doc["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
