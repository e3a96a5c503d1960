"""Command line: ``nerva-consistency`` (identical to ``python -m harness``).

    nerva-consistency list                       the scenario catalog
    nerva-consistency check                      the main job: every catalog scenario marked check
    nerva-consistency run --scenario NAME        one scenario (flags below override its keys)
    nerva-consistency run --layers "ReLU;Softmax" --sizes 8,16,4 …   an ad-hoc run
    nerva-consistency explore --examples 200 --seed 0   Hypothesis searches random networks
    nerva-consistency replay FILE                 rerun a repro bundle: its numbers bit for bit on the
                                                 same platform, else its verdict
    nerva-consistency mutants                     run the mutation corpus (harness/search/mutants.py)
    nerva-consistency check --shard 2/4 --junit FILE   one shard of the main job, JUnit XML too
    nerva-consistency report FILE.json [--out DIR]     PNG and HTML of a saved report
    nerva-consistency report --merge DIR [--out DIR]   merge every shard's and cell's reports

Exit codes: 0 all backends agree, 1 an inconsistency (or a backend raised, or held NaN/Inf),
2 bad input (one line on stderr, no traceback; every input is checked by :mod:`harness.spec.rules`
before any work starts), 3 a bug in the harness itself (one line; ``--debug`` shows the
traceback), 130 interrupted (Ctrl-C: what was judged so far is printed). On exit 1 the command
that reproduces the run is printed. ``replay``: 0 the recording reproduced (numbers or verdict),
1 it did not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from harness.cli import checks
from harness.core.errors import SpecError

PROG = "nerva-consistency"
REPORT = "the nerva-consistency issue tracker"  # where a harness bug is reported
EXIT_BUG, EXIT_INTERRUPTED = 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise SpecError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Prove that the Nerva backends agree, tensor by tensor.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="show the scenario catalog")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--backends", help="comma-separated (default: every installed backend): numpy,torch,jax,tensorflow")
        q.add_argument("--json", metavar="FILE", help="write the JSON report here (check: a directory)")
        q.add_argument("--keep-going", action="store_true", help="run every step even after a mismatch")
        q.add_argument("--bundle-dir", default="nerva-consistency-failures",
                       help="where a failure's repro bundle is written (default: %(default)s)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        q.add_argument("--oracle", choices=("auto", "sympy", "autodiff", "none"), default="auto",
                       help="reference in lockstep mode: exact sympy, float64 autodiff, or none (backends "
                            "compared with each other); auto: sympy when small enough, else autodiff")

    run = sub.add_parser("run", help="run one scenario (named or ad hoc)")
    run.add_argument("--scenario", help="a catalog name (nerva-consistency list)")
    run.add_argument("--layers", help='Nerva layer specs, e.g. "ReLU;BatchNormalization;Softmax"')
    run.add_argument("--sizes", help="input width, then each linear layer's width, e.g. 784,1024,10")
    run.add_argument("--optimizers", help='one per layer, e.g. "Momentum(0.9);GradientDescent"')
    run.add_argument("--init-weights", help="one per linear layer, e.g. XavierNormal,HeNormal")
    run.add_argument("--loss", help="SquaredError, CrossEntropy, SoftmaxCrossEntropy, LogisticCrossEntropy, "
                                    "NegativeLogLikelihood or AbsoluteError")
    run.add_argument("--learning-rate", help="a number or Constant(number)")
    run.add_argument("--batch-size", type=int)
    run.add_argument("--dataset", help="synthetic (default), digits, digits784 or a Nerva .npz file")
    run.add_argument("--targets", choices=("onehot", "soft", "real"), help="synthetic targets (default onehot)")
    run.add_argument("--steps", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--dtype", choices=("float32", "float64"))
    run.add_argument("--mode", choices=("trajectory", "lockstep"))
    common(run)
    run.add_argument("--junit", metavar="FILE", help="write JUnit XML here (a test case per backend)")

    check = sub.add_parser("check", help="the main job: every catalog scenario marked check = true")
    check.add_argument("--seed", type=int, help="override every scenario's seed")
    common(check)
    check.add_argument("--add-seed", type=int, action="append", default=[], metavar="SEED",
                       help="also run every scenario with this seed (repeatable; the nightly adds that night's)")
    check.add_argument("--variants", choices=("catalog", "all"), default="catalog",
                       help="the dtype/mode pairs: each scenario's catalog variants (default), or all four")
    check.add_argument("--shard", metavar="K/N", help="run only the K-th of N disjoint parts of the plan "
                                                     "(deterministic; the N parts together are the whole plan)")
    check.add_argument("--junit", metavar="FILE", help="write JUnit XML here (a test case per scenario, "
                                                      "variant, seed and backend)")
    check.add_argument("--out", metavar="DIR", help="write every report here, replacing an earlier check's: json/ "
                                                   "(one per run and the cell manifest), junit.xml, index.html and "
                                                   "plots/, summary.md")

    exp = sub.add_parser("explore", help="search random networks and adversarial inputs for defects (Hypothesis)")
    exp.add_argument("--examples", type=int, default=200, help="examples to run, shrinking not counted (default %(default)s)")
    exp.add_argument("--seed", type=int, default=0, help="the search's seed: the same seed, examples and backends "
                                                        "give the same search (default %(default)s)")
    exp.add_argument("--database", metavar="DIR", help="a Hypothesis example database: failures stored there are "
                                                      "tried first, new ones saved (default: none, so a seed alone "
                                                      "decides the search)")
    exp.add_argument("--json", metavar="FILE", help="write the defects and statistics as JSON")
    exp.add_argument("--backends", help="comma-separated (default: every installed backend)")
    exp.add_argument("--oracle", choices=("auto", "sympy", "autodiff", "none"), default="auto",
                     help="reference for the lockstep examples (default auto)")
    exp.add_argument("--bundle-dir", default="nerva-consistency-failures",
                     help="where each distinct defect's repro bundle is written (default: %(default)s)")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.add_argument("--shard", metavar="K/N", help="run the K-th of N parts of the search: a 1/N share of "
                                                   "the examples with a seed of its own")

    rep = sub.add_parser("replay", help="rerun a repro bundle (no RNG) and compare with the recording: the numbers "
                                        "bit for bit on the same platform and versions, else the verdict "
                                        "(exit 0 reproduced, 1 not)")
    rep.add_argument("bundle", help="a .npz bundle written by a failing run or explore")
    rep.add_argument("--backends", help="rerun on other backends than recorded (nothing is then compared)")
    rep.add_argument("--quiet", action="store_true")

    rpt = sub.add_parser("report", help="render saved JSON reports: PNG plots and a self-contained HTML page; "
                                        "--merge: combine every shard's and cell's reports into one summary")
    rpt.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                     help="a run's JSON report, or with --merge directories (searched recursively) and files")
    rpt.add_argument("--merge", action="store_true", help="merge: totals, cells, failing scenarios and backends, "
                                                         "findings deduplicated (exit 1 when anything is red)")
    rpt.add_argument("--out", metavar="DIR", help="where to write (default: beside the report; with --merge "
                                                 "the first directory given)")
    rpt.add_argument("--markdown", metavar="FILE", help="also append the summary as Markdown here "
                                                       "(e.g. \"$GITHUB_STEP_SUMMARY\")")
    rpt.add_argument("--no-plots", action="store_true", help="HTML without plots (no matplotlib needed)")

    conv = sub.add_parser("conventions", help="each backend's derivative exactly at each kink, beside the one-sided limits")
    conv.add_argument("--backends", help="comma-separated (default: every installed backend)")
    conv.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    conv.add_argument("--json", metavar="FILE", help="write the table as JSON")

    from harness.search.mutants import add_parser as add_mutants_parser

    add_mutants_parser(sub)
    for q in sub.choices.values():  # --debug after the subcommand too (SUPPRESS: keep one given before it)
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an internal error")
    return p


def _console():
    from rich.console import Console

    wide = None if sys.stdout.isatty() else 200  # piped or CI output: do not cut names at 80 columns
    return Console(width=wide), Console(stderr=True)


def _worst(verdict) -> float:
    return max((w for t in verdict.tensors for w in t.worst.values()), default=0.0)


class _LogProgress:
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
        self.worst = max(self.worst, _worst(verdict))
        done, now = step + 1, time.perf_counter()
        if done in (1, self.total) or now - self.last >= 30 or (done % self.group == 0 and now - self.last >= 2):
            self.line(f"step {done:,}/{self.total:,}, worst error/bound {self.worst:.3g}, {now - self.start:.0f} s")


def _run_one(scenario, backends, args, out, err):
    """One run with progress: a bar on a terminal (it says what loads before step 0), plain
    lines in a log, nothing with --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.run.runner import run

    label = f"{scenario.name} ({scenario.dtype}, {scenario.mode})"
    if args.quiet:
        return run(scenario, backends, keep_going=args.keep_going, oracle=args.oracle)
    if not err.is_terminal:
        log = _LogProgress(err, label, scenario.steps)
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
                            worst=max(_worst(verdict), progress.tasks[0].fields["worst"]))

        return run(scenario, backends, progress=tick, status=status, keep_going=args.keep_going, oracle=args.oracle)


