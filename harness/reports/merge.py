"""What ``check`` records about each run and each cell, and the merge of many of them.

``check --json DIR`` writes, besides one JSON report per run (schema ``report/2``, with a
``check`` entry: the run's status in the check, the known defect it expected, its shard and
cell, its repro bundle), one *cell manifest* ``DIR/check.json`` (``DIR/check-KofN.json`` for
shard K/N, so that shards sharing a directory never write the same file; schema
``nerva-consistency/check/1``, docs/report-schema.md): which shard of which plan this was, the
runs planned, the counts, the versions of every installed package (what a nightly "latest"
cell resolved that night), the command that replays the cell, and, when the check was
interrupted (Ctrl-C, SIGTERM, SIGHUP), how far it got.

:func:`load` finds every report and manifest under a directory (a downloaded set of nightly
artifacts, or the output of K shards), :func:`merge` combines them: totals, which cells,
scenarios and backends failed, the findings deduplicated over cells and seeds, the runs a cell
planned but did not report, and the cells that were interrupted (red, with the run and step
they stopped at; their runs not reached are not "missing"). :func:`markdown` is the summary a CI
job writes. Every file is written whole or not at all (harness.reports.write), so a merge over a
directory a cell is still writing reads complete reports only.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from harness.core.keys import Key, parse as parse_key
from harness.judge.message import of_report
from harness.reports import write
from harness.reports.report import SCHEMA as REPORT_SCHEMA, SHOWN

CHECK_SCHEMA = "nerva-consistency/check/1"
RED_STATUSES = ("fail", "known-missing")  # the check statuses that make a finished run red
INTERRUPTED = "interrupted"  # the status of a run stopped part-way (red too, counted apart)
COUNTS = ("runs", "passed", "failed", "known", INTERRUPTED)


def manifest_name(shard) -> str:
    """The cell manifest's file name: ``check.json``, or ``check-KofN.json`` for shard K/N."""
    return "check.json" if shard.count == 1 else f"check-{shard.index}of{shard.count}.json"


def installed() -> dict[str, str]:
    """Every installed distribution and its version (what ``pip freeze`` lists)."""
    out: dict[str, str] = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            out[name] = dist.version
    return dict(sorted(out.items()))


def cell_name() -> str:
    """The cell's label: ``NERVA_CONSISTENCY_CELL`` (the nightly workflow sets it), else the
    Python version."""
    return os.environ.get("NERVA_CONSISTENCY_CELL") or f"py{platform.python_version()}"


def check_entry(status: str, run, shard, expected: dict | None, bundle: str | None,
                started: str) -> dict[str, Any]:
    """The ``check`` entry of a run's report: status is ``pass``, ``fail``, ``known`` (the
    documented defect showed as expected) or ``known-missing`` (it did not: red)."""
    return {"status": status, "run": run.label, "shard": str(shard), "cell": cell_name(),
            "expected": expected, "bundle": bundle, "started": started}


def replay_command(argv: list[str]) -> str:
    """The command that reruns this cell: under a ``nightly*`` tox environment, that
    environment on this Python with the arguments that vary between cells; otherwise ``tox -e
    consistency`` with the whole ``check`` command line."""
    env = os.environ.get("TOX_ENV_NAME", "")
    if env.startswith("nightly"):
        keep, i = [], 0
        while i < len(argv):
            a = argv[i]
            if a in ("--shard", "--add-seed", "--seed", "--backends") and i + 1 < len(argv):
                keep += [a, argv[i + 1]]
                i += 2
                continue
            if a.split("=", 1)[0] in ("--shard", "--add-seed", "--seed", "--backends"):
                keep.append(a)
            i += 1
        py = "python" + ".".join(platform.python_version_tuple()[:2])  # the cell's Python, whatever tox's default
        return shlex.join(["tox", "-e", env, "-x", f"testenv:{env}.base_python={py}", "--", *keep])
    return shlex.join(["tox", "-e", "consistency", "--", *argv])


