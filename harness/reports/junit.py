"""JUnit XML from JSON reports: what CI dashboards (GitHub test reporters, GitLab, Jenkins) read.

One ``<testsuite>`` per run (scenario x variant x seed), one ``<testcase>`` per backend in it:

- a backend the comparator blamed at the first divergence gets a ``<failure>`` whose message is
  the first divergence (:mod:`harness.judge.message`: step, tensor, element, how far outside
  the bound, how many elements were outside, every backend's value there) and whose text adds
  the commands that reproduce the run;
- a backend that raised gets an ``<error>`` with its message;
- the backends a documented defect (``known`` in the catalog) blames, when ``check`` saw exactly
  that defect, are ``<skipped>`` with the finding's name: not a failure, but visible;
- when ``check`` expected a known defect that did not show, its backends get a ``<failure>``
  saying so (fixed upstream, or the harness lost sensitivity);
- in a run that was interrupted (Ctrl-C, SIGTERM, SIGHUP) every backend not already failed gets
  an ``<error>`` saying how many steps were judged: the run is not a pass;
- every other backend passes.

Input is the JSON report (:func:`harness.reports.report.to_json`, with the ``check`` entry ``check``
adds), so a saved report gives the same XML as the run that wrote it. Only the standard
library is used.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable

from harness.judge.message import of_report
from harness.reports.write import replacing
from harness.reports.merge import INTERRUPTED, status as status_of


def reproduce_lines(report: dict[str, Any]) -> list[str]:
    rep = report.get("reproduce") or {}
    lines = [f"  {rep[k]}" for k in ("run", "tox", "replay", "tox_replay") if k in rep]
    bundle = (report.get("check") or {}).get("bundle")
    if bundle and "replay" not in rep:  # a report written before reproduce named its bundle
        lines.append(f"  nerva-consistency replay {bundle}")
    return lines


def run_name(report: dict[str, Any]) -> str:
    return f"{report['scenario']} {report['dtype']}/{report['mode']} seed {report['seed']}"


def _case(suite: ET.Element, report: dict[str, Any], backend: str) -> ET.Element:
    n = max(1, len(report.get("backends", [])))
    return ET.SubElement(suite, "testcase", {
        "classname": f"nerva_consistency.{report['scenario']}",
        "name": f"{report['dtype']}/{report['mode']} seed {report['seed']} [{backend}]",
        "time": f"{float(report.get('seconds', 0.0)) / n:.3f}",
    })


def suite(report: dict[str, Any]) -> ET.Element:
    """The ``<testsuite>`` of one run's JSON report."""
    check = report.get("check") or {}
    status = status_of(report)
    expected = check.get("expected") or {}
    fd = report.get("first_divergence") or {}
    blamed = set(fd.get("backends", []))
    failures = report.get("failures") or {}
    sentence = of_report(report)
    text = f"first divergence: {sentence}" if sentence else None
    how = "\n".join(["Reproduce with:", *reproduce_lines(report)])

    el = ET.Element("testsuite", {"name": run_name(report), "time": f"{float(report.get('seconds', 0.0)):.3f}"})
    if check.get("started"):
        el.set("timestamp", check["started"][:19])  # JUnit's timestamp has no zone (UTC here)
    props = ET.SubElement(el, "properties")
    for key in ("scenario", "dtype", "mode", "seed", "oracle"):
        ET.SubElement(props, "property", {"name": key, "value": str(report.get(key))})
    for key, value in (report.get("versions") or {}).items():
        if value:
            ET.SubElement(props, "property", {"name": f"version.{key}", "value": str(value)})
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for backend in report.get("backends", []):
        case = _case(el, report, backend)
        counts["tests"] += 1
        if backend in failures:
            err = ET.SubElement(case, "error", {"message": f"{backend} raised: {failures[backend]}",
                                                "type": "BackendError"})
            err.text = f"{backend} raised at {failures[backend]}\n{how}"
            counts["errors"] += 1
        elif status == "known" and backend in blamed:
            ET.SubElement(case, "skipped", {
                "message": f"known defect shown as expected: {expected.get('finding', '')}; {text}"})
            counts["skipped"] += 1
        elif status == "known-missing" and backend in expected.get("backends", []):
            fail = ET.SubElement(case, "failure", {
                "message": f"expected the known defect {expected.get('finding', '')} in {backend}; it did not "
                           "show as expected (fixed upstream, or the harness lost sensitivity)",
                "type": "KnownDefectMissing"})
            fail.text = "\n".join(filter(None, [text, how]))
            counts["failures"] += 1
        elif backend in blamed and status != "known":
            fail = ET.SubElement(case, "failure", {"message": text or "inconsistent", "type": "Inconsistency"})
            fail.text = "\n".join(filter(None, [text, how]))
            counts["failures"] += 1
        elif status == INTERRUPTED:
            ET.SubElement(case, "error", {"message": f"interrupted after {report.get('steps_run')} of "
                                                     f"{report.get('steps')} step(s) judged", "type": "Interrupted"})
            counts["errors"] += 1
    for key, value in counts.items():
        el.set(key, str(value))
    return el


def document(reports: Iterable[dict[str, Any]], name: str = "nerva-consistency") -> ET.ElementTree:
    root = ET.Element("testsuites", {"name": name})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = 0.0
    for report in reports:
        s = suite(report)
        root.append(s)
        for key in totals:
            totals[key] += int(s.get(key, "0"))
        seconds += float(s.get("time", "0"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{seconds:.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def write(reports: Iterable[dict[str, Any]], path: str | Path, name: str = "nerva-consistency") -> Path:
    path = Path(path)
    with replacing(path) as f:
        document(reports, name).write(f, encoding="utf-8", xml_declaration=True)
    return path
