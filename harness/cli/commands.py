"""One function per command (``list``, ``run``, ``check``, ``explore``, ``replay``,
``conventions``); each returns the exit code. Every file is written by harness.reports.write
(whole or not at all); an interrupted command (Ctrl-C, SIGTERM, SIGHUP: harness.cli.signals)
prints and writes what it judged and exits 128 + the signal's number."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from harness.cli import console, signals

LIST_WIDTH = 80
"""The width of ``list``'s table when stdout is not a terminal (rich wraps the cells to fit)."""


def list_(out) -> int:
    import scenarios
    from rich import box
    from rich.table import Table

    from harness.run import plan

    table = Table(title="scenario catalog (check: the dtype/mode variants `nerva-consistency check` runs)",
                  box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    table.add_column("check")
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("model: sizes, layers; loss; description", overflow="fold", ratio=1)
    runs = plan.plan()
    for name, t in scenarios.catalog().items():
        sc = scenarios.from_table(name, t)
        variants = [r.variant for r in runs if r.scenario == name]
        table.add_row(name, "all 4" if len(variants) == 4 else ", ".join(variants), str(sc.steps),
                      f"{t['sizes']}: {t['layers'].replace(';', '; ')}\n[dim]{sc.loss}; {sc.description}[/dim]")
    out.print(table, width=None if out.is_terminal else LIST_WIDTH)  # a terminal: its width; piped: 80
    plugins(out)
    return 0


def plugins(out) -> None:
    """``list``'s installed plug-ins: name, what it is (distribution, version, module hash) and
    whether it can run (nothing is imported); folded to the table's width."""
    import adapters

    width = None if out.is_terminal else LIST_WIDTH
    names = adapters.plugins()
    if not names:
        out.print("plug-in backends: none installed (docs/plugins.md)", width=width)
        return
    out.print("plug-in backends (run only when named in --backends, or with --backends all):", width=width)
    for name in names:
        reason = adapters.why_unavailable(name)
        out.print(f"  {name}: {adapters.provenance(name)}" + (f" - {reason}" if reason else ""), width=width,
                  markup=False, highlight=False, overflow="fold")


def run(args: argparse.Namespace, checked, out, err) -> int:
    """``run``: the table and verdict, then on failure the bundle and the reports asked for
    (--json, --junit). Interrupted: the same for the steps judged (no bundle), exit 128 + the
    signal. A signal while they are written takes effect once they are whole."""
    from harness.run.runner import Interrupted

    scenario, = checked.runs
    try:
        result = console.run_one(scenario, checked.backends, args, out, err)
    except Interrupted as e:
        result = e.result
    with signals.deferred():
        console.print_result(result, out)
        for name, failure in result.failures.items() if getattr(args, "debug", False) else ():
            if failure.details:  # --debug: where a backend raised
                err.print(f"{name}: {failure.details}", markup=False, highlight=False)
        bundle = None
        if not result.passed and not result.interrupted:
            from harness.run.known import shown

            defect = shown(result)
            if defect:
                sc = result.scenario
                _known(out, f"{sc.name} {sc.dtype} {sc.mode}", defect.finding, result)
            bundle = console.save_bundle(result, checked.bundle_dir, out)
        if checked.json:
            console.write_json(result, checked.json, bundle)
        if checked.junit:
            from harness.reports import junit
            from harness.reports.report import to_json

            junit.write([to_json(result, str(bundle) if bundle else None)], str(checked.junit))
    if result.interrupted:
        return signals.exit_code()
    return 0 if result.passed else 1


def _known(out, label: str, finding: str, result) -> None:
    """The ``KNOWN`` line (harness.judge.message.known) of a run that showed a documented defect."""
    from rich.text import Text

    from harness.judge.message import known, of_verdict

    step, tv = result.first_divergence
    line = Text(known(label, finding, of_verdict(step, tv, result.oracle)))
    line.stylize("yellow", 0, len("KNOWN"))
    out.print(line, soft_wrap=True)


@dataclass
class _Done:
    """What ``check`` has judged so far: every run's report (with its ``check`` entry) and the
    labels of the failed runs and of those that showed their known defect."""

    reports: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)

    def counts(self, planned: int) -> dict[str, int]:
        from harness.reports.merge import INTERRUPTED

        statuses = [r["check"]["status"] for r in self.reports]
        return {"runs": planned, "passed": statuses.count("pass"), "failed": len(self.failed),
                "known": len(self.known), INTERRUPTED: statuses.count(INTERRUPTED)}


