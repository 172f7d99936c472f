"""Misconfiguration scan of what the repository renders: checkov over ``spectra render``'s files and the
workflow files, compared with a reviewed baseline (``scan/checkov_baseline.yaml``).

checkov lives in its own virtualenv (``.venv-scan``, made by ``.ci/setup`` from ``scan/requirements.txt``):
its pins (boto3, packaging, ...) would downgrade the project's. It runs offline (``--skip-download``).

A finding is ``(check id, resource)``, checkov's resource being ``Kind.namespace.name`` (or a workflow's
``jobs(name).steps[n]``): the same for any inventory, so one baseline serves them all. The baseline has

* ``accepted``: ``{check, resources: [...], reason}``: reviewed, each with why it stays;
* ``in_progress``: ``{addon_set | check, reason}``: findings of work under way elsewhere, printed but never
  failed on, until its author and the lead review them.

:func:`compare` returns the findings that are neither (new: the scan fails) and the accepted resources no
finding matches any more (stale: the scan fails too, so the baseline does not keep excuses for fixed things).

Command-line views (``hosts/<host>/command-lines/*.yaml``, see ``spectra_cli.render``) are Pods only in
form: checkov's checks of Pod specs (probes, resources, securityContext) say nothing about a systemd unit.
The same view with an empty command line is scanned beside them; every check that fails on it is about the
Pod form, not the flags, and its findings on the views are dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CHECKOV = REPO / ".venv-scan" / "bin" / "checkov"
BASELINE = REPO / "scan" / "checkov_baseline.yaml"
WORKFLOWS = Path(".github") / "workflows"
FRAMEWORKS = ("kubernetes", "github_actions")
RENDERED = "rendered"  # the render's files, under the scan directory
CONTROL = "control/command-lines/empty.yaml"  # the empty command-line view
VIEWS = "/command-lines/"
TIMEOUT = 300  # seconds: checkov takes a few here; a hang must not hold the test run


class ScanError(RuntimeError):
    """checkov missing or failing, or a baseline that cannot be read."""


@dataclass(frozen=True, order=True)
class Finding:
    check: str
    resource: str
    file: str = field(compare=False)  # relative to the scan directory ("rendered/addons/coredns.yaml")
    title: str = field(compare=False, default="")

    @property
    def key(self) -> tuple[str, str]:
        return (self.check, self.resource)

    @property
    def addon_set(self) -> str | None:
        prefix = f"{RENDERED}/addons/"
        return self.file.removeprefix(prefix).removesuffix(".yaml") if self.file.startswith(prefix) else None

    def __str__(self) -> str:
        return f"{self.check} {self.resource} ({self.file}): {self.title}"


@dataclass(frozen=True)
class Accepted:
    check: str
    resources: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class InProgress:
    reason: str
    addon_set: str | None = None
    check: str | None = None

    def covers(self, finding: Finding) -> bool:
        return (self.addon_set is not None and finding.addon_set == self.addon_set) or (
            self.check is not None and finding.check == self.check
        )


@dataclass(frozen=True)
class Baseline:
    accepted: tuple[Accepted, ...]
    in_progress: tuple[InProgress, ...] = ()
    checkov: str | None = None  # the version the findings were reviewed with


@dataclass
class Comparison:
    new: list[Finding]
    stale: list[tuple[str, str]]  # (check, resource) accepted but found no more
    in_progress: list[Finding]
    accepted: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.new and not self.stale

    def report(self) -> str:
        lines = [f"new finding (fix it, or accept it in {BASELINE.name} with a reason): {f}" for f in self.new]
        lines += [f"stale baseline entry (no longer found: remove it): {check} {res}" for check, res in self.stale]
        lines += [f"in progress (not failed on): {f}" for f in self.in_progress]
        return "\n".join(lines)


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ScanError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def load_baseline(path: Path = BASELINE) -> Baseline:
    """The baseline file; an entry without a check, a resource or a reason is refused."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ScanError(f"{path}: {error}") from None
    accepted = []
    for index, entry in enumerate(data.get("accepted") or []):
        where = f"{path.name}: accepted[{index}]"
        resources = entry.get("resources")
        if not isinstance(resources, list) or not resources or not all(isinstance(r, str) and r for r in resources):
            raise ScanError(f"{where}: 'resources' must be a non-empty list of checkov resource ids")
        accepted.append(Accepted(_text(entry, "check", where), tuple(resources), _text(entry, "reason", where)))
    pending = []
    for index, entry in enumerate(data.get("in_progress") or []):
        where = f"{path.name}: in_progress[{index}]"
        if bool(entry.get("addon_set")) == bool(entry.get("check")):
            raise ScanError(f"{where}: give one of 'addon_set' and 'check'")
        pending.append(InProgress(_text(entry, "reason", where), entry.get("addon_set"), entry.get("check")))
    version = data.get("checkov")
    return Baseline(tuple(accepted), tuple(pending), str(version) if version else None)