def _print_result(result, out, commands: dict[str, str] | None = None) -> None:
    """The table, the first divergence and the verdict; on failure how to reproduce it
    (``commands``: a bundle's own, else the ``run`` command and its tox form). An interrupted
    run: what was judged until then."""
    from rich.table import Table

    from harness.run.findings import known_dtype
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
    nf = result.nonfinite
    if nf:
        name = nf.key[0] + ("" if nf.key[1] is None else f" of layer {nf.key[1]}")
        every = set(nf.backends) == set(result.backends)
        out.print(f"[red]non-finite[/red]: step {nf.step}, {name}: "
                  + ", ".join(f"{b} {v!r}" for b, v in nf.values.items())
                  + (" - every backend holds it; agreeing on NaN or Inf is not a pass" if every else ""))
    first = result.first_divergence
    if first:
        step, tv = first
        name = tv.key[0] + ("" if tv.key[1] is None else f" of layer {tv.key[1]}")
        values = ", ".join(f"{b} {v:.9g}" for b, v in (tv.values or {}).items())
        who = ", ".join(tv.blamed) + ("" if tv.majority else " (no majority: cannot tell who is right)")
        out.print(f"[red]first divergence[/red]: step {step}, {name}, element {list(tv.index or ())}: "
                  f"{who} off by {max(tv.worst[b] for b in tv.blamed):.3g}x the rounding bound "
                  f"({'twice ' if not result.oracle else ''}{tv.allowed if result.oracle else (tv.allowed or 0) / 2:.3g} there); values: {values}")
    if result.interrupted:
        so_far = "no failure so far" if result.passed else "FAIL so far"
        out.print(f"[yellow]INTERRUPTED[/yellow] {sc.name} after {result.steps_run:,} of {sc.steps:,} step(s) judged: "
                  f"{so_far} ({result.seconds:.1f} s)")
    elif result.passed:
        against = f" with the {result.oracle} oracle" if result.oracle else ""
        out.print(f"[green]PASS[/green] {sc.name}: {', '.join(result.backends)} agree{against} ({result.seconds:.1f} s)")
    else:
        cmd = commands or reproduce(sc, result.backends, result.oracle)
        lines = "\n".join(f"  {v}" for k, v in cmd.items() if k in ("run", "replay", "explore", "pytest", "tox"))
        out.print(f"[red]FAIL[/red] {sc.name}. Reproduce with:\n{lines}", soft_wrap=True)