def check(args: argparse.Namespace, checked, out, err, argv: list[str]) -> int:
    """``check``: the plan (harness.run.plan: the catalog's check scenarios in their variants and
    seeds), or one shard of it; one line per run, full tables only for failures. Writes the
    reports asked for: JSON per run and the cell manifest (--json DIR), JUnit (--junit), and
    with --out all of them plus the HTML page and plots. Interrupted: the runs done, and the
    steps judged of the one in progress, are printed and written like the others (that run's
    report says ``interrupted``, the manifest how far the check got); exit 128 + the signal."""
    import time
    from datetime import datetime, timezone

    from harness.reports import merge
    from harness.run import plan as sharding

    part = sharding.parse_shard(args.shard)
    planned, runs = sharding.shard_plan(args.variants, args.seed, args.add_seed, args.shard)
    out_dir = checked.out
    json_dir = checked.json or (out_dir / "json" if out_dir else None)
    if out_dir and json_dir and merge.clear(json_dir, part):
        out.print(f"removed the reports of an earlier check{f' of shard {part}' if part.count > 1 else ''} "
                  f"from {json_dir}")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    if part.count > 1:
        out.print(f"shard {part}: {len(runs)} of the plan's {len(planned)} run(s)")
    done = _Done()
    stopped = _check_runs(runs, part, args, checked, out, err, json_dir, done)
    counts = done.counts(len(runs))
    if stopped is None:
        out.print(f"{counts['passed']} passed, {len(done.failed)} failed"
                  + (f", {len(done.known)} known defect(s) shown as expected" if done.known else "")
                  + (f": {'; '.join(done.failed)}" if done.failed else ""))
    code = signals.exit_code() if stopped else 1 if done.failed else 0
    with signals.deferred():
        _check_reports(args, checked, out, done.reports, json_dir, part=part, planned=planned, runs=runs, argv=argv,
                       counts=counts, started=started, seconds=time.perf_counter() - clock, exit_code=code,
                       interrupted=stopped)
    return code


def _check_runs(runs: list, part, args: argparse.Namespace, checked, out, err, json_dir: Path | None,
                done: _Done) -> dict | None:
    """``check``'s runs one after the other, each judged, printed and its JSON report written
    (``done`` collects them). Interrupted: the run in progress is printed and written with the
    steps it judged (status ``interrupted``); returns how far the check got (None: it finished)."""
    from datetime import datetime, timezone

    import scenarios
    from harness.reports import merge, write
    from harness.reports.report import to_json
    from harness.run import plan as sharding

    seeds = {n: int(t.get("seed", 0)) for n, t in scenarios.catalog().items()}

    def save(report: dict, r) -> None:
        done.reports.append(report)
        if json_dir:
            write.json_file(json_dir / r.filename(seeds.get(r.scenario)), report)

    for n, r in enumerate(runs):
        run_started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        label = f"{r.scenario} {r.dtype} {r.mode}" + ("" if r.seed == seeds.get(r.scenario) else f" seed {r.seed}")
        try:
            result = console.run_one(sharding.scenario(r), checked.backends, args, out, err)
            with signals.deferred():  # a signal now stops the check once this run's report is written
                status, expected, bundle = _check_one(r, result, label, checked, out)
                if status != "pass":
                    (done.known if status == "known" else done.failed).append(label)
                report = to_json(result, bundle)
                report["check"] = merge.check_entry(status, r, part, expected, bundle, run_started)
                save(report, r)
        except KeyboardInterrupt as e:  # runner.Interrupted carries the steps judged
            partial, in_progress = getattr(e, "result", None), len(done.reports) == n
            if partial is not None:
                console.print_result(partial, out)
                report = to_json(partial)
                report["check"] = merge.check_entry(merge.INTERRUPTED, r, part, None, None, run_started)
                save(report, r)
            at = f"during {label}" if in_progress else f"after {label}"
            out.print(f"[yellow]INTERRUPTED[/yellow] check {at}: {len(done.reports) - (partial is not None)} of "
                      f"{len(runs)} run(s) done, {done.counts(len(runs))['passed']} passed, {len(done.failed)} failed")
            return {"signal": signals.received(), "run": r.label if in_progress else None,
                    "steps_run": partial.steps_run if partial is not None else 0,
                    "steps": sharding.scenario(r).steps if in_progress else None,
                    "runs_done": n + (not in_progress)}
    return None


