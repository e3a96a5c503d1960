"""Self-contained HTML pages of reports: one per run, one per merge (images embedded as data
URIs, no scripts, no external files), so a page can be attached to a CI run and opened as is.

A run's section: the verdict, the plot (:mod:`harness.reports.plots`), the first divergence, a table of
the worst tensors (each backend's worst error in the comparator's unit, ulps with an oracle,
kink-excused elements), the commands that reproduce it and the versions. A merge page starts
with the totals, the cells with the versions each resolved, the failing cells with the command
that replays each, the findings deduplicated; then every run, failing ones first and open.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Callable

from harness.judge.message import of_report
from harness.reports.junit import reproduce_lines, run_name
from harness.reports.merge import INTERRUPTED, interruption_text, status as status_of

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f2f2f2}
td.l,th.l{text-align:left}
.pass{color:#17702b;font-weight:600}.fail{color:#b00020;font-weight:600}.known{color:#9a6700;font-weight:600}
.bad{background:#fde2e2}code,pre{background:#f6f8fa;padding:.1em .3em;border-radius:3px;font-size:.9em}
pre{padding:.6em;overflow-x:auto;white-space:pre-wrap}
img{max-width:100%;border:1px solid #ddd}details{margin:.5em 0}summary{cursor:pointer}
.muted{color:#666;font-size:.9em}
"""

BADGE = {"pass": "pass", "fail": "fail", "known": "known", "known-missing": "fail"}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def worst_tensors(report: dict[str, Any], limit: int = 12) -> list[tuple[str, dict[str, dict]]]:
    """The tensors with the largest error (any backend), worst first."""
    rows = list((report.get("summary") or {}).items())

    def key(item):
        vals = [_num(c.get("worst")) for c in item[1].values()]
        vals = [math.inf if math.isnan(v) else v for v in vals]
        return -max(vals, default=0.0)

    return sorted(rows, key=key)[:limit]


def run_section(report: dict[str, Any], png: bytes | None, open_: bool = True, note: str = "") -> str:
    st = status_of(report)
    check = report.get("check") or {}
    backends = report.get("backends") or []
    per_step = report.get("per_step") or []
    parts = [f"<h2><span class='{BADGE.get(st, 'fail')}'>{_e(st.upper())}</span> {_e(run_name(report))}</h2>"]
    if report.get("description"):
        parts.append(f"<p class='muted'>{_e(report['description'])}</p>")
    facts = [
        ("backends", ", ".join(backends)),
        ("reference", report.get("oracle_note") or ("the consensus" if not report.get("oracle") else report["oracle"])),
        ("steps", f"{report.get('steps_run')} of {report.get('steps')} judged"),
        ("time", f"{_num(report.get('seconds')):.1f} s"),
        ("kinks", f"{sum(e.get('near_kinks', 0) for e in per_step)} element(s) near a kink, "
                  f"{sum(e.get('flips', 0) for e in per_step)} flipped; re-anchored after step(s) "
                  f"{', '.join(map(str, report.get('resyncs') or [])) or 'none'}"),
    ]
    if check:
        facts.append(("in check", f"{check.get('run', '')}, shard {check.get('shard', '')}, cell {check.get('cell', '')}"))
    expected = check.get("expected")
    if expected:
        facts.append(("known defect", f"{', '.join(expected.get('backends', []))}: {expected.get('finding', '')}"
                                      + (" (shown as expected)" if st == "known" else " (did NOT show as expected)")))
    for b, msg in (report.get("failures") or {}).items():
        facts.append((f"{b} raised", msg))
    for b, tensors in (report.get("not_judged") or {}).items():
        facts.append((f"not judged for {b}", ", ".join(tensors)))
    for b, tensors in (report.get("dtype_mismatches") or {}).items():
        facts.append((f"{b} dtype", f"held {', '.join(tensors)} in another dtype than {report.get('dtype')}"))
    text = of_report(report)
    if text:
        facts.append(("first divergence", text))
    parts.append("<table>" + "".join(f"<tr><th class='l'>{_e(k)}</th><td class='l'>{_e(v)}</td></tr>"
                                     for k, v in facts) + "</table>")
    if png:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<img alt='per-step worst error of each backend, {_e(run_name(report))}' "
                     f"src='data:image/png;base64,{data}'>")
    elif note:
        parts.append(f"<p class='muted'>{_e(note)}</p>")
    unit = (report.get("unit") or {}).get("name", "rounding bound")
    ulps = any("ulps" in c for _, row in worst_tensors(report) for c in row.values())
    head = "".join(f"<th>{_e(b)}</th>" for b in backends)
    rows = []
    for tensor, row in worst_tensors(report):
        cells = []
        for b in backends:
            c = row.get(b)
            if c is None:
                cells.append("<td>-</td>")
                continue
            w = _num(c.get("worst"))
            txt = f"{w:.3g}" + (f" · {_num(c['ulps']):.3g} ulp" if "ulps" in c else "") + \
                (f" ({c['kinks']} excused at kinks)" if c.get("kinks") else "")
            cls = " class='bad'" if not w <= 1 else ""
            cells.append(f"<td{cls}>{_e(txt)}</td>")
        rows.append(f"<tr><td class='l'>{_e(tensor)}</td>{''.join(cells)}</tr>")
    parts.append(f"<h3>Worst tensors (error / {_e(unit)}{', ulps' if ulps else ''}; above 1 fails)</h3>"
                 f"<table><tr><th class='l'>tensor</th>{head}</tr>{''.join(rows)}</table>")
    lines = reproduce_lines(report)
    if lines:
        parts.append("<h3>Reproduce</h3><pre>" + _e("\n".join(x.strip() for x in lines)) + "</pre>")
    versions = report.get("versions") or {}
    if versions:
        parts.append("<details><summary>versions</summary><table>" + "".join(
            f"<tr><th class='l'>{_e(k)}</th><td class='l'>{_e(v)}</td></tr>" for k, v in versions.items())
            + "</table></details>")
    body = "\n".join(parts)
    if open_:
        return f"<section>{body}</section>"
    return (f"<details><summary><span class='{BADGE.get(st, 'fail')}'>{_e(st.upper())}</span> "
            f"{_e(run_name(report))}</summary><section>{body}</section></details>")


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n{body}\n</body></html>\n")