def _save_bundle(result, directory: Path, out) -> Path:
    """Write the failure's bundle; the same failure as an earlier run replaces that one's file."""
    from harness.reports.bundle import bundle_path, save

    replaced = bundle_path(result, directory).exists()
    path = save(result, directory)
    how = " (replaced the bundle of the same failure from an earlier run)" if replaced else ""
    out.print(f"Repro bundle{how}: {path}\n  nerva-consistency replay {path}", soft_wrap=True)
    return path


def _replay(args: argparse.Namespace, checked, out) -> int:
    """Rerun a bundle and say, in one line, which comparison was made and why: the numbers bit
    for bit (same platform and versions as the recording) or the verdict (the platform, or
    versions, differ, or the bundle does not say its platform). Exit 0 when the recording
    reproduced, 1 when it did not; with other backends than recorded nothing is compared and
    the exit code is the run's own (0 pass, 1 fail)."""
    from harness.reports.bundle import describe_verdict, replay, verdict

    result, differences = replay(args.bundle, checked.backends or None, loaded=checked.bundle)
    _print_result(result, out, _bundle_commands(checked.bundle[0]))
    if differences.compared is None:
        out.print(f"[yellow]replay: nothing compared[/yellow] (other backends than the recording's: "
                  f"{', '.join(result.backends)}); the exit code is this run's own verdict", soft_wrap=True)
        return 0 if result.passed else 1
    why = "; ".join(differences.reasons) or "same platform and versions as the recording"
    how = f"compared the {'numbers bit for bit' if differences.compared == 'numbers' else 'verdict, not the numbers'} ({why})"
    if differences.reproduced:
        what = "the same numbers" if differences.compared == "numbers" else f"the same verdict, {describe_verdict(verdict(result))}"
        out.print(f"[green]replay reproduced the recording[/green]: {what}; {how}", soft_wrap=True)
    else:
        out.print(f"[red]replay differs from the recording[/red]: {'; '.join(differences)}; {how}", soft_wrap=True)
    for note in differences.notes:  # kink events that differ; after numbers that differ: the verdict
        out.print(f"  note: {note}", soft_wrap=True)
    return 0 if differences.reproduced else 1


