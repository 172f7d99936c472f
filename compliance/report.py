"""Reports of a :class:`~compliance.results.ResultSet`: JSON, JUnit XML and one self-contained HTML page."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from compliance.checks import BY_ID, SECTIONS
from compliance.results import CheckResult, ResultSet, to_json

LABELS = {"pass": "PASS", "fail": "FAIL", "waived": "WAIVED", "not_applicable": "N/A"}


def _message(result: CheckResult) -> str:
    parts = [result.reason]
    if result.waiver:
        parts.append(result.waiver)
    return " | ".join(part for part in parts if part)


def to_junit(result_set: ResultSet) -> str:
    """One testsuite per host, one testcase per check; not applicable and waived are ``skipped``."""
    errors = result_set.connection_errors
    root = ET.Element("testsuites", name="spectra comply", tests=str(len(result_set.results) + len(errors)))
    root.set("failures", str(len(result_set.failures) + len(result_set.waiver_problems)))
    root.set("errors", str(len(errors)))
    for host in result_set.hosts:
        if host in errors:  # not reached: one error, no check ran
            suite = ET.SubElement(root, "testsuite", name=host, tests="1", failures="0", skipped="0", errors="1")
            if result_set.generated_at:
                suite.set("timestamp", result_set.generated_at)
            case = ET.SubElement(suite, "testcase", classname=f"compliance.connection.{host}", name="ssh connection")
            error = ET.SubElement(case, "error", message=f"cannot connect: {errors[host]}", type="connection")
            error.text = f"{host} was not checked: ssh could not connect: {errors[host]}"
            continue
        results = [result for result in result_set.results if result.host == host]
        counts = result_set.counts(host)
        suite = ET.SubElement(
            root, "testsuite", name=host, tests=str(len(results)), failures=str(counts["fail"]),
            skipped=str(counts["waived"] + counts["not_applicable"]), errors="0",
        )  # fmt: skip
        if result_set.generated_at:
            suite.set("timestamp", result_set.generated_at)
        for result in results:
            check = BY_ID[result.check]
            case = ET.SubElement(
                suite, "testcase", classname=f"compliance.{check.section}.{host}", name=f"{check.id} {check.title}"
            )
            if result.status == "fail":
                failure = ET.SubElement(case, "failure", message=_message(result), type="compliance")
                failure.text = f"{_message(result)}\nrationale: {check.rationale}\nfix: {check.fix}"
            elif result.status == "waived":
                ET.SubElement(case, "skipped", message=f"waived: {_message(result)}")
            elif result.status == "not_applicable":
                ET.SubElement(case, "skipped", message=f"not applicable: {result.reason}")
            elif result.reason:
                ET.SubElement(case, "system-out").text = result.reason
    if result_set.waiver_problems:
        suite = ET.SubElement(root, "testsuite", name="waivers", tests=str(len(result_set.waiver_problems)),
                              failures=str(len(result_set.waiver_problems)), skipped="0", errors="0")  # fmt: skip
        for index, problem in enumerate(result_set.waiver_problems):
            case = ET.SubElement(suite, "testcase", classname="compliance.waivers", name=f"waiver {index + 1}")
            ET.SubElement(case, "failure", message=problem, type="expired-waiver").text = problem
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .muted{color:#57606a}
.banner{padding:12px 16px;border-radius:6px;font-weight:600;font-size:16px;margin:12px 0}
.banner.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.banner.bad{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0} tr.section th{background:#eaeef2;font-size:13px}
td.cell{text-align:center;font-weight:700;font-size:12px;white-space:nowrap;min-width:64px}
.pass{background:#dafbe1;color:#116329} .fail{background:#cf222e;color:#fff}
.waived{background:#fff8c5;color:#7d4e00} .not_applicable{background:#f6f8fa;color:#6e7781}
td.id{font-family:ui-monospace,monospace;white-space:nowrap}
.legend span{padding:2px 8px;margin-right:6px;border-radius:4px}
ul.failures li{margin:6px 0} code{font-family:ui-monospace,monospace;font-size:13px}
details{margin:8px 0} summary{cursor:pointer}
"""