def write_manifest(directory: Path, *, shard, planned, runs, argv: list[str], counts: dict[str, int],
                   backends: list[str], versions: dict[str, Any], started: str, seconds: float,
                   exit_code: int, options: dict[str, Any], interrupted: dict[str, Any] | None = None) -> Path:
    """The cell manifest; ``interrupted``: how far an interrupted check got (the signal, the run
    in progress and its steps judged, the runs done)."""
    doc = {
        "schema": CHECK_SCHEMA,
        "cell": cell_name(),
        "shard": str(shard),
        "options": options,
        "plan_runs": len(planned),
        "runs": [r.label for r in runs],
        "backends": backends,
        "counts": counts,
        "exit": exit_code,
        "started": started,
        "seconds": round(seconds, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "installed": installed(),
        "command": shlex.join(["nerva-consistency", *argv]),
        "replay": replay_command(argv),
    }
    if interrupted is not None:
        doc[INTERRUPTED] = interrupted
    return write.json_file(directory / manifest_name(shard), doc)


def clear(directory: Path, shard) -> int:
    """Remove what an earlier ``check`` of the same shard of this cell left in ``directory`` (run
    reports and manifest, only files with this package's schemas), and what a check split
    otherwise (another N) or a single run left, so that a rerun's merge shows only its own runs,
    never a sibling shard's that may be running into the same directory at this moment."""
    removed, cell = 0, cell_name()
    for f in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            doc = json.loads(f.read_text())
            schema = doc.get("schema")
        except (OSError, ValueError, AttributeError):
            continue
        if schema not in (REPORT_SCHEMA, CHECK_SCHEMA):
            continue
        entry = doc if schema == CHECK_SCHEMA else doc.get("check") or {}
        theirs = str(entry.get("shard", "")).partition("/")[2]
        if entry.get("cell", cell) == cell and (entry.get("shard") == str(shard) or theirs != str(shard.count)):
            f.unlink(missing_ok=True)
            removed += 1
    return removed


# ------------------------------------------------------------------------------------- loading

@dataclass
class Loaded:
    reports: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    manifests: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def load(*paths: str | Path) -> Loaded:
    """Every run report and cell manifest in ``paths`` (files, or directories searched
    recursively), in a stable order; other JSON (explore, conventions) is ignored."""
    out = Loaded()
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.rglob("*.json")) if p.is_dir() else [p]
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            out.ignored.append(f)
            continue
        schema = doc.get("schema") if isinstance(doc, dict) else None
        if schema == REPORT_SCHEMA:
            out.reports.append((f, doc))
        elif schema == CHECK_SCHEMA:
            out.manifests.append((f, doc))
        else:
            out.ignored.append(f)
    return out


def status(report: dict[str, Any]) -> str:
    """``pass``, ``fail``, ``known``, ``known-missing`` (harness.run.plan.outcome) or ``interrupted``."""
    return (report.get("check") or {}).get("status") or (
        INTERRUPTED if report.get(INTERRUPTED) else "pass" if report.get("passed") else "fail")


def cell_of(report: dict[str, Any]) -> str:
    return (report.get("check") or {}).get("cell") or "single runs"


# ------------------------------------------------------------------------------------- merging

@dataclass
class MergedFinding:
    """One distinct red finding of a merge, with every (cell, seed) it was seen in (not a
    :class:`harness.run.findings.Finding`, which is what classify says of one run)."""

    kind: str  # inconsistency | error | known-missing
    scenario: str
    variant: str
    backends: tuple[str, ...]
    tensor: str | None
    detail: str
    worst: float = 0.0
    seen: list[tuple[str, int]] = field(default_factory=list)
    reproduce: str = ""

    @property
    def label(self) -> str:
        """The tensor as a person reads it ("DW of layer 2"), or "-"."""
        return parse_key(self.tensor).label if self.tensor else "-"