def _explore(args: argparse.Namespace, checked, out, err) -> int:
    """``explore``: one line per distinct defect as it is found (with its bundle and how to
    reproduce it), a summary at the end. Exit 1 when a red defect was found; 130 on Ctrl-C,
    after the defects found so far."""
    backends = checked.backends
    if args.shard:
        from harness.run.plan import explore_share, parse_shard

        part = parse_shard(args.shard)
        whole = (args.examples, args.seed)
        args.examples, args.seed = explore_share(args.examples, args.seed, part)
        if args.examples == 0:
            out.print(f"shard {part} of a search of {whole[0]} example(s): nothing to do")
            return 0
        out.print(f"shard {part} of explore --examples {whole[0]} --seed {whole[1]}: {args.examples} example(s) "
                  f"with seed {args.seed} (the same search as explore --examples {args.examples} --seed {args.seed})",
                  soft_wrap=True)

    from harness.search.explore import explore
    from harness.reports.bundle import bundle_path, save
    from harness.reports.report import reproduce_explored

    database = None
    if checked.database:
        from hypothesis.database import DirectoryBasedExampleDatabase

        database = DirectoryBasedExampleDatabase(str(checked.database))
    saved: list[dict] = []

    def found(defect) -> None:
        f = defect.finding
        entry = {"class": f.cls, "backends": list(f.backends), "tensor": f.tensor, "layer_kind": f.layer_kind,
                 "detail": f.detail, "count": defect.count, "found_after": defect.found_after,
                 "size": defect.example.size._asdict(), "bundle": None, "reproduce": None}
        where = f"{f.tensor or ''}{f' of a {f.layer_kind} layer' if f.layer_kind else ''}"
        how = (f"seen while shrinking another defect (not shrunk itself), size {defect.example.size}"
               if defect.while_shrinking else
               f"after {defect.found_after} example(s), shrunk to {defect.example.size} in {defect.shrink_runs} run(s)")
        out.print(f"[red]{f.cls}[/red] in {'/'.join(f.backends)}: {where} {how}", soft_wrap=True)
        out.print(f"  {f.detail}", soft_wrap=True)
        if defect.result is not None and defect.result.inputs is not None:
            stem = "explore-" + "-".join(str(x) for x in (f.cls, "+".join(f.backends), f.tensor, f.layer_kind) if x)
            blob = defect.blob.decode("ascii") if defect.blob else None
            cmds: dict[str, str] = {}

            def commands(bundle: Path) -> dict[str, str]:  # they name the bundle: known once it has a path
                cmds.update(reproduce_explored(str(bundle), args.examples, args.seed, backends, args.oracle,
                                               None if defect.while_shrinking else defect.round_seed, blob))
                return cmds

            replaced = bundle_path(defect.result, checked.bundle_dir, stem).exists()
            path = save(defect.result, checked.bundle_dir, hypothesis=defect.hypothesis_info(), stem=stem,
                        commands=commands)
            entry["bundle"], entry["reproduce"] = str(path), cmds
            how = " (replaced the bundle of the same defect and example from an earlier search)" if replaced else ""
            lines = [f"  bundle{how}: {path}", f"  replay:  {cmds['replay']}", f"  search:  {cmds['explore']}",
                     f"  tox:     {cmds['tox']}", f"           {cmds['tox_explore']}"]
            if not defect.while_shrinking:
                lines.append(f"  hypothesis: seed {defect.round_seed}" + (f", @reproduce_failure blob {blob}" if blob else ""))
            out.print("\n".join(lines), soft_wrap=True)
        saved.append(entry)

    def search(progress=None):
        return explore(args.examples, args.seed, backends, progress=progress, database=database,
                       on_failure=found, oracle=args.oracle)

    out.print(f"exploring {args.examples} examples, seed {args.seed}, on {', '.join(backends)}")
    try:
        defects = _search(args, search, err)
    except KeyboardInterrupt:
        out.print(f"[yellow]INTERRUPTED[/yellow] explore: {len(saved)} defect(s) found so far"
                  + (f", bundles in {checked.bundle_dir}" if saved else ""), soft_wrap=True)
        return EXIT_INTERRUPTED
    stats = defects.stats
    out.print(stats.summary(), soft_wrap=True)
    red = [d for d in defects if d.red]
    if checked.json:
        checked.json.parent.mkdir(parents=True, exist_ok=True)
        checked.json.write_text(json.dumps({
            "schema": "nerva-consistency/explore/1", "examples": stats.examples, "budget": args.examples,
            "seed": args.seed, "shard": args.shard, "backends": backends, "seconds": round(stats.seconds, 1), "rounds": stats.rounds,
            "shrink_runs": stats.shrink_runs, "findings": dict(stats.findings), "known": dict(stats.known),
            "oracles": {(k or "none"): v for k, v in stats.oracles.items()}, "defects": saved,
            "seen_while_shrinking_not_reproduced": [f.detail for f, _ in stats.seen_while_shrinking.values()]},
            indent=1) + "\n")
    if red:
        out.print(f"[red]{len(red)} distinct defect(s)[/red]; bundles in {checked.bundle_dir}")
        return 1
    out.print(f"[green]no defect[/green] in {stats.examples} example(s) ({stats.seconds:.0f} s)")
    return 0


