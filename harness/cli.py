"""Command line: ``nerva-consistency`` (identical to ``python -m harness``).

    nerva-consistency list                       the scenario catalog
    nerva-consistency check                      the main job: every catalog scenario marked check
    nerva-consistency run --scenario NAME        one scenario (flags below override its keys)
    nerva-consistency run --layers "ReLU;Softmax" --sizes 8,16,4 …   an ad-hoc run
    nerva-consistency explore --examples 200 --seed 0   Hypothesis searches random networks
    nerva-consistency replay FILE                 rerun a repro bundle: its numbers bit for bit on the
                                                 same platform, else its verdict
    nerva-consistency check --shard 2/4 --junit FILE   one shard of the main job, JUnit XML too
    nerva-consistency report FILE.json [--out DIR]     PNG and HTML of a saved report
    nerva-consistency report --merge DIR [--out DIR]   merge every shard's and cell's reports

Exit codes: 0 all backends agree, 1 an inconsistency (or a backend raised), 2 bad input (one
line on stderr, no traceback). On exit 1 the command that reproduces the run is printed.
``replay``: 0 the recording reproduced (numbers or verdict), 1 it did not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from harness.errors import SpecError

PROG = "nerva-consistency"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise SpecError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Prove that the Nerva backends agree, tensor by tensor.")
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
    return p


AD_HOC_DEFAULTS = {"optimizers": "GradientDescent", "init-weights": None, "loss": "SquaredError",
                   "learning-rate": "0.01", "batch-size": 16, "steps": 10, "dataset": "synthetic"}


def _scenario(args: argparse.Namespace):
    import scenarios

    given = {k: getattr(args, k.replace("-", "_")) for k in
             ("layers", "sizes", "optimizers", "init-weights", "loss", "learning-rate", "batch-size",
              "dataset", "targets", "steps", "seed", "dtype", "mode")}
    given = {k: v for k, v in given.items() if v is not None}
    if args.scenario:
        return scenarios.get(args.scenario, **given)
    missing = [f"--{k}" for k in ("layers", "sizes") if k not in given]
    if missing:
        raise SpecError(f"give --scenario NAME, or an ad-hoc model with {' and '.join(missing)}")
    table = {**AD_HOC_DEFAULTS, **given}
    if table.get("dataset") not in (None, "synthetic", "digits", "digits784") and not Path(table["dataset"]).is_file():
        raise SpecError(f"dataset file {table['dataset']!r} does not exist: give a Nerva .npz file, "
                        "or synthetic, digits or digits784")
    return scenarios.from_table("ad-hoc", table)


def _backends(text: str | None) -> list[str]:
    import adapters

    if text:
        names = [b.strip() for b in text.split(",") if b.strip()]
        for name in names:
            reason = adapters.why_unavailable(name)
            if reason:
                raise SpecError(reason)
        if len(set(names)) != len(names):
            raise SpecError(f"backend listed twice in {text!r}")
    else:
        names = adapters.available()
    if len(names) < 2:
        raise SpecError(f"need at least two backends to compare, have {', '.join(names) or 'none'}: "
                        "install more (pip install 'nerva-consistency[all]' -c constraints.txt)")
    return names


def _console():
    from rich.console import Console

    wide = None if sys.stdout.isatty() else 200  # piped or CI output: do not cut names at 80 columns
    return Console(width=wide), Console(stderr=True)


def _run_one(scenario, backends, args, out, err):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.runner import run

    if args.quiet or not err.is_terminal:  # no bar in logs; the result lines say it all
        return run(scenario, backends, keep_going=args.keep_going, oracle=args.oracle)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("worst {task.fields[worst]:.3g}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"{scenario.name} ({scenario.dtype}, {scenario.mode})", total=scenario.steps, worst=0.0)

        def tick(step, verdict):
            worst = max((w for t in verdict.tensors for w in t.worst.values()), default=0.0)
            progress.update(task, advance=1, worst=max(worst, progress.tasks[0].fields["worst"]))

        return run(scenario, backends, progress=tick, keep_going=args.keep_going, oracle=args.oracle)


def _print_result(result, out, commands: dict[str, str] | None = None) -> None:
    """The table, the first divergence and the verdict; on failure how to reproduce it
    (``commands``: a bundle's own, else the ``run`` command and its tox form)."""
    from rich.table import Table

    from harness.report import reproduce, summary

    sc = result.scenario
    against = f"against the {result.oracle} oracle, " if result.oracle else ""
    ulps = " · ulps" if result.oracle else ""
    table = Table(title=f"{sc.name}: worst error/bound{ulps} (kink-excused elements), {against}"
                        f"{len(result.steps)} step(s), {sc.dtype}, {sc.mode}, seed {sc.seed}")
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
    near = sum(v.near_kinks for v in result.steps)
    flips = sum(v.flips for v in result.steps)
    if near:
        out.print(f"kinks: {near} element(s) near a non-differentiable point, {flips} flipped"
                  + (f"; re-anchored after step(s) {', '.join(map(str, result.resyncs))}" if result.resyncs else ""))
    for b, tensors in result.dtype_mismatches.items():
        out.print(f"[yellow]dtype:[/yellow] {b} held {', '.join(tensors)} in another dtype than {sc.dtype}")
    for b, message in result.failures.items():
        out.print(f"[red]{b} failed[/red] at {message}")
    first = result.first_divergence
    if first:
        step, tv = first
        name = tv.key[0] + ("" if tv.key[1] is None else f" of layer {tv.key[1]}")
        values = ", ".join(f"{b} {v:.9g}" for b, v in (tv.values or {}).items())
        who = ", ".join(tv.blamed) + ("" if tv.majority else " (no majority: cannot tell who is right)")
        out.print(f"[red]first divergence[/red]: step {step}, {name}, element {list(tv.index or ())}: "
                  f"{who} off by {max(tv.worst[b] for b in tv.blamed):.3g}x the rounding bound "
                  f"({'twice ' if not result.oracle else ''}{tv.allowed if result.oracle else (tv.allowed or 0) / 2:.3g} there); values: {values}")
    if result.passed:
        against = f" with the {result.oracle} oracle" if result.oracle else ""
        out.print(f"[green]PASS[/green] {sc.name}: {', '.join(result.backends)} agree{against} ({result.seconds:.1f} s)")
    else:
        cmd = commands or reproduce(sc, result.backends, result.oracle)
        lines = "\n".join(f"  {v}" for k, v in cmd.items() if k in ("run", "replay", "explore", "pytest", "tox"))
        out.print(f"[red]FAIL[/red] {sc.name}. Reproduce with:\n{lines}", soft_wrap=True)


def _save_bundle(result, args, out):
    from harness.repro import save

    path = save(result, args.bundle_dir)
    out.print(f"Repro bundle: {path}\n  nerva-consistency replay {path}", soft_wrap=True)
    return path


def _replay(args: argparse.Namespace, out) -> int:
    """Rerun a bundle and say, in one line, which comparison was made and why: the numbers bit
    for bit (same platform and versions as the recording) or the verdict (the platform, or
    versions, differ, or the bundle does not say its platform). Exit 0 when the recording
    reproduced, 1 when it did not; with other backends than recorded nothing is compared and
    the exit code is the run's own (0 pass, 1 fail)."""
    from harness.repro import describe_verdict, replay, verdict

    backends = _backends(args.backends) if args.backends else None
    result, differences = replay(args.bundle, backends)
    _print_result(result, out, _bundle_commands(args.bundle))
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


def _explore(args: argparse.Namespace, backends: list[str], out, err) -> int:
    """``explore``: one line per distinct defect as it is found (with its bundle and how to
    reproduce it), a summary at the end. Exit 1 when a red defect was found."""
    if args.examples < 1:
        raise SpecError(f"--examples must be at least 1, not {args.examples}")
    if args.seed < 0:
        raise SpecError(f"--seed must be 0 or more, not {args.seed}")
    if args.shard:
        from harness.shard import explore_share, parse_shard

        part = parse_shard(args.shard)
        whole = (args.examples, args.seed)
        args.examples, args.seed = explore_share(args.examples, args.seed, part)
        if args.examples == 0:
            out.print(f"shard {part} of a search of {whole[0]} example(s): nothing to do")
            return 0
        out.print(f"shard {part} of explore --examples {whole[0]} --seed {whole[1]}: {args.examples} example(s) "
                  f"with seed {args.seed} (the same search as explore --examples {args.examples} --seed {args.seed})",
                  soft_wrap=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.explore import explore
    from harness.repro import save
    from harness.report import reproduce_explored

    database = None
    if args.database:
        from hypothesis.database import DirectoryBasedExampleDatabase

        if Path(args.database).exists() and not Path(args.database).is_dir():
            raise SpecError(f"--database {args.database!r} is a file; give a directory (it is created if missing)")
        database = DirectoryBasedExampleDatabase(args.database)
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

            path = save(defect.result, args.bundle_dir, hypothesis=defect.hypothesis_info(), stem=stem,
                        commands=commands)
            entry["bundle"], entry["reproduce"] = str(path), cmds
            lines = [f"  bundle: {path}", f"  replay:  {cmds['replay']}", f"  search:  {cmds['explore']}",
                     f"  tox:     {cmds['tox']}", f"           {cmds['tox_explore']}"]
            if not defect.while_shrinking:
                lines.append(f"  hypothesis: seed {defect.round_seed}" + (f", @reproduce_failure blob {blob}" if blob else ""))
            out.print("\n".join(lines), soft_wrap=True)
        saved.append(entry)

    def search(progress=None):
        return explore(args.examples, args.seed, backends, progress=progress, database=database,
                       on_failure=found, oracle=args.oracle)

    out.print(f"exploring {args.examples} examples, seed {args.seed}, on {', '.join(backends)}")
    if args.quiet:
        defects = search()
    elif not err.is_terminal:  # a log (CI): a plain line every tenth of the budget
        import time

        start, step = time.perf_counter(), max(1, args.examples // 10)
        last = [0]

        def line(stats, found_so_far) -> None:
            if stats.examples >= last[0] + step and stats.shrinking is None:
                last[0] = stats.examples - stats.examples % step
                err.print(f"explore: {stats.examples}/{args.examples} examples, {len(found_so_far)} defect(s), "
                          f"{time.perf_counter() - start:.0f} s", soft_wrap=True)

        defects = search(line)
    else:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[note]}"), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("explore", total=args.examples, note="")

            def tick(stats, found_so_far) -> None:
                note = f"{len(found_so_far)} defect(s)"
                if stats.shrinking is not None:
                    note += f", shrinking a new one ({stats.shrink_runs} run(s))"
                progress.update(task, completed=stats.examples, note=note)

            defects = search(tick)
    stats = defects.stats
    out.print(stats.summary(), soft_wrap=True)
    red = [d for d in defects if d.red]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "schema": "nerva-consistency/explore/1", "examples": stats.examples, "budget": args.examples,
            "seed": args.seed, "shard": args.shard, "backends": backends, "seconds": round(stats.seconds, 1), "rounds": stats.rounds,
            "shrink_runs": stats.shrink_runs, "findings": dict(stats.findings), "known": dict(stats.known),
            "oracles": {(k or "none"): v for k, v in stats.oracles.items()}, "defects": saved,
            "seen_while_shrinking_not_reproduced": [f.detail for f, _ in stats.seen_while_shrinking.values()]},
            indent=1) + "\n")
    if red:
        out.print(f"[red]{len(red)} distinct defect(s)[/red]; bundles in {args.bundle_dir}")
        return 1
    out.print(f"[green]no defect[/green] in {stats.examples} example(s) ({stats.seconds:.0f} s)")
    return 0