@dataclass
class Merged:
    reports: list[tuple[Path, dict[str, Any]]]
    manifests: list[tuple[Path, dict[str, Any]]]
    totals: dict[str, int]
    cells: dict[str, dict[str, Any]]
    failed_scenarios: dict[str, int]
    failed_backends: dict[str, int]
    findings: list[MergedFinding]
    missing: dict[str, list[str]]  # cell -> runs it planned but did not report (and was not interrupted)

    @property
    def red(self) -> bool:
        return self.totals["failed"] > 0 or any(self.missing.values()) or any(c[INTERRUPTED] for c in self.cells.values())


def _findings_of(report: dict[str, Any]) -> list[MergedFinding]:
    st = status(report)
    variant = f"{report['dtype']}/{report['mode']}"
    out = []
    for backend, message in (report.get("failures") or {}).items():
        text = message.split(": ", 1)[1] if ": " in message else message  # without "step N: "
        out.append(MergedFinding("error", report["scenario"], variant, (backend,), None, text))
    fd = report.get("first_divergence")
    if st in ("fail", INTERRUPTED) and fd:  # interrupted: a failure it found before it stopped
        name = Key(fd["tensor"], fd.get("layer")).name
        ratios = [r if isinstance(r, (int, float)) else float("inf")
                  for b, r in fd.get("ratio", {}).items() if b in fd["backends"]]
        out.append(MergedFinding("inconsistency", report["scenario"], variant, tuple(sorted(fd["backends"])), name,
                                 of_report(report) or "", max(ratios, default=0.0)))
    if st == "known-missing":
        expected = (report.get("check") or {}).get("expected") or {}
        out.append(MergedFinding("known-missing", report["scenario"], variant, tuple(expected.get("backends", [])),
                                 None, f"expected {expected.get('finding', 'a known defect')}; it did not show"))
    return out


def merge(loaded: Loaded) -> Merged:
    reports = loaded.reports
    totals = dict.fromkeys(COUNTS, 0)
    cells: dict[str, dict[str, Any]] = {}
    failed_scenarios: dict[str, int] = defaultdict(int)
    failed_backends: dict[str, int] = defaultdict(int)
    findings: dict[tuple, MergedFinding] = {}
    reported: dict[str, set[str]] = defaultdict(set)
    for path, manifest in loaded.manifests:
        cell = cells.setdefault(manifest.get("cell", "?"), _new_cell())
        shard = manifest.get("shard")
        cell["shards"].append(shard)
        known = {**(manifest.get("installed") or {}), **(manifest.get("versions") or {})}
        cell["versions"] = {k: v for k, v in known.items() if k in SHOWN or k == "python"}
        cell["replay"][shard] = manifest.get("replay")
        for run in manifest.get("runs", []):
            cell["planned"][run] = shard
        if manifest.get(INTERRUPTED):
            cell[INTERRUPTED].append({**manifest[INTERRUPTED], "shard": shard, "runs": len(manifest.get("runs", []))})
            cell["red_shards"].add(shard)
    for path, report in reports:
        st = status(report)
        name = cell_of(report)
        cell = cells.setdefault(name, _new_cell())
        if not cell["versions"]:
            cell["versions"] = {k: v for k, v in (report.get("versions") or {}).items() if k in SHOWN or k == "python"}
        totals["runs"] += 1
        cell["counts"]["runs"] += 1
        key = "failed" if st in RED_STATUSES else st if st in ("known", INTERRUPTED) else "passed"
        totals[key] += 1
        cell["counts"][key] += 1
        reported[name].add((report.get("check") or {}).get("run") or "")
        if st in RED_STATUSES:
            cell["red_shards"].add((report.get("check") or {}).get("shard"))
            failed_scenarios[report["scenario"]] += 1
            fd = report.get("first_divergence") or {}
            expected = (report.get("check") or {}).get("expected") or {}
            missed = set(expected.get("backends", [])) if st == "known-missing" else set()
            for b in set(fd.get("backends", [])) | set(report.get("failures") or {}) | missed:
                failed_backends[b] += 1
            cell["failed_runs"].append({"run": (report.get("check") or {}).get("run") or _label(report),
                                        "path": str(path), "reproduce": (report.get("reproduce") or {}).get("tox", "")})
        for f in _findings_of(report):
            k = (f.kind, f.scenario, f.variant, f.backends, f.tensor, f.detail if f.kind != "inconsistency" else "")
            kept = findings.setdefault(k, f)
            kept.worst = max(kept.worst, f.worst)
            kept.seen.append((name, report["seed"]))
            kept.reproduce = kept.reproduce or (report.get("reproduce") or {}).get("run", "")
    missing = _interrupted_and_missing(cells, reports, reported)
    return Merged(reports, loaded.manifests, totals, cells, dict(failed_scenarios), dict(failed_backends),
                  list(findings.values()), missing)