def _search(args: argparse.Namespace, search, err):
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


def _bundle_commands(meta: dict) -> dict[str, str] | None:
    """A bundle's recorded reproduce commands, when they are not a ``run`` command (explore, pytest)."""
    commands = meta.get("reproduce") if isinstance(meta.get("reproduce"), dict) else {}
    return commands if commands and "run" not in commands else None


def _write_json(result, path: Path) -> None:
    from harness.reports.report import to_json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(result), indent=1) + "\n")


def _conventions(args: argparse.Namespace, checked, out) -> int:
    from rich.table import Table

    from harness.run.conventions import measure

    names = checked.backends
    rows = measure(names, args.dtype)
    table = Table(title=f"derivatives at the kinks ({args.dtype}): one-sided limits (exact) and each backend's value")
    for col in ("kink", "left", "right", *names):
        table.add_column(col, justify="left" if col == "kink" else "right")
    for row in rows:
        cells = []
        for b in names:
            v = row["backends"][b]
            if isinstance(v, str):
                cells.append(f"[red]{v}[/red]")
            else:
                lo, hi = sorted((row["left"], row["right"]))
                same = lambda a, b: abs(a - b) <= 1e-6 * max(abs(b), 1e-30)  # noqa: E731 (float32 vs exact)
                side = "= left" if same(v, row["left"]) else "= right" if same(v, row["right"]) else \
                    "between" if lo < v < hi else "outside"
                cells.append(f"{v:g} ({side})")
        table.add_row(row["kink"], f"{row['left']:g}", f"{row['right']:g}", *cells)
    out.print(table)
    out.print("Conventions are reported, not failed: at a kink any value between the one-sided limits is defensible.")
    if checked.json:
        checked.json.parent.mkdir(parents=True, exist_ok=True)
        checked.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def _list(out) -> int:
    import scenarios
    from rich.table import Table

    table = Table(title="scenario catalog (check: the dtype/mode variants `nerva-consistency check` runs)")
    for col in ("name", "check", "model", "loss", "steps", "description"):
        table.add_column(col)
    jobs = scenarios.main_job()
    for name, t in scenarios.catalog().items():
        sc = scenarios.from_table(name, t)
        variants = [f"{d}/{m}" for n, d, m in jobs if n == name]
        table.add_row(name, "all 4" if len(variants) == 4 else ", ".join(variants),
                      f"{t['sizes']}: {t['layers']}", sc.loss, str(sc.steps), sc.description)
    out.print(table)
    return 0


