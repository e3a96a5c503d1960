"""Rendering saved reports to files: ``nerva-consistency report`` and ``check --out``.

    report FILE.json [--out DIR]       FILE.png and FILE.html (DIR: default beside FILE)
    report --merge DIR... [--out DIR]  index.html, plots/*.png, junit.xml, summary.md, merged.json

Only JSON is read; no framework is imported (matplotlib is, lazily, for the plots).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.reports import junit
from harness.reports import merge
from harness.reports import pages
from harness.reports import plots
from harness.reports import write
from harness.reports.report import SCHEMA as REPORT_SCHEMA
from harness.core.errors import SpecError


def _png(report: dict[str, Any], path: Path | None, enabled: bool) -> bytes | None:
    if not enabled or not report.get("per_step"):
        return None
    return plots.render_png(report, path)


def _stem(path: Path) -> str:
    return path.name[:-5] if path.name.endswith(".json") else path.name


def render_run(report: dict[str, Any], source: Path, out_dir: Path, with_plots: bool = True) -> tuple[Path, Path | None]:
    """``out_dir/<stem>.html`` and ``out_dir/<stem>.png`` of one run's report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _stem(source)
    png_path = out_dir / f"{stem}.png"
    note = "" if with_plots else "plots not drawn: " + (plots.available() or "--no-plots")
    png = _png(report, png_path, with_plots)
    html_path = out_dir / f"{stem}.html"
    write.text(html_path, pages.run_page(report, png, note))
    return html_path, (png_path if png else None)


def render_merge(paths: list[str | Path], out_dir: Path, title: str = "nerva-consistency",
                 markdown_to: str | None = None, with_plots: bool = True) -> merge.Merged:
    """Merge every report under ``paths`` and write the merged page, plots, JUnit, summary.
    Writers of one ``out_dir`` take turns (two ``check --shard`` sharing ``--out``): each reads
    the reports under the lock, so the last one's files merge everything the others wrote."""
    with write.locked(out_dir):
        return _render_merge(paths, out_dir, title, markdown_to, with_plots)


def _render_merge(paths: list[str | Path], out_dir: Path, title: str, markdown_to: str | None,
                  with_plots: bool) -> merge.Merged:
    loaded = merge.load(*paths)
    if not loaded.reports and not loaded.manifests:
        raise SpecError(f"no nerva-consistency JSON report under {', '.join(map(str, paths))}")
    merged = merge.merge(loaded)
    plot_dir = out_dir / "plots"
    note = "" if with_plots else "plots not drawn: " + (plots.available() or "--no-plots")

    def png_of(report: dict[str, Any]) -> bytes | None:
        path = next(p for p, r in merged.reports if r is report)
        stem = f"{merge.cell_of(report)}-{_stem(path)}".replace("/", "_").replace(" ", "_")
        return _png(report, plot_dir / f"{stem}.png", with_plots)

    write.text(out_dir / "index.html", pages.merge_page(merged, png_of, note, title))
    junit.write([r for _, r in merged.reports], out_dir / "junit.xml", name=title)
    text = merge.markdown(merged, title)
    write.text(out_dir / "summary.md", text)
    write.json_file(out_dir / "merged.json", merge.to_json(merged))
    if markdown_to:
        write.append_text(markdown_to, text + "\n")
    return merged


def report_command(args, out) -> int:
    """``nerva-consistency report``: exit 0 when rendered (a single run's own verdict does not
    change it); with ``--merge``, 1 when anything merged is red (a failed run, a run a cell
    planned but did not report), so a CI job that merges fails on a red cell."""
    with_plots = not args.no_plots and plots.available() is None
    if not args.no_plots and not with_plots:
        out.print(f"[yellow]{plots.available()}[/yellow]: writing HTML without plots", soft_wrap=True)
    if args.merge:
        for p in args.paths:
            if not Path(p).exists():
                raise SpecError(f"{p!r} does not exist: give the directories (or files) of the reports to merge")
        first_dir = next((Path(p) for p in args.paths if Path(p).is_dir()), Path("."))
        out_dir = Path(args.out) if args.out else first_dir
        merged = render_merge(args.paths, out_dir, "nerva-consistency: merged report", args.markdown, with_plots)
        out.print(f"merged {len(merged.reports)} run report(s) of {len(merged.cells)} cell(s): "
                  f"{merge.totals_line(merged)}", soft_wrap=True)
        for name, runs in merged.missing.items():
            out.print(f"[red]{name}[/red]: {len(runs)} planned run(s) without a report: {'; '.join(runs)}", soft_wrap=True)
        out.print(f"  {out_dir / 'index.html'}\n  {out_dir / 'summary.md'}\n  {out_dir / 'junit.xml'}", soft_wrap=True)
        if merged.red:
            out.print("[red]RED[/red]: " + "; ".join(
                f"{name}: {c['counts']['failed']} failed" for name, c in sorted(merged.cells.items())
                if c["counts"]["failed"] or merged.missing.get(name)))
            return 1
        return 0
    for p in args.paths:
        path = Path(p)
        if not path.is_file():
            raise SpecError(f"report {p!r} is not a file (a directory? use report --merge {p})")
        try:
            report = json.loads(path.read_text())
        except ValueError as e:
            raise SpecError(f"{p!r} is not JSON: {e}") from None
        if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
            schema = report.get("schema") if isinstance(report, dict) else None
            raise SpecError(f"{p!r} is not a run report (schema {schema!r}, expected {REPORT_SCHEMA!r})")
        html_path, png_path = render_run(report, path, Path(args.out) if args.out else path.parent, with_plots)
        out.print(f"{merge.status(report).upper()} {pages.run_name(report)}: {html_path}"
                  + (f", {png_path}" if png_path else ""), soft_wrap=True)
    if args.markdown:
        loaded = merge.load(*args.paths)
        write.append_text(args.markdown, merge.markdown(merge.merge(loaded)) + "\n")
    return 0