def _interrupted_and_missing(cells: dict[str, dict[str, Any]], reports: list[tuple[Path, dict[str, Any]]],
                             reported: dict[str, set[str]]) -> dict[str, list[str]]:
    """Each cell's interruptions completed from the interrupted run reports no manifest speaks
    for (a single ``run``, or a check killed before its manifest), its planned runs that an
    interruption left unreached (``not_reached``), and the rest of the runs planned and not
    reported: the missing ones, per cell."""
    for path, report in reports:
        if status(report) != INTERRUPTED:
            continue
        cell, check = cells[cell_of(report)], report.get("check") or {}
        label = check.get("run") or _label(report)
        if not any(i.get("run") == label for i in cell[INTERRUPTED]):
            cell[INTERRUPTED].append({"shard": check.get("shard"), "signal": None, "run": label,
                                      "steps_run": report.get("steps_run"), "steps": report.get("steps"),
                                      "runs_done": None, "runs": None})
        cell["red_shards"].add(check.get("shard"))
    missing = {}
    for name, c in cells.items():
        stopped = {i["shard"] for i in c[INTERRUPTED]}
        gone = sorted(set(c["planned"]) - reported[name])
        c["not_reached"] = [run for run in gone if c["planned"][run] in stopped]
        gone = [run for run in gone if c["planned"][run] not in stopped]
        if gone:
            missing[name] = gone
            c["red_shards"].update(c["planned"][run] for run in gone)
    return missing


def interruption_text(i: dict[str, Any]) -> str:
    """How far an interrupted cell or run got, in one line."""
    by = f" by {i['signal']}" if i.get("signal") else ""
    where = (f" during {i['run']} after {i['steps_run']:,} of {i['steps']:,} step(s) judged"
             if i.get("run") and isinstance(i.get("steps_run"), int) and isinstance(i.get("steps"), int) else
             f" during {i['run']}" if i.get("run") else " between two runs")
    done = f", {i['runs_done']} of {i['runs']} run(s) done" if isinstance(i.get("runs_done"), int) else ""
    shard = f"shard {i['shard']} " if i.get("shard") else ""
    return f"{shard}interrupted{by}{where}{done}"


def _new_cell() -> dict[str, Any]:
    return {"counts": dict.fromkeys(COUNTS, 0), "shards": [], "versions": {}, "replay": {}, "planned": {},
            "failed_runs": [], "red_shards": set(), INTERRUPTED: [], "not_reached": []}


def _label(report: dict[str, Any]) -> str:
    return f"{report['scenario']} {report['dtype']} {report['mode']} seed {report['seed']}"


def totals_line(m: Merged) -> str:
    t = m.totals
    stopped = sum(len(c[INTERRUPTED]) for c in m.cells.values())
    return (f"{t['passed']} passed, {t['failed']} failed"
            + (f", {t['known']} known defect(s) shown as expected" if t["known"] else "")
            + (f", {stopped} interrupted" if stopped else "")
            + f" ({t['runs']} run(s) in {len(m.cells)} cell(s))")