def run_page(report: dict[str, Any], png: bytes | None, note: str = "") -> str:
    return page(f"nerva-consistency: {run_name(report)}", run_section(report, png, True, note))


def merge_page(merged, png_of: Callable[[dict[str, Any]], bytes | None], note: str = "",
               title: str = "nerva-consistency: merged report") -> str:
    """The page of a merge (:class:`harness.reports.merge.Merged`); ``png_of`` draws a run's plot."""
    from harness.reports.merge import totals_line
    from harness.reports.report import SHOWN

    parts = [f"<p class='{'fail' if merged.red else 'pass'}'>{'RED' if merged.red else 'green'}: "
             f"{_e(totals_line(merged))}</p>"]
    keys = [k for k in SHOWN if any(k in c["versions"] for c in merged.cells.values())]
    rows = []
    for name, c in sorted(merged.cells.items()):
        n, v = c["counts"], c["versions"]
        bad = " class='bad'" if n["failed"] or merged.missing.get(name) or c[INTERRUPTED] else ""
        rows.append(f"<tr{bad}><td class='l'>{_e(name)}</td><td class='l'>{_e(', '.join(sorted(filter(None, c['shards']))) or '-')}</td>"
                    f"<td>{n['passed']}</td><td>{n['failed']}</td><td>{n['known']}</td><td>{_e(v.get('python', ''))}</td>"
                    + "".join(f"<td>{_e(v.get(k) or '-')}</td>" for k in keys) + "</tr>")
    parts.append("<h2>Cells</h2><table><tr><th class='l'>cell</th><th class='l'>shards</th><th>passed</th>"
                 "<th>failed</th><th>known</th><th>python</th>" + "".join(f"<th>{_e(k)}</th>" for k in keys)
                 + "</tr>" + "".join(rows) + "</table>")
    red = [(n, c) for n, c in sorted(merged.cells.items()) if c["counts"]["failed"] or merged.missing.get(n)
           or c[INTERRUPTED]]
    if red:
        items = []
        for name, c in red:
            replays = [c["replay"][s] for s in sorted(c["red_shards"], key=str) if c["replay"].get(s)]
            sub = [f"<li>{_e(fr['run'])}: <code>{_e(fr['reproduce'])}</code></li>" for fr in c["failed_runs"]]
            sub += [f"<li>{_e(r)}: planned, no report</li>" for r in merged.missing.get(name, [])]
            sub += [f"<li>{_e(interruption_text(i))}</li>" for i in c[INTERRUPTED]]
            sub += [f"<li>{_e(r)}: not reached before the interruption</li>" for r in c["not_reached"]]
            items.append(f"<li><b>{_e(name)}</b>: replay the cell with "
                         + (", ".join(f"<code>{_e(r)}</code>" for r in replays) or "the commands below")
                         + f"<ul>{''.join(sub)}</ul></li>")
        parts.append("<h2>Failing cells</h2><ul>" + "".join(items) + "</ul>")
    if merged.findings:
        rows = []
        for f in sorted(merged.findings, key=lambda f: (f.kind, f.scenario, f.variant, f.backends)):
            seen = ", ".join(f"{c} seed {s}" for c, s in f.seen)
            worst = f"{f.worst:.3g}" if f.kind == "inconsistency" else "-"
            rows.append(f"<tr><td class='l'>{_e(f.kind)}</td><td class='l'>{_e(f.scenario)}</td><td class='l'>{_e(f.variant)}</td>"
                        f"<td class='l'>{_e(', '.join(f.backends))}</td><td class='l'>{_e(f.label)}</td>"
                        f"<td>{_e(worst)}</td><td class='l'>{_e(seen)}</td><td class='l'>{_e(f.detail)}</td>"
                        f"<td class='l'><code>{_e(f.reproduce)}</code></td></tr>")
        parts.append("<h2>Findings (deduplicated over cells and seeds)</h2><table><tr><th class='l'>kind</th>"
                     "<th class='l'>scenario</th><th class='l'>variant</th><th class='l'>backends</th><th class='l'>tensor</th>"
                     "<th>worst</th><th class='l'>seen in</th><th class='l'>detail (the first seen)</th>"
                     "<th class='l'>reproduce</th></tr>" + "".join(rows) + "</table>")
    if note:
        parts.append(f"<p class='muted'>{_e(note)}</p>")
    red_runs = ("fail", "known-missing", INTERRUPTED)
    order = sorted(merged.reports, key=lambda pr: (status_of(pr[1]) not in red_runs, str(pr[0])))
    parts.append("<h2>Runs</h2>")
    for path, report in order:
        st = status_of(report)
        parts.append(run_section(report, png_of(report), open_=st in red_runs, note=note))
    return page(title, "\n".join(parts))
