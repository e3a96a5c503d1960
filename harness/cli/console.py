"""What the console shows: progress while a run or a search goes on, the table and verdict of a
run, and the repro bundle written on failure."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def consoles():
    from rich.console import Console

    wide = None if sys.stdout.isatty() else 200  # piped or CI output: do not cut names at 80 columns
    return Console(width=wide), Console(stderr=True)


def worst(verdict) -> float:
    return max((w for t in verdict.tensors for w in t.worst.values()), default=0.0)


class LogProgress:
    """Progress in a log (stderr not a terminal): a line as each backend first loads (its
    framework's import is the slow part), after the first step, then one per group of steps (a
    tenth of the run), at most one every 2 s and at least one every 30 s, and after the last."""

    loaded: set[str] = set()  # what this process has loaded already (check: many runs, one import)

    def __init__(self, err, label: str, total: int):
        self.err, self.label, self.total = err, label, total
        self.group = max(1, total // 10)
        self.start = self.last = time.perf_counter()
        self.worst = 0.0

    def line(self, text: str) -> None:
        self.last = time.perf_counter()
        self.err.print(f"{self.label}: {text}", markup=False, highlight=False, soft_wrap=True)

    def status(self, text: str) -> None:
        if text.startswith("loading") and text not in self.loaded:
            self.loaded.add(text)
            self.line(text)

    def step(self, step: int, verdict) -> None:
        self.worst = max(self.worst, worst(verdict))
        done, now = step + 1, time.perf_counter()
        if done in (1, self.total) or now - self.last >= 30 or (done % self.group == 0 and now - self.last >= 2):
            self.line(f"step {step:,} done ({done:,} of {self.total:,}), worst error/bound {self.worst:.3g}, "
                      f"{now - self.start:.0f} s")  # steps numbered from 0, as in every message and plot


def run_one(scenario, backends, args, out, err):
    """One run with progress: a bar on a terminal (it says what loads before step 0), plain
    lines in a log, nothing with --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.run.runner import run

    label = f"{scenario.name} ({scenario.dtype}, {scenario.mode})"
    if args.quiet:
        return run(scenario, backends, keep_going=args.keep_going, oracle=args.oracle)
    if not err.is_terminal:
        log = LogProgress(err, label, scenario.steps)
        return run(scenario, backends, progress=log.step, status=log.status, keep_going=args.keep_going,
                   oracle=args.oracle)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("worst {task.fields[worst]:.3g}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"{label}: starting", total=scenario.steps, worst=0.0)

        def status(text):
            progress.update(task, description=f"{label}: {text}")

        def tick(step, verdict):
            progress.update(task, advance=1, description=label,
                            worst=max(worst(verdict), progress.tasks[0].fields["worst"]))

        return run(scenario, backends, progress=tick, status=status, keep_going=args.keep_going, oracle=args.oracle)


def divergence(result) -> str:
    """The first divergence of a failing run (:mod:`harness.judge.message`), escaped for rich markup."""
    from rich.markup import escape

    from harness.judge.message import of_verdict

    step, tv = result.first_divergence
    return escape(of_verdict(step, tv, result.oracle))


def print_result(result, out, commands: dict[str, str] | None = None) -> None:
    """The table, the first divergence and the verdict; on failure how to reproduce it
    (``commands``: a bundle's own, else the ``run`` command and its tox form). An interrupted
    run: what was judged until then."""
    from rich.table import Table

    from harness.core.keys import Key
    from harness.judge.message import where
    from harness.run.known import known_dtype
    from harness.reports.report import reproduce, summary

    sc = result.scenario
    against = f"against the {result.oracle} oracle, " if result.oracle else ""
    ulps = " · ulps" if result.oracle else ""
    table = Table(title=f"{sc.name}: worst error/bound{ulps} (kink-excused elements), {against}"
                        f"{result.steps_run} step(s), {sc.dtype}, {sc.mode}, seed {sc.seed}")
    table.add_column("tensor")
    for b in result.backends:
        table.add_column(b, justify="right")
    for name, row in summary(result).items():
        cells = []
        for b in result.backends:
            c = row.get(b)
            if c is None:
                cells.append("-")
                continue
            text = f"{c['worst']:.3g}" + (f" · {c['ulps']:.3g}" if "ulps" in c else "") \
                + (f" ({c['kinks']})" if c["kinks"] else "")
            cells.append(f"[red]{text}[/red]" if c["worst"] > 1 else text)
        table.add_row(name, *cells)
    out.print(table)
    out.print(f"oracle: {result.oracle_note}")
    near = sum(v.near_kinks for v in result.verdicts)
    flips = sum(v.flips for v in result.verdicts)
    if near:
        out.print(f"kinks: {near} element(s) near a non-differentiable point, {flips} flipped"
                  + (f"; re-anchored after step(s) {', '.join(map(str, result.resyncs))}" if result.resyncs else ""))
    for b, tensors in result.dtype_mismatches.items():
        known = known_dtype(result, b)
        out.print(f"[yellow]dtype:[/yellow] {b} held {', '.join(tensors)} in another dtype than {sc.dtype}"
                  + (f" - known finding, {known}; not a failure" if known else ""))
    for b, message in result.failures.items():
        out.print(f"[red]{b} failed[/red] at {message}")
    for b, names in result.omitted.items():
        out.print(f"[yellow]not judged for {b}[/yellow]: {', '.join(names)} (it does not provide them)", soft_wrap=True)
    nf = result.nonfinite
    if nf:
        every = set(nf.backends) == set(result.backends)
        out.print(f"[red]non-finite[/red]: {where(nf.step, Key(*nf.key).label)}: "
                  + ", ".join(f"{b} {v!r}" for b, v in nf.values.items())
                  + (" - every backend holds it; agreeing on NaN or Inf is not a pass" if every else ""))
    if result.first_divergence:
        out.print(f"[red]first divergence[/red]: {divergence(result)}")
    if result.interrupted:
        from harness.cli.signals import received

        so_far = "no failure so far" if result.passed else "FAIL so far"
        by = f" ({received()})" if received() else ""
        out.print(f"[yellow]INTERRUPTED[/yellow]{by} {sc.name} after {result.steps_run:,} of {sc.steps:,} step(s) judged: "
                  f"{so_far} ({result.seconds:.1f} s)")
    elif result.passed:
        against = f" with the {result.oracle} oracle" if result.oracle else ""
        out.print(f"[green]PASS[/green] {sc.name}: {', '.join(result.backends)} agree{against} ({result.seconds:.1f} s)")
    else:
        cmd = commands or reproduce(sc, result.backends, result.oracle)
        lines = "\n".join(f"  {v}" for k, v in cmd.items() if k in ("run", "replay", "explore", "pytest", "tox"))
        out.print(f"[red]FAIL[/red] {sc.name}. Reproduce with:\n{lines}", soft_wrap=True)


def save_bundle(result, directory: Path, out) -> Path:
    """Write the failure's bundle; the same failure as an earlier run replaces that one's file."""
    from harness.reports.bundle import bundle_path, save
    from harness.reports.report import components_args

    replaced = bundle_path(result, directory).exists()
    path = save(result, directory)
    how = " (replaced the bundle of the same failure from an earlier run)" if replaced else ""
    replay = shlex.join(["nerva-consistency", "replay", str(path), *components_args()])
    out.print(f"Repro bundle{how}: {path}\n  {replay}", soft_wrap=True)
    return path


def search_with_progress(args: argparse.Namespace, search, err):
    """explore's search with its progress: none (--quiet), a line every tenth of the budget in a
    log, or a bar on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if args.quiet:
        return search()
    if not err.is_terminal:  # a log (CI): a plain line every tenth of the budget
        start, step = time.perf_counter(), max(1, args.examples // 10)
        last = [0]

        def line(stats, found_so_far) -> None:
            if stats.examples >= last[0] + step and stats.shrinking is None:
                last[0] = stats.examples - stats.examples % step
                err.print(f"explore: {stats.examples}/{args.examples} examples, {len(found_so_far)} defect(s), "
                          f"{time.perf_counter() - start:.0f} s", soft_wrap=True)

        return search(line)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("explore", total=args.examples, note="")

        def tick(stats, found_so_far) -> None:
            note = f"{len(found_so_far)} defect(s)"
            if stats.shrinking is not None:
                note += f", shrinking a new one ({stats.shrink_runs} run(s))"
            progress.update(task, completed=stats.examples, note=note)

        return search(tick)


def bundle_commands(meta: dict) -> dict[str, str] | None:
    """A bundle's recorded reproduce commands, when they are not a ``run`` command (explore, pytest)."""
    commands = meta.get("reproduce") if isinstance(meta.get("reproduce"), dict) else {}
    return commands if commands and "run" not in commands else None


def write_json(result, path: Path, bundle: Path | None = None) -> None:
    from harness.reports import write
    from harness.reports.report import to_json

    write.json_file(path, to_json(result, str(bundle) if bundle else None))