def _check_one(r, result, label: str, checked, out) -> tuple[str, dict | None, str | None]:
    """One run of ``check`` judged (harness.run.plan.outcome) and printed in one line, a failure
    in full with its bundle: (status, the expected defect's report entry, the bundle)."""
    from harness.run import known as documented
    from harness.run.plan import outcome

    defect = documented.expected(r.scenario, r.dtype, checked.backends)
    expected = defect.entry() if defect else None
    status = outcome(result, defect.backends if defect else None)
    if status == "known":
        _known(out, label, expected["finding"], result)
        return status, expected, None
    if expected:
        out.print(f"[red]expected the known defect[/red] ({', '.join(expected['backends'])}: {expected['finding']}) "
                  f"in {label}; it did not show as expected")
    if status == "pass":
        worst = max((w for v in result.verdicts for t in v.tensors for w in t.worst.values()), default=0.0)
        kinks = sum(v.near_kinks for v in result.verdicts)
        out.print(f"[green]PASS[/green] {label:45s} worst {worst:.3g}  near-kink {kinks}  "
                  f"resyncs {len(result.resyncs)}  oracle {result.oracle or 'none'}  ({result.seconds:.1f} s)")
        return status, expected, None
    console.print_result(result, out)
    return status, expected, str(console.save_bundle(result, checked.bundle_dir, out))


def _check_reports(args: argparse.Namespace, checked, out, reports: list[dict], json_dir: Path | None,
                   **manifest) -> None:
    """``check``'s reports: JUnit (--junit, or in --out), the cell manifest beside the JSON of
    every run, and with --out the HTML page and plots of the merge."""
    from harness.reports import merge
    from harness.reports.report import versions

    out_dir, part = checked.out, manifest["part"]
    junit_path = str(checked.junit) if checked.junit else (str(out_dir / "junit.xml") if out_dir else None)
    if junit_path:
        from harness.reports import junit

        junit.write(reports, junit_path, name=f"nerva-consistency check, shard {part}")
    if json_dir:
        merge.write_manifest(json_dir, shard=part, planned=manifest["planned"], runs=manifest["runs"],
                             argv=manifest["argv"], counts=manifest["counts"], backends=checked.backends,
                             versions=versions(), started=manifest["started"], seconds=manifest["seconds"],
                             exit_code=manifest["exit_code"], interrupted=manifest["interrupted"],
                             options={"variants": args.variants, "seed": args.seed, "add_seed": args.add_seed})
    if out_dir:
        from harness.reports.render import render_merge

        merged = render_merge([json_dir], out_dir, title=f"nerva-consistency check, shard {part}")
        out.print(f"reports: {out_dir / 'index.html'}, {junit_path}, {json_dir}/ ({merge.totals_line(merged)})",
                  soft_wrap=True)