def _run(args: argparse.Namespace, checked, out, err) -> int:
    """``run``: the table and verdict; on failure the bundle. Ctrl-C: what was judged, exit 130."""
    from harness.run.runner import Interrupted

    scenario, = checked.runs
    try:
        result = _run_one(scenario, checked.backends, args, out, err)
    except Interrupted as e:
        result = e.result
    if checked.json:
        _write_json(result, checked.json)
    if checked.junit:
        from harness.reports import junit
        from harness.reports.report import to_json

        junit.write([to_json(result)], str(checked.junit))
    _print_result(result, out)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if not result.passed:
        _save_bundle(result, checked.bundle_dir, out)
    return 0 if result.passed else 1


def _check(args: argparse.Namespace, checked, out, err, argv: list[str]) -> int:
    """``check``: the plan (harness.run.plan: the catalog's check scenarios in their variants and
    seeds), or one shard of it; one line per run, full tables only for failures. Writes the
    reports asked for: JSON per run and the cell manifest (--json DIR), JUnit (--junit), and
    with --out all of them plus the HTML page and plots. Ctrl-C: what was judged, exit 130."""
    import time
    from datetime import datetime, timezone

    import scenarios
    from harness.reports import merge
    from harness.run import plan as sharding
    from harness.reports.report import to_json, versions
    from harness.run.runner import Interrupted

    backends = checked.backends
    part = sharding.parse_shard(args.shard)
    planned = sharding.plan(args.variants, args.seed, args.add_seed)
    runs = sharding.select(planned, part)
    out_dir = checked.out
    json_dir = checked.json or (out_dir / "json" if out_dir else None)
    junit_path = str(checked.junit) if checked.junit else (str(out_dir / "junit.xml") if out_dir else None)
    if out_dir and json_dir and merge.clear(json_dir):
        out.print(f"removed the reports of an earlier check from {json_dir}")
    seeds = {n: int(t.get("seed", 0)) for n, t in scenarios.catalog().items()}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    if part.count > 1:
        out.print(f"shard {part}: {len(runs)} of the plan's {len(planned)} run(s)")
    failed, known, reports = [], [], []
    for n, r in enumerate(runs):
        scenario = scenarios.get(r.scenario, seed=r.seed, dtype=r.dtype, mode=r.mode)
        run_started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        label = f"{r.scenario} {r.dtype} {r.mode}" + ("" if r.seed == seeds.get(r.scenario) else f" seed {r.seed}")
        try:
            result = _run_one(scenario, backends, args, out, err)
        except Interrupted as e:
            _print_result(e.result, out)
            out.print(f"[yellow]INTERRUPTED[/yellow] check during {label}: {n} of {len(runs)} run(s) done, "
                      f"{n - len(failed) - len(known)} passed, {len(failed)} failed")
            return EXIT_INTERRUPTED
        expected = scenarios.known_defect(r.scenario, r.dtype)
        if expected and not set(expected["backends"]) <= set(backends):
            expected = None  # the defective backend is not in this run
        status, bundle = None, None
        if expected:
            first = result.first_divergence
            blamed = sorted(first[1].blamed) if first else []
            if not result.failures and blamed == sorted(expected["backends"]):
                step, tv = first
                out.print(f"[yellow]KNOWN[/yellow] {label:44s} {', '.join(blamed)} outside the bound from step {step}, "
                          f"{tv.key[0]}{tv.key[1] or ''} ({tv.worst[blamed[0]]:.3g}x): {expected['finding']}")
                known.append(label)
                status = "known"
            else:
                out.print(f"[red]expected the known defect[/red] ({', '.join(expected['backends'])}: {expected['finding']}) "
                          f"in {label}; it did not show as expected")
        if status is None:
            if result.passed and not expected:
                worst = max((w for v in result.verdicts for t in v.tensors for w in t.worst.values()), default=0.0)
                kinks = sum(v.near_kinks for v in result.verdicts)
                out.print(f"[green]PASS[/green] {label:45s} worst {worst:.3g}  near-kink {kinks}  "
                          f"resyncs {len(result.resyncs)}  oracle {result.oracle or 'none'}  ({result.seconds:.1f} s)")
                status = "pass"
            else:
                _print_result(result, out)
                bundle = str(_save_bundle(result, checked.bundle_dir, out))
                failed.append(label)
                status = "known-missing" if expected else "fail"
        report = to_json(result)
        report["check"] = merge.check_entry(status, r, part, expected, bundle, run_started)
        reports.append(report)
        if json_dir:
            path = json_dir / r.filename(seeds.get(r.scenario))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1) + "\n")
    out.print(f"{len(runs) - len(failed) - len(known)} passed, {len(failed)} failed"
              + (f", {len(known)} known defect(s) shown as expected" if known else "")
              + (f": {'; '.join(failed)}" if failed else ""))
    code = 1 if failed else 0
    if junit_path:
        from harness.reports import junit

        junit.write(reports, junit_path, name=f"nerva-consistency check, shard {part}")
    if json_dir:
        counts = {"runs": len(runs), "passed": len(runs) - len(failed) - len(known), "failed": len(failed),
                  "known": len(known)}
        merge.write_manifest(json_dir, shard=part, planned=planned, runs=runs, argv=argv, counts=counts,
                             backends=backends, versions=versions(), started=started,
                             seconds=time.perf_counter() - clock, exit_code=code,
                             options={"variants": args.variants, "seed": args.seed, "add_seed": args.add_seed})
    if out_dir:
        from harness.reports.render import render_merge

        merged = render_merge([json_dir], out_dir, title=f"nerva-consistency check, shard {part}")
        out.print(f"reports: {out_dir / 'index.html'}, {junit_path}, {json_dir}/ ({merge.totals_line(merged)})",
                  soft_wrap=True)
    return code


