"""``nerva-consistency mutants``: run the mutation corpus and measure what the harness catches.

The corpus lives in the source tree, ``tests/mutants/`` (one module per component kind; each
mutant a small function that patches an imported Nerva module, with its expected verdict and
the catalog scenario that exercises it). For every mutant this module plants the bug, runs the
scenario on all four backends exactly as ``nerva-consistency run`` would (same runner, same
comparator), restores the original code and records:

- ``caught``: the run is red: a backend raised, a tensor diverged (outside the rounding bound of
  the exact value, or of the majority), or a backend held a tensor in another dtype than asked
  (other than the known finding #3, see :mod:`harness.run.findings`);
- ``blamed``: the backends the verdict names (the ones that raised, the first divergence's
  blamed ones, those with a dtype finding); ``blame_right``: exactly the mutated ones;
- ``first_divergence``: (step, tensor, layer) of the first failing tensor, or the pseudo-tensor
  ``raised`` at the step where a backend raised, whichever came first; ``tensor_right``: the
  expected tensor and layer;
- ``worst``: the mutated backends' largest error / bound in the run; for a benign mutant also
  ``baseline_worst`` (the same run without the change) and ``moved`` (the most the change raised
  any step's tensor's worst ratio): the margin by which it stays unflagged.

Summary (over the non-benign mutants): detection rate (caught / all), blame accuracy and
first-tensor accuracy (right / caught), and the false alarms (benign mutants caught). Exit 0 when
every mutant gave exactly its expected verdict (caught or not, blamed, step, tensor, layer),
1 otherwise, 2 on bad input (an unknown ``--only`` name, no corpus). The last lines say how to
rerun the table, and each mutant that was not as expected alone (:func:`reproduction`).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.core.components import BACKENDS
from harness.core.errors import SpecError
from harness.core.keys import Key
from harness.judge.message import of_verdict, where
from harness.reports import write

SCHEMA = "nerva-consistency/mutants/1"


def load_corpus() -> Any:
    """The corpus package (``tests/mutants``), imported as ``mutants``.

    Under pytest it is already imported (tests/ is on sys.path); otherwise it is looked for in
    the checkout the ``harness`` package belongs to (an editable install: the folder that holds
    ``harness/``), then under the working directory (a wheel run from the source tree, as tox
    does)."""
    module = sys.modules.get("mutants")
    if module is not None and hasattr(module, "corpus"):
        return module
    import harness

    here = Path(harness.__file__).resolve().parent.parent / "tests" / "mutants"
    for directory in (here, Path.cwd() / "tests" / "mutants"):
        init = directory / "__init__.py"
        if init.is_file():
            spec = importlib.util.spec_from_file_location("mutants", init, submodule_search_locations=[str(directory)])
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules["mutants"] = module
            spec.loader.exec_module(module)
            return module
    raise SpecError("the mutation corpus (tests/mutants/) is not here: run from a checkout of nerva-consistency")


def select(corpus: list[Any], only: str | None) -> list[Any]:
    """The mutants named by ``only`` (comma-separated names or shell patterns; None: all)."""
    if not only:
        return corpus
    chosen, names = [], [m.name for m in corpus]
    for pattern in (p.strip() for p in only.split(",") if p.strip()):
        hits = [m for m in corpus if fnmatch.fnmatchcase(m.name, pattern) or m.component == pattern]
        if not hits:
            raise SpecError(f"no mutant matches {pattern!r}; `nerva-consistency mutants --list` names them "
                            f"(e.g. {', '.join(names[:3])})")
        chosen += [m for m in hits if m not in chosen]
    return chosen


@dataclass
class Row:
    name: str
    backend: str
    benign: bool
    caught: bool
    blamed: list[str]
    blame_right: bool | None  # None when not caught
    first_divergence: dict | None  # {step, tensor, layer}
    tensor_right: bool | None  # None when not caught
    scenario: str
    seconds: float
    component: str
    expected: dict
    ok: bool  # the verdict is exactly the expected one
    worst: float | None  # the mutated backends' largest error / bound over every judged tensor and
    #                      step (None: a non-finite value, NaN or inf, where the reference is finite)
    baseline_worst: float | None = None  # benign mutants: the same without the change
    moved: float | None = None  # benign mutants: the most any (step, tensor)'s worst ratio rose
    detail: str = ""  # the first divergence's sentence (harness.judge.message), or what raised

    def as_json(self) -> dict:
        return asdict(self)


def verdict(result: Any) -> tuple[bool, list[str], dict | None, str]:
    """(caught, blamed, first divergence, detail) of a run, as defined in the module docstring."""
    from harness.run.findings import classify

    findings = [f for f in classify(result) if f.red]
    caught = bool(findings)
    blamed = sorted({b for f in findings for b in f.backends})
    first, detail = None, ""
    div = result.first_divergence
    raised = sorted(((f.step, b, str(f)) for b, f in result.failures.items()),
                    key=lambda t: -1 if t[0] is None else t[0])
    if raised and (div is None or raised[0][0] is None or raised[0][0] <= div[0]):
        step, backend, message = raised[0]
        first, detail = {"step": step, "tensor": "raised", "layer": None}, f"{backend}: {message}"
    elif div is not None:
        step, tv = div
        first = {"step": step, "tensor": tv.key[0], "layer": tv.key[1]}
        detail = of_verdict(step, tv, result.oracle)
    elif findings:
        detail = findings[0].detail
    return caught, blamed, first, detail


def _ratios(result: Any, backends: Sequence[str]) -> dict[tuple, float]:
    """(step, tensor key) -> the largest error / bound of ``backends`` there."""
    return {(v.step, t.key): max(t.worst.get(b, 0.0) for b in backends) for v in result.steps for t in v.tensors}


_BASELINES: dict[Any, dict[tuple, float]] = {}


def baseline(m: Any, backends: Sequence[str] = BACKENDS) -> dict[tuple, float]:
    """:func:`_ratios` of ``m``'s run without the change (measured once per run)."""
    import scenarios
    from harness.run.runner import run

    key = (m.run, tuple(backends), m.backends)
    if key not in _BASELINES:
        r = m.run
        sc = scenarios.get(r.scenario, dtype=r.dtype, mode=r.mode, steps=r.steps, build=getattr(r, "build", "harness"))
        _BASELINES[key] = _ratios(run(sc, list(backends), oracle=r.oracle, keep_going=True), m.backends)
    return _BASELINES[key]