def to_html(result_set: ResultSet) -> str:
    """Verdict first, then hosts, the failures with their fix hints, the grid (checks down, hosts across;
    every cell says its status in words as well as in colour, the reason is its tooltip), then the waived
    and not-applicable reasons."""
    e = html.escape
    hosts = list(result_set.hosts)
    counts = result_set.counts()
    if result_set.ok:
        banner = f'<div class="banner ok">COMPLIANT: no failing check on {len(hosts)} host(s)</div>'
    else:
        problems = f", {len(result_set.waiver_problems)} expired waiver(s)" if result_set.waiver_problems else ""
        if result_set.connection_errors:
            problems += f", {len(result_set.connection_errors)} host(s) not reached"
        banner = (
            f'<div class="banner bad">NOT COMPLIANT: {counts["fail"]} failing check(s) on '
            f"{len({r.host for r in result_set.failures})} host(s){problems}</div>"
        )
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Compliance: {e(result_set.inventory)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>Compliance report: {e(result_set.inventory)}</h1>",
        f'<div class="muted">{e(result_set.generated_at)} &middot; {len(hosts)} host(s) &middot; '
        f"{len(BY_ID)} checks &middot; pass {counts['pass']}, fail {counts['fail']}, waived {counts['waived']}, "
        f"not applicable {counts['not_applicable']}</div>",
        banner,
    ]  # fmt: skip
    for problem in result_set.waiver_problems:
        out.append(f'<div class="banner bad">Expired waiver: {e(problem)}</div>')
    for host, cause in result_set.connection_errors.items():
        out.append(f'<div class="banner bad">ERROR {e(host)}: not checked, cannot connect: {e(cause)}</div>')
    out.append('<div class="legend">' + "".join(
        f'<span class="{status}">{label}</span>' for status, label in LABELS.items()) + "</div>")  # fmt: skip

    out.append("<h2>Hosts</h2><table><tr><th>Host</th><th>PASS</th><th>FAIL</th><th>WAIVED</th><th>N/A</th>"
               "<th>Groups</th></tr>")  # fmt: skip
    for host in hosts:
        c = result_set.counts(host)
        status = "fail" if c["fail"] or host in result_set.connection_errors else "pass"
        out.append(
            f'<tr><td class="{status}"><b>{e(host)}</b></td><td>{c["pass"]}</td><td>{c["fail"]}</td>'
            f"<td>{c['waived']}</td><td>{c['not_applicable']}</td>"
            f'<td class="muted">{e(", ".join(result_set.hosts[host]))}</td></tr>'
        )
    out.append("</table>")

    failures = result_set.failures
    out.append(f"<h2>Failures ({len(failures)})</h2>")
    if failures:
        out.append('<ul class="failures">')
        for failure in failures:
            check = BY_ID[failure.check]
            out.append(
                f"<li><b>{e(failure.host)}</b> <code>{e(check.id)}</code> {e(check.title)}<br>"
                f'<span>{e(_message(failure))}</span><br><span class="muted">fix: {e(check.fix)}</span></li>'
            )
        out.append("</ul>")
    else:
        out.append('<p class="muted">none</p>')
    out.append("<h2>Checks by host</h2><table><tr><th>Check</th><th>Title</th>")
    out.extend(f"<th>{e(host)}</th>" for host in hosts)
    out.append("</tr>")
    by_cell = {(r.host, r.check): r for r in result_set.results}
    check_ids = list(dict.fromkeys(r.check for r in result_set.results))
    for section, title in SECTIONS.items():
        ids = [check_id for check_id in check_ids if BY_ID[check_id].section == section]
        if not ids:
            continue
        out.append(f'<tr class="section"><th colspan="{2 + len(hosts)}">{e(title)}</th></tr>')
        for check_id in ids:
            check = BY_ID[check_id]
            out.append(f'<tr><td class="id">{e(check.id)}</td><td title="{e(check.rationale)}">{e(check.title)}</td>')
            for host in hosts:
                cell = by_cell.get((host, check_id))
                if cell is None:
                    out.append('<td class="cell">-</td>')
                    continue
                out.append(f'<td class="cell {cell.status}" title="{e(_message(cell))}">{LABELS[cell.status]}</td>')
            out.append("</tr>")
    out.append("</table>")

    for status, heading in (("waived", "Waived"), ("not_applicable", "Not applicable")):
        items = [r for r in result_set.results if r.status == status]
        out.append(f"<details><summary><b>{heading} ({len(items)})</b></summary><ul>")
        out.extend(f"<li><b>{e(r.host)}</b> <code>{e(r.check)}</code>: {e(_message(r))}</li>" for r in items)
        out.append("</ul></details>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_reports(result_set: ResultSet, directory: str | Path) -> dict[str, Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "compliance.json", "junit": directory / "junit.xml", "html": directory / "index.html"}
    paths["json"].write_text(json.dumps(to_json(result_set), indent=2) + "\n", encoding="utf-8")
    paths["junit"].write_text(to_junit(result_set), encoding="utf-8")
    paths["html"].write_text(to_html(result_set), encoding="utf-8")
    return paths