def explore(args: argparse.Namespace, checked, out, err) -> int:
    """``explore``: one line per distinct defect as it is found (with its bundle and how to
    reproduce it), a summary at the end. Exit 1 when a red defect was found; interrupted
    (Ctrl-C, SIGTERM, SIGHUP): 128 + the signal, after the defects found so far."""
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

    database = None
    if checked.database:
        from hypothesis.database import DirectoryBasedExampleDatabase

        database = DirectoryBasedExampleDatabase(str(checked.database))
    saved: list[dict] = []
    so_far: list = []  # the search's statistics and defects after its latest run (what an interrupt keeps)

    def found(defect) -> None:
        saved.append(_found(defect, args, checked, out))

    def search(progress=None):
        def watch(stats, defects) -> None:
            so_far[:] = [stats, list(defects)]
            if progress:
                progress(stats, defects)

        return explore(args.examples, args.seed, backends, progress=watch, database=database,
                       on_failure=found, oracle=args.oracle)

    out.print(f"exploring {args.examples} examples, seed {args.seed}, on {', '.join(backends)}")
    try:
        defects = console.search_with_progress(args, search, err)
    except KeyboardInterrupt:
        out.print(f"[yellow]INTERRUPTED[/yellow] explore: {len(saved)} defect(s) found so far"
                  + (f", bundles in {checked.bundle_dir}" if saved else ""), soft_wrap=True)
        if checked.json and so_far:
            from harness.search.explore import Exploration

            with signals.deferred():
                _explore_json(Exploration(so_far[1], so_far[0]), args, checked, saved, interrupted=True)
        return signals.exit_code()
    stats = defects.stats
    out.print(stats.summary(), soft_wrap=True)
    red = [d for d in defects if d.red]
    if checked.json:
        _explore_json(defects, args, checked, saved, interrupted=False)
    if red:
        out.print(f"[red]{len(red)} distinct defect(s)[/red]; bundles in {checked.bundle_dir}")
        return 1
    out.print(f"[green]no defect[/green] in {stats.examples} example(s) ({stats.seconds:.0f} s)")
    return 0


def _explore_json(defects, args: argparse.Namespace, checked, saved: list[dict], *, interrupted: bool) -> None:
    """The explore report (--json), also of an interrupted search: what it had run and found by
    then, with ``interrupted`` true."""
    from harness.reports import write

    write.json_file(checked.json, defects.to_json(budget=args.examples, seed=args.seed, shard=args.shard,
                                                  backends=checked.backends, defects=saved, interrupted=interrupted))


def _found(defect, args: argparse.Namespace, checked, out) -> dict:
    """A defect explore found, printed as it is found, with its bundle saved and the commands
    that reproduce it; returns its entry in the explore report."""
    from harness.reports.bundle import bundle_path, save
    from harness.reports.report import reproduce_explored

    f = defect.finding
    entry = defect.to_json()
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
            cmds.update(reproduce_explored(str(bundle), args.examples, args.seed, checked.backends, args.oracle,
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
    return entry


def replay(args: argparse.Namespace, checked, out) -> int:
    """Rerun a bundle and say, in one line, which comparison was made and why: the numbers bit
    for bit (same platform and versions as the recording) or the verdict (the platform, or
    versions, differ, or the bundle does not say its platform). Exit 0 when the recording
    reproduced, 1 when it did not; with other backends than recorded nothing is compared and
    the exit code is the run's own (0 pass, 1 fail)."""
    from harness.reports.bundle import describe_verdict, replay, verdict

    result, differences = replay(args.bundle, checked.backends or None, loaded=checked.bundle)
    console.print_result(result, out, console.bundle_commands(checked.bundle[0]))
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


def conventions(args: argparse.Namespace, checked, out) -> int:
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
        from harness.reports import write

        write.json_file(checked.json, rows)
    return 0
