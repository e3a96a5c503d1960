"""Speed of `explore`: examples per second, and where an example's time goes.

Each run is a fresh process (a second search in the same process would find every framework
imported and JAX's executables for the drawn shapes compiled) that runs
``nerva-consistency explore --examples N --seed S --quiet --json ...`` through the command line's
own entry point, with the functions of each phase wrapped to add up their wall time:

- drawing: Hypothesis and the strategy (everything outside the property), of it the float64
  dry run (autodiff) that checks a drawn example stays in range;
- framework imports (each adapter's ``setup``, which imports its framework on first use);
- building: each backend's and the oracle's ``build`` (loading the drawn state);
- stepping: each backend's traced steps, and the oracle's; JAX's tracing, lowering and XLA
  compiles (its monitoring events) happen inside the steps and builds and are shown apart;
- bound and comparison (on the judge thread, overlapped with the next step's backends);
- findings (``classify``), the float64 reruns of float32 findings and the known defects'
  counterfactual runs (whose own phases are counted in the rows above too), the JSON report.

Where a tree keeps JAX's executables on disk (harness.core.process.jax_compilation_cache), a run
after the first loads them; ``--cold`` gives every run an empty cache (a first run on a machine).
``--trees A,B`` runs the same search from several source trees (e.g. a ``git worktree`` of the
commit before a change and the current one), alternating, ``--repeat`` times each; runs on a
shared machine are noisy, so alternate and compare the best. ``--record DIR`` saves, per tree and
run, every example's fingerprint, findings and per-step verdicts (worst ratios, bounds at the
worst element, blamed backends, the element), and ``--compare A.json B.json`` prints where two
records differ (ratios to 1e-9 relative, bounds to 1e-12) - the same search must give the same
examples and verdicts. With ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1`` set:

    python benchmarks/bench_explore.py --trees /work/wt-base,. --repeat 3 --record /tmp/rec
    python benchmarks/bench_explore.py --compare /tmp/rec/0-0.json /tmp/rec/1-0.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]

# phase -> (module, attribute path, thread); the wrapped function's time is added to the phase.
# A "{name}" phase is split by the adapter's name (the instance the method is called on).
PHASES = [
    ("drawing: of it the float64 dry run", "scenarios.strategies", "_dry_run", "main"),
    ("framework imports (adapter setup)", "adapters.numpy_adapter", "NumpyAdapter.setup", "main"),
    ("framework imports (adapter setup)", "adapters.torch_adapter", "TorchAdapter.setup", "main"),
    ("framework imports (adapter setup)", "adapters.jax_adapter", "JaxAdapter.setup", "main"),
    ("framework imports (adapter setup)", "adapters.tensorflow_adapter", "TensorflowAdapter.setup", "main"),
    ("build {name}", "adapters.nerva_driver", "NervaAdapter.build", "main"),
    ("build oracle sympy", "adapters.sympy_oracle", "SympyOracle.build", "main"),
    ("build oracle autodiff", "adapters.autodiff_oracle", "AutodiffOracle.build", "main"),
    ("step {name}", "adapters.nerva_driver", "NervaAdapter.step", "main"),
    ("step oracle sympy", "adapters.sympy_oracle", "SympyOracle.step", "main"),
    ("step oracle autodiff", "adapters.autodiff_oracle", "AutodiffOracle.step", "main"),
    ("kink scan, contract checks", "harness.run.runner", "scan_kinks", "main"),
    ("kink scan, contract checks", "harness.run.contract", "check", "main"),
    ("bound", "harness.run.runner", "step_bounds", "judge"),
    ("comparison (reference, judgement)", "harness.run.runner", "reference_trace", "judge"),
    ("comparison (reference, judgement)", "harness.run.runner", "judge", "judge"),
    ("comparison (reference, judgement)", "harness.run.runner", "consensus", "judge"),
    ("comparison (reference, judgement)", "harness.run.runner", "_pairwise_spread", "judge"),
    ("findings (classify)", "harness.search.evaluate", "classify", "main"),
    ("reruns: float64 and counterfactuals", "harness.search.evaluate", "unstable", "main"),
    ("reruns: float64 and counterfactuals", "harness.search.evaluate", "_explain", "main"),
    ("reports (JSON)", "harness.reports.write", "json_file", "main"),
]
JAX_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "JAX tracing",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "JAX lowering",
              "/jax/core/compile/backend_compile_duration": "JAX XLA compiles"}


def _wrap(spent: dict, calls: dict, phase: str, module: str, path: str) -> None:
    import importlib

    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    f = getattr(owner, name, None)
    if f is None:  # a tree without this function: the phase is not measured there
        return
    per_name = "{name}" in phase
    depth = [0]

    def wrapper(*args, **kwargs):
        key = phase.format(name=getattr(args[0], "name", "?")) if per_name else phase
        depth[0] += 1
        start = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:  # a recursive call (evaluate inside _explain) counted once
                spent[key] += time.perf_counter() - start
                calls[key] += 1

    wrapper.__wrapped__ = f
    setattr(owner, name, wrapper)


def _listen_to_jax(spent: dict, calls: dict) -> None:
    """Add JAX's compile events once nerva-jax's adapter has imported JAX."""
    import adapters.jax_adapter as ja

    setup = ja.JaxAdapter.setup
    registered = []

    def listening_setup(self):
        setup(self)
        if not registered:
            from jax import monitoring

            def listener(event: str, duration: float, **_) -> None:
                if event in JAX_EVENTS:
                    spent[JAX_EVENTS[event]] += duration
                    calls[JAX_EVENTS[event]] += 1

            monitoring.register_event_duration_secs_listener(listener)
            registered.append(listener)

    ja.JaxAdapter.setup = listening_setup


def _summary(ev) -> dict:
    """What one evaluated example showed, JSON-ready (for --record and --compare)."""
    from harness.core.keys import key_name
    from harness.search.explore import fingerprint

    def finding(f) -> list:
        return [f.cls, list(f.backends), f.tensor, f.layer, f.step, f.detail]

    steps = []
    result = ev.result
    for v in (result.steps if result is not None else []):
        steps.append({"step": v.step, "near": v.near_kinks, "flips": v.flips, "tensors": [
            {"key": key_name(tv.key), "worst": tv.worst, "kinks": tv.kinks, "blamed": tv.blamed,
             "index": list(tv.index) if tv.index is not None else None, "allowed": tv.allowed,
             "outside": tv.outside} for tv in v.tensors]})
    return {"fingerprint": fingerprint(ev.example).hex(), "oracle": result.oracle if result else None,
            "failures": sorted(result.failures) if result else [], "runs": ev.runs,
            "red": [finding(f) for f in ev.red], "known": [[*finding(f), name] for f, name in ev.known],
            "other": [finding(f) for f in ev.other], "steps": steps}


def child(args: argparse.Namespace) -> None:
    """One search in this process; prints its phases as JSON on the last line of stdout."""
    started = time.perf_counter()
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    import harness.search.explore as ex
    from harness.cli.main import main

    for phase, module, path, _ in PHASES:
        _wrap(spent, calls, phase, module, path)
    _listen_to_jax(spent, calls)
    records: list[dict] = []
    evaluate, prop = ex.evaluate, ex._Search.prop

    def recorded(example, *a, **kw):
        ev = evaluate(example, *a, **kw)
        if args.record_file:
            records.append(_summary(ev))
        return ev

    def timed_prop(self, example):
        start = time.perf_counter()
        try:
            return prop(self, example)
        finally:
            spent["in the property (evaluation)"] += time.perf_counter() - start

    ex.evaluate, ex._Search.prop = recorded, timed_prop
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "explore.json"
        before = time.perf_counter()
        code = main(["explore", "--examples", str(args.examples), "--seed", str(args.seed), "--quiet",
                     "--json", str(report), "--bundle-dir", str(Path(tmp) / "bundles")])
        wall = time.perf_counter() - before
        out = json.loads(report.read_text())
    if args.record_file:
        Path(args.record_file).write_text(json.dumps({"report": out, "examples": records}, indent=1))
    print(json.dumps({"code": code, "wall": wall, "startup": before - started, "report": out,
                      "spent": dict(spent), "calls": dict(calls)}))


def _run_child(tree: Path, args: argparse.Namespace, record: Path | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, str(HERE), "--child", "--examples", str(args.examples), "--seed", str(args.seed)]
    if record is not None:
        cmd += ["--record-file", str(record)]
    with tempfile.TemporaryDirectory() as empty:
        if args.cold:  # nothing compiled before: JAX's persistent cache starts empty
            env["JAX_COMPILATION_CACHE_DIR"] = empty
        done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench child failed in {tree}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(tree: str, runs: list[dict]) -> None:
    rates = [r["report"]["examples"] / r["wall"] for r in runs]
    best = runs[rates.index(max(rates))]
    n = best["report"]["examples"]
    print(f"\n{tree}: {n} examples, seed {best['report']['seed']}, exit {best['code']}")
    print(f"  examples/s     : {', '.join(f'{x:.2f}' for x in rates)}  (wall of explore's command; best {max(rates):.2f})")
    own = ", ".join(str(r["report"]["seconds"]) for r in runs)
    walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
    print(f"  explore's own  : {own} s (its 'seconds'); command wall {walls} s; "
          f"process start to command {best['startup']:.1f} s")
    spent, calls = best["spent"], best["calls"]
    drawing = best["wall"] - spent.get("in the property (evaluation)", 0.0)
    rows = [("drawing (Hypothesis, strategy, command)", drawing, n, "main")]
    order = [p.split(" {")[0] for p, *_ in PHASES] + list(JAX_EVENTS.values())
    thread = {p.split(" {")[0]: t for p, _, _, t in PHASES}

    def rank(phase: str) -> int:
        return next((i for i, p in enumerate(order) if phase.startswith(p)), len(order))

    for p in sorted((p for p in spent if p != "in the property (evaluation)"), key=rank):
        rows.append((p, spent[p], calls.get(p, 0), next((t for q, t in thread.items() if p.startswith(q)), "main")))
    print("  the best run's split (sums of wall time; the judge thread overlaps the main one; "
          "reruns, imports and JAX's events are inside other rows):")
    for p, s, c, t in rows:
        print(f"    {p:<42} {s:7.2f} s  {1e3 * s / n:7.1f} ms/example  {c:6d} calls  ({t})")


def compare(a: Path, b: Path) -> int:
    """Where record ``b`` differs from ``a`` (ratios 1e-9 relative, bounds 1e-12, all else equal)."""
    A, B = json.loads(a.read_text()), json.loads(b.read_text())
    found: list[str] = []

    def close(x, y, rtol: float) -> bool:
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if math.isnan(x) or math.isnan(y):
                return math.isnan(x) and math.isnan(y)
            return x == y or abs(x - y) <= rtol * max(abs(x), abs(y))
        return x == y

    def walk(x, y, where: str, rtol: float) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            if set(x) != set(y):
                found.append(f"{where}: keys {sorted(set(x) ^ set(y))}")
            for k in set(x) & set(y):
                walk(x[k], y[k], f"{where}.{k}", 1e-12 if k == "allowed" else 1e-9 if k == "worst" else rtol)
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                found.append(f"{where}: length {len(x)} -> {len(y)}")
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]", rtol)
        elif not close(x, y, rtol):
            found.append(f"{where}: {x!r} -> {y!r}")

    report_a = {k: v for k, v in A["report"].items() if k != "seconds"}
    report_b = {k: v for k, v in B["report"].items() if k != "seconds"}
    walk(report_a, report_b, "report", 0.0)
    walk(A["examples"], B["examples"], "examples", 0.0)
    print(f"{len(A['examples'])} examples against {len(B['examples'])}; {len(found)} difference(s)")
    for line in found[:50]:
        print("  " + line)
    return 1 if found else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=30)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--repeat", type=int, default=1, help="runs per tree, alternating between the trees")
    p.add_argument("--trees", default=str(ROOT), help="comma-separated source trees (default: this one)")
    p.add_argument("--cold", action="store_true",
                   help="every run with an empty JAX compilation cache (a first run on a machine)")
    p.add_argument("--record", type=Path, help="a directory: every run's examples and verdicts (TREE-RUN.json)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="two records: where they differ")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--record-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.compare:
        sys.exit(compare(*args.compare))
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    if args.record:
        args.record.mkdir(parents=True, exist_ok=True)
    threads = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    print(f"explore --examples {args.examples} --seed {args.seed}, {args.repeat} run(s) per tree, "
          f"fresh process each{', empty JAX cache each' if args.cold else ''}; thread variables: {threads}")
    runs: dict[int, list[dict]] = defaultdict(list)
    for r in range(args.repeat):
        for i, tree in enumerate(trees):
            record = args.record / f"{i}-{r}.json" if args.record else None
            runs[i].append(_run_child(tree, args, record))
            last = runs[i][-1]
            print(f"  run {r + 1}, tree {i} ({tree}): {last['report']['examples'] / last['wall']:.2f} examples/s",
                  flush=True)
    for i, tree in enumerate(trees):
        _table(f"tree {i} ({tree})", runs[i])
    if len(trees) > 1:
        best = [max(x["report"]["examples"] / x["wall"] for x in runs[i]) for i in range(len(trees))]
        print("\nbest examples/s, each tree against the first: "
              + ", ".join(f"{b:.2f} ({b / best[0]:.2f}x)" for b in best))


if __name__ == "__main__":
    main()