def _internal_error(e: BaseException, debug: bool) -> int:
    """An exception below the validation layer is a harness bug: one line that says so and where
    it was raised (``--debug``: the traceback first). Exit 3."""
    if debug:
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    text = " ".join(str(e).split())[:300]
    print(f"{PROG}: internal error: {type(e).__name__}{': ' + text if text else ''}{where}. This is a bug in "
          f"nerva-consistency, not in your input: please report it to {REPORT} with the command line"
          + ("" if debug else " and what --debug prints"), file=sys.stderr)
    return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Every input is checked first (:func:`harness.cli.checks.command`); bad
    input is one line and exit 2, before any work starts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        out, err = _console()
        if args.command == "list":
            return _list(out)
        checked = checks.command(args)
        if args.command == "conventions":
            return _conventions(args, checked, out)
        if args.command == "replay":
            return _replay(args, checked, out)
        if args.command == "report":
            from harness.reports.render import report_command

            return report_command(args, out)
        if args.command == "mutants":
            from harness.search.mutants import main as mutants

            return mutants(args, out, err)
        if args.command == "explore":
            return _explore(args, checked, out, err)
        if args.command == "run":
            return _run(args, checked, out, err)
        return _check(args, checked, out, err, argv)
    except SpecError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (… | head): nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:  # below the validation layer: a harness bug
        return _internal_error(e, debug)