def markdown(m: Merged, title: str = "nerva-consistency") -> str:
    """The job summary: per cell its counts and versions, the failing runs with the command
    that replays the cell, the findings deduplicated."""
    lines = [f"## {title}: {'RED' if m.red else 'green'}", "", totals_line(m), ""]
    keys = [k for k in SHOWN if any(k in c["versions"] for c in m.cells.values())]
    lines += ["| cell | shards | passed | failed | known | python | " + " | ".join(keys) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(keys)]
    for name, c in sorted(m.cells.items()):
        v = c["versions"]
        n = c["counts"]
        shards = ", ".join(sorted(filter(None, c["shards"]))) or "-"
        lines.append(f"| {name} | {shards} | {n['passed']} | {n['failed']} | {n['known']} | {v.get('python', '')} | "
                     + " | ".join(str(v.get(k) or "-") for k in keys) + " |")
    lines.append("")
    red_cells = [(n, c) for n, c in sorted(m.cells.items()) if c["counts"]["failed"] or m.missing.get(n) or c[INTERRUPTED]]
    if red_cells:
        lines += ["### Failing cells", ""]
        for name, c in red_cells:
            replay = "; ".join(f"`{c['replay'][s]}`" for s in sorted(c["red_shards"], key=str) if c["replay"].get(s)) \
                or "(no cell manifest: the run commands below)"
            py = c["versions"].get("python", "")
            lines.append(f"- **{name}**: replay with {replay}" + (f" (Python {py})" if py else ""))
            for fr in c["failed_runs"]:
                lines.append(f"  - {fr['run']}: `{fr['reproduce']}`")
            for run in m.missing.get(name, []):
                lines.append(f"  - {run}: planned, no report (the cell stopped early?)")
            for i in c[INTERRUPTED]:
                lines.append(f"  - {interruption_text(i)}")
            if c["not_reached"]:
                lines.append(f"  - not reached before the interruption: {'; '.join(c['not_reached'])}")
        lines.append("")
    if m.findings:
        lines += ["### Findings (deduplicated)", "",
                  "| kind | scenario | variant | backends | tensor | worst | seen in | detail (the first seen) |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in sorted(m.findings, key=lambda f: (f.kind, f.scenario, f.variant, f.backends)):
            seen = ", ".join(f"{c} seed {s}" for c, s in f.seen)
            worst = f"{f.worst:.3g}" if f.kind == "inconsistency" else "-"
            detail = f.detail.replace("|", "\\|")
            lines.append(f"| {f.kind} | {f.scenario} | {f.variant} | {', '.join(f.backends)} | {f.label} | "
                         f"{worst} | {seen} | {detail} |")
        lines.append("")
    if m.failed_scenarios:
        lines.append("Failed scenarios: " + ", ".join(f"{k} ({v})" for k, v in sorted(m.failed_scenarios.items())))
    if m.failed_backends:
        lines.append("Blamed backends: " + ", ".join(f"{k} ({v})" for k, v in sorted(m.failed_backends.items())))
    return "\n".join(lines).rstrip() + "\n"


def to_json(m: Merged) -> dict[str, Any]:
    """The merged summary as JSON (schema ``nerva-consistency/merge/1``)."""
    return {
        "schema": "nerva-consistency/merge/1",
        "red": m.red,
        "totals": m.totals,
        "cells": {n: {"counts": c["counts"], "shards": c["shards"], "versions": c["versions"],
                      "replay": dict(sorted(c["replay"].items(), key=lambda kv: str(kv[0]))),
                      "red_shards": sorted(c["red_shards"], key=str),
                      "failed_runs": c["failed_runs"],
                      "missing": m.missing.get(n, []), INTERRUPTED: c[INTERRUPTED],
                      "not_reached": c["not_reached"]}
                  for n, c in sorted(m.cells.items())},
        "failed_scenarios": m.failed_scenarios,
        "failed_backends": m.failed_backends,
        "findings": [{"kind": f.kind, "scenario": f.scenario, "variant": f.variant, "backends": list(f.backends),
                      "tensor": f.tensor, "detail": f.detail, "worst": f.worst if f.worst != float("inf") else "inf",
                      "seen": [{"cell": c, "seed": s} for c, s in f.seen], "reproduce": f.reproduce}
                     for f in m.findings],
    }