def run_mutant(m: Any, backends: Sequence[str] = BACKENDS) -> Row:
    """Plant ``m``, run its scenario, restore the code; the row of the table. For a benign
    mutant the unchanged run is measured too (``baseline_worst``: the margin it leaves)."""
    import scenarios
    from harness.run.runner import run

    r = m.run
    sc = scenarios.get(r.scenario, dtype=r.dtype, mode=r.mode, steps=r.steps, build=getattr(r, "build", "harness"))
    start = time.perf_counter()
    with m.applied():
        result = run(sc, list(backends), oracle=r.oracle)
    seconds = time.perf_counter() - start
    caught, blamed, first, detail = verdict(result)
    e = m.expect
    expected = {"caught": e.caught, "blamed": list(m.blamed) if e.caught else [], "step": e.step,
                "tensor": e.tensor, "layer": e.layer}
    blame_right = tensor_right = None
    if caught:
        blame_right = blamed == sorted(m.blamed)
        tensor_right = first is not None and (first["tensor"], first["layer"]) == (e.tensor, e.layer)
    ok = caught == e.caught and (not caught or (bool(blame_right) and first is not None
                                                and (first["step"], first["tensor"], first["layer"]) == e.first))
    ratios = _ratios(result, m.backends)
    worst = max(ratios.values(), default=0.0)
    base = moved = None
    if m.benign:
        before = baseline(m, backends)
        base = max(before.values(), default=0.0)
        moved = max((r_ - before.get(k, 0.0) for k, r_ in ratios.items()), default=0.0)
    g = lambda x: None if x is None or not math.isfinite(x) else float(f"{x:.3g}")  # noqa: E731
    return Row(m.name, m.backend, m.benign, caught, blamed, blame_right, first, tensor_right, str(r),
               round(seconds, 2), m.component, expected, ok, g(worst), g(base), g(moved), detail)


@dataclass
class Summary:
    mutants: int
    benign: int
    caught: int  # of the non-benign
    detection_rate: float
    blame_accuracy: float
    tensor_accuracy: float
    false_alarms: int
    as_expected: int  # rows whose verdict is exactly the expected one
    seconds: float


def summarize(rows: list[Row], seconds: float) -> Summary:
    bugs = [r for r in rows if not r.benign]
    hit = [r for r in bugs if r.caught]

    def share(n: int, d: int) -> float:
        return n / d if d else float("nan")

    return Summary(len(rows), len(rows) - len(bugs), len(hit), share(len(hit), len(bugs)),
                   share(sum(bool(r.blame_right) for r in hit), len(hit)),
                   share(sum(bool(r.tensor_right) for r in hit), len(hit)),
                   sum(r.caught for r in rows if r.benign), sum(r.ok for r in rows), round(seconds, 1))


def _first_text(first: dict | None) -> str:
    """Where the row's first divergence is (``step 0, DW of layer 2``; ``raised`` for an error)."""
    return "-" if first is None else where(first["step"], Key(first["tensor"], first["layer"]).label)


def summary_lines(s: Summary) -> list[str]:
    pct = lambda x: "n/a" if x != x else f"{100 * x:.1f} %"  # noqa: E731
    bugs = s.mutants - s.benign
    return [
        f"detection rate: {pct(s.detection_rate)} ({s.caught} of {bugs} bugs caught)",
        f"blame accuracy: {pct(s.blame_accuracy)} (of the caught)",
        f"first-tensor accuracy: {pct(s.tensor_accuracy)} (of the caught)",
        f"false alarms: {s.false_alarms} of {s.benign} benign changes",
        f"as expected: {s.as_expected} of {s.mutants} mutants; {s.seconds:.0f} s",
    ]