def compare(findings: Iterable[Finding], baseline: Baseline) -> Comparison:
    """Sort findings into new, accepted and in progress; list accepted resources found no more."""
    accepted_keys = {(entry.check, resource) for entry in baseline.accepted for resource in entry.resources}
    result = Comparison(new=[], stale=[], in_progress=[], accepted=[])
    seen: set[tuple[str, str]] = set()
    for finding in sorted(set(findings)):
        if any(pending.covers(finding) for pending in baseline.in_progress):
            result.in_progress.append(finding)
        elif finding.key in accepted_keys:
            result.accepted.append(finding)
            seen.add(finding.key)
        else:
            result.new.append(finding)
    result.stale = sorted(key for key in accepted_keys - seen)
    return result


def _results(output: str) -> list[Mapping[str, Any]]:
    """checkov's JSON: one report per framework that found files (a list), one (a dict), or a summary."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as error:
        raise ScanError(f"checkov printed no JSON report ({error}): {output[:500]}") from None
    reports = data if isinstance(data, list) else [data]
    return [report for report in reports if isinstance(report, dict)]


def parse(output: str, root: Path) -> list[Finding]:
    """The failed checks of checkov's JSON report, files relative to ``root`` (the scanned directory)."""
    findings = []
    for report in _results(output):
        for failed in (report.get("results") or {}).get("failed_checks") or []:
            path = Path(str(failed.get("file_abs_path") or failed["file_path"]))
            try:
                relative = str(path.resolve().relative_to(root.resolve()))
            except ValueError:
                relative = str(failed["file_path"]).lstrip("/")
            findings.append(Finding(str(failed["check_id"]), str(failed["resource"]), relative,
                                    str(failed.get("check_name") or "")))  # fmt: skip
    return findings


def run_checkov(directory: Path, checkov: Path = CHECKOV) -> list[Finding]:
    """checkov over ``directory`` (offline, its own and the repository's config files ignored)."""
    if not checkov.is_file():
        raise ScanError(f"{checkov} not found: run .ci/setup (it makes .venv-scan from scan/requirements.txt)")
    command = [str(checkov), "-d", str(directory), "--framework", *FRAMEWORKS, "-o", "json", "--quiet", "--compact",
               "--skip-download"]  # fmt: skip
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=directory, env=env)
    except subprocess.TimeoutExpired:
        raise ScanError(f"checkov did not finish in {TIMEOUT} s") from None
    if done.returncode not in (0, 1):  # 1: failed checks (reported in the JSON)
        raise ScanError(f"checkov exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return parse(done.stdout, directory)


def empty_view() -> str:
    from spectra_cli.render import command_line_view

    return yaml.safe_dump(command_line_view("empty-command-line", [], "control"), sort_keys=False)


def scan_files(files: Mapping[str, str], workflows: Path | None = None, checkov: Path = CHECKOV) -> list[Finding]:
    """The findings of checkov on ``files`` (``spectra render``'s, relative path -> text) and on the workflow
    files in ``workflows`` (when that directory exists), the Pod-form findings of command-line views dropped."""
    with tempfile.TemporaryDirectory(prefix="spectra-scan-") as temp:
        root = Path(temp)
        for relative, text in files.items():
            path = root / RENDERED / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        control = root / CONTROL
        control.parent.mkdir(parents=True)
        control.write_text(empty_view())
        if workflows is not None and workflows.is_dir():
            shutil.copytree(workflows, root / WORKFLOWS)  # checkov knows workflows by their path
        findings = run_checkov(root, checkov)
    pod_form = {finding.check for finding in findings if finding.file == CONTROL}
    return [
        finding
        for finding in findings
        if finding.file != CONTROL and not (VIEWS in f"/{finding.file}" and finding.check in pod_form)
    ]


def representative_inventory(pki_dir: Path, extra: Mapping[str, Any] | None = None) -> Any:
    """Three hosts (a control plane with stacked etcd, a worker with the monitoring role, a worker) and every
    addon switched on, ``pki_dir`` for the cluster PKI: the inventory the scan renders."""
    from pyinfra.api import Inventory

    from deploys import addon

    shared: dict[str, Any] = {"pki_dir": str(pki_dir), **{one.switch: True for one in addon.registered()}}
    shared.update(extra or {})
    hosts: Sequence[tuple[str, dict[str, Any]]] = [
        ("cp1", {**shared, "roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11", "zone": "a"}),
        ("node1", {**shared, "roles": ["workers", "monitoring"], "ssh_hostname": "10.0.0.12", "zone": "b"}),
        ("node2", {**shared, "roles": ["workers"], "ssh_hostname": "10.0.0.13", "zone": "c"}),
    ]
    return Inventory((list(hosts), {}))