def _bundle_commands(path: str) -> dict[str, str] | None:
    """A bundle's recorded reproduce commands, when they are not a ``run`` command (explore, pytest)."""
    from harness.repro import load

    commands = load(path)[0].get("reproduce") or {}
    return commands if "run" not in commands else None


def _write_json(result, path: Path) -> None:
    from harness.report import to_json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(result), indent=1) + "\n")


def _conventions(args: argparse.Namespace, out) -> int:
    from rich.table import Table

    from harness.conventions import measure

    import adapters

    names = _backends(args.backends) if args.backends else adapters.available()
    if not names:
        raise SpecError("no backend is installed (pip install 'nerva-consistency[all]' -c constraints.txt)")
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
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def _check(args: argparse.Namespace, backends: list[str], out, err, argv: list[str]) -> int:
    """``check``: the plan (harness.shard: the catalog's check scenarios in their variants and
    seeds), or one shard of it; one line per run, full tables only for failures. Writes the
    reports asked for: JSON per run and the cell manifest (--json DIR), JUnit (--junit), and
    with --out all of them plus the HTML page and plots."""
    import time
    from datetime import datetime, timezone

    import scenarios
    from harness import merge, shard as sharding
    from harness.report import to_json, versions

    part = sharding.parse_shard(args.shard)
    planned = sharding.plan(args.variants, args.seed, args.add_seed)
    runs = sharding.select(planned, part)
    out_dir = Path(args.out) if args.out else None
    json_dir = Path(args.json) if args.json else (out_dir / "json" if out_dir else None)
    junit_path = args.junit or (str(out_dir / "junit.xml") if out_dir else None)
    if out_dir and json_dir and merge.clear(json_dir):
        out.print(f"removed the reports of an earlier check from {json_dir}")
    seeds = {n: int(t.get("seed", 0)) for n, t in scenarios.catalog().items()}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    if part.count > 1:
        out.print(f"shard {part}: {len(runs)} of the plan's {len(planned)} run(s)")
    failed, known, reports = [], [], []
    for r in runs:
        scenario = scenarios.get(r.scenario, seed=r.seed, dtype=r.dtype, mode=r.mode)
        run_started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result = _run_one(scenario, backends, args, out, err)
        label = f"{r.scenario} {r.dtype} {r.mode}" + ("" if r.seed == seeds.get(r.scenario) else f" seed {r.seed}")
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
                worst = max((w for v in result.steps for t in v.tensors for w in t.worst.values()), default=0.0)
                kinks = sum(v.near_kinks for v in result.steps)
                out.print(f"[green]PASS[/green] {label:45s} worst {worst:.3g}  near-kink {kinks}  "
                          f"resyncs {len(result.resyncs)}  oracle {result.oracle or 'none'}  ({result.seconds:.1f} s)")
                status = "pass"
            else:
                _print_result(result, out)
                bundle = str(_save_bundle(result, args, out))
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
        from harness import junit

        junit.write(reports, junit_path, name=f"nerva-consistency check, shard {part}")
    if json_dir:
        counts = {"runs": len(runs), "passed": len(runs) - len(failed) - len(known), "failed": len(failed),
                  "known": len(known)}
        merge.write_manifest(json_dir, shard=part, planned=planned, runs=runs, argv=argv, counts=counts,
                             backends=backends, versions=versions(), started=started,
                             seconds=time.perf_counter() - clock, exit_code=code,
                             options={"variants": args.variants, "seed": args.seed, "add_seed": args.add_seed})
    if out_dir:
        from harness.render import render_merge

        merged = render_merge([json_dir], out_dir, title=f"nerva-consistency check, shard {part}")
        out.print(f"reports: {out_dir / 'index.html'}, {junit_path}, {json_dir}/ ({merge.totals_line(merged)})",
                  soft_wrap=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        out, err = _console()
        if args.command == "list":
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
        if args.command == "conventions":
            return _conventions(args, out)
        if args.command == "replay":
            return _replay(args, out)
        if args.command == "report":
            from harness.render import report_command

            return report_command(args, out)
        backends = _backends(args.backends)
        if args.command == "explore":
            return _explore(args, backends, out, err)
        if args.command == "run":
            scenario = _scenario(args)
            result = _run_one(scenario, backends, args, out, err)
            if args.json:
                _write_json(result, Path(args.json))
            if args.junit:
                from harness import junit
                from harness.report import to_json

                junit.write([to_json(result)], args.junit)
            _print_result(result, out)
            if not result.passed:
                _save_bundle(result, args, out)
            return 0 if result.passed else 1
        # check: every run of the main job (or one shard of it), one line each; full tables only for failures
        return _check(args, backends, out, err, list(argv) if argv is not None else sys.argv[1:])
    except SpecError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