def reproduce(only: str | None) -> list[str]:
    """The command that reruns these mutants (``only``: the ``--only`` given, None: the whole
    corpus) and its tox form."""
    args = ["mutants", *(["--only", only] if only else [])]
    return [shlex.join(["nerva-consistency", *args]), shlex.join(["tox", "-e", "consistency", "--", *args])]


def reproduction(rows: list[Row], only: str | None) -> list[str]:
    """What ``mutants`` prints last: how to rerun the table, and each mutant that did not give its
    expected verdict on its own."""
    lines = ["Reproduce with:", *(f"  {c}" for c in reproduce(only))]
    wrong = [r for r in rows if not r.ok]
    if wrong and (only is None or len(rows) > 1):
        lines.append("Each mutant not as expected, alone:")
        lines += [f"  {reproduce(r.name)[0]}" for r in wrong]
    return lines


def main(args: Any, out: Any, err: Any) -> int:
    """The ``mutants`` subcommand (``args``: list, only, json)."""
    from rich.table import Table

    corpus = load_corpus().corpus()
    chosen = select(corpus, args.only)
    if args.list:
        for m in chosen:
            kind = "benign" if m.benign else "bug"
            out.print(f"{m.name:42s} {m.backend:10s} {kind:6s} {m.run}  {m.doc}", soft_wrap=True, highlight=False)
        return 0
    import adapters

    missing = [b for b in BACKENDS if adapters.why_unavailable(b)]
    if missing:
        raise SpecError(f"the corpus needs all four backends: {'; '.join(adapters.why_unavailable(b) for b in missing)}")
    rows: list[Row] = []
    start = time.perf_counter()
    for b in BACKENDS:  # import the frameworks once, so the first mutant's time is its own
        adapters.load(b).setup()
    err.print(f"frameworks imported in {time.perf_counter() - start:.1f} s", highlight=False)
    for i, m in enumerate(chosen, 1):
        row = run_mutant(m)
        rows.append(row)
        mark = "as expected" if row.ok else "NOT AS EXPECTED"
        err.print(f"[{i}/{len(chosen)}] {m.name}: {'caught' if row.caught else 'not caught'}, "
                  f"{_first_text(row.first_divergence)} ({row.seconds:.1f} s) {mark}", highlight=False, soft_wrap=True)
    summary = summarize(rows, time.perf_counter() - start)
    table = Table(title=f"mutation corpus: {len(rows)} mutants ({summary.benign} benign) on {', '.join(BACKENDS)}")
    for col in ("mutant", "backend", "caught", "blamed", "first divergence", "scenario", "time"):
        table.add_column(col, justify="right" if col == "time" else "left")
    for r in rows:
        caught_text = ("[red]yes[/red]" if r.benign else "yes") if r.caught else ("no" if r.benign else "[red]no[/red]")
        blamed = ",".join(r.blamed) or "-"
        if r.caught and not r.blame_right:
            blamed = f"[red]{blamed}[/red]"
        first = _first_text(r.first_divergence)
        if r.caught and not r.ok:
            first = f"[red]{first}[/red]"
        name = r.name + (" (benign)" if r.benign else "")
        table.add_row(name if r.ok else f"[red]{name}[/red]", r.backend, caught_text, blamed, first, r.scenario,
                      f"{r.seconds:.1f} s")
    out.print(table)
    for line in summary_lines(summary):
        out.print(line, highlight=False)
    for r in rows:
        if not r.ok:
            out.print(f"[red]not as expected[/red]: {r.name}: expected {r.expected}, got caught={r.caught} "
                      f"blamed={r.blamed} first={r.first_divergence} ({r.detail})", soft_wrap=True, highlight=False)
    for line in reproduction(rows, args.only):
        out.print(line, soft_wrap=True, highlight=False, markup=False)
    if args.json:
        doc = {"schema": SCHEMA, "mutants": [r.as_json() for r in rows], "summary": asdict(summary)}
        write.json_file(args.json, doc, allow_nan=False)
    return 0 if all(r.ok for r in rows) else 1


def add_parser(sub: Any) -> None:
    """The ``mutants`` subcommand's arguments (harness/cli/main.py registers it)."""
    p = sub.add_parser("mutants", help="run the mutation corpus (tests/mutants/): detection rate, blame and "
                                       "first-tensor accuracy, false alarms")
    p.add_argument("--only", metavar="NAME", help="comma-separated mutant names, shell patterns or component "
                                                  "kinds (linear, batchnorm, …)")
    p.add_argument("--json", metavar="FILE", help="write one row per mutant and the summary as JSON")
    p.add_argument("--list", action="store_true", help="list the mutants with their scenario and docstring, run nothing")

