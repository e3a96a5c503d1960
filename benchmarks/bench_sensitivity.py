"""Sensitivity: the smallest defect in one backend's gradient that a lockstep run catches.

A *probe* is (network, dtype, backend, tensor, layer). The defect: right after that layer's
``backpropagate`` one backend's DW, Db or DX of that layer is scaled by (1 + eps), written the
way the library stores it (the layer class's ``backpropagate`` in ``nerva_<backend>.layers`` is
patched in-process, as the mutation corpus tests/mutants/ does, and restored afterwards):

    numpy       DW, Db: the arrays the optimizer holds, in place   (a += a * eps)
                DX:     a fresh array per call, also in place
    torch       DW, Db: the tensors the optimizer holds, in place  (t.add_(t * eps))
                DX:     a fresh tensor per call, also in place
    jax         immutable arrays: the attribute is rebound         (layer.DW = DW + DW * eps);
                its optimizers look DW / Db up by name, the MLP reads layer.DX after the call
    tensorflow  DW, Db: tf.Variables held by the optimizer         (v.assign(v + v * eps))
                DX:     a tf.Tensor attribute, rebound

``x + x * eps`` rather than ``x * (1 + eps)``: 1 + 1e-16 is 1 in float64, so the factor itself
would lose the smallest eps. In a float32 run a float32 tensor cannot move by less than half an
ulp (eps below about 6e-8 leaves it unchanged): that is the floor of float32 probes.

For each probe the smallest eps of the half-decade grid 1e-16, 3e-16, 1e-15, ..., 3e-2, 1e-1
for which ``run(..., oracle="sympy")`` in lockstep mode fails *with the probed backend blamed*
is found by bisection on the grid (1e-1 first; detection is assumed monotone in eps). Each run
is ``--steps`` steps (default 2), ``keep_going=False``, on the probed backend and one other
(numpy, or torch when numpy is probed; all four with ``--all-backends``), from the same
initial parameters and batches (made once per scenario).

Beside it, per network and dtype, one unperturbed run gives the correct backends' error in
units of the comparator's rounding bound (``TensorVerdict.worst``; 1 is the pass line): per
(tensor, backend) the largest over the steps, then the median and the maximum of those, and
the worst ulps.

Targets (printed as measured, not asserted): the largest smallest-eps over all probes
<= 1e-12 in float64 and <= 1e-5 in float32.

    python benchmarks/bench_sensitivity.py [--quick] [--backend torch] [--all-backends]
                                           [--steps 2] [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter (only with --all-backends)

import adapters  # noqa: E402
from harness.spec.data import batches  # noqa: E402
from harness.run.runner import RunResult, run  # noqa: E402
from harness.core.components import BACKENDS  # noqa: E402
from harness.spec.scenario import Scenario, build_scenario  # noqa: E402
from harness.spec.state import initial_state  # noqa: E402

# 1e-16, 3e-16, 1e-15, ..., 3e-2, 1e-1: 31 points.
GRID = [float(f"{m}e{e}") for e in range(-16, -1) for m in (1, 3)] + [1e-1]
TARGETS = {"float64": 1e-12, "float32": 1e-5}
DTYPES = ("float64", "float32")

NETWORKS: dict[str, dict[str, Any]] = {
    "relu-linear": dict(layers="ReLU;Linear", sizes="6,8,3", optimizers="GradientDescent",
                        init_weights="HeNormal,XavierNormal", loss="SquaredError", lr=0.05, batch_size=4),
    "relu-softmax": dict(layers="ReLU;Softmax", sizes="16,32,10", optimizers="GradientDescent",
                         init_weights="HeNormal,XavierNormal", loss="CrossEntropy", lr=0.05, batch_size=64),
    "relu-bn-linear": dict(layers="ReLU;BatchNormalization;Linear", sizes="16,24,6", optimizers="GradientDescent",
                           init_weights="HeNormal,XavierNormal", loss="SoftmaxCrossEntropy", lr=0.05,
                           batch_size=16),
}

# The class nerva_driver.NervaAdapter.build makes for each layer kind (anything else: ActivationLayer).
LAYER_CLASS = {"Linear": "LinearLayer", "Softmax": "SoftmaxLayer", "LogSoftmax": "LogSoftmaxLayer",
               "BatchNormalization": "BatchNormalizationLayer", "SReLU": "SReLULayer"}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the perturbation ------------------------------------------------------------------------

def _scaler(backend: str, eps: float) -> Callable[[Any, str], None]:
    """Scale ``layer.<name>`` by (1 + eps) the way ``backend`` stores it."""

    def numpy(layer, name):
        a = getattr(layer, name)
        a += a * eps  # in place: the optimizer holds DW / Db

    def torch(layer, name):
        getattr(layer, name).add_(getattr(layer, name) * eps)  # in place, likewise

    def jax(layer, name):
        a = getattr(layer, name)
        setattr(layer, name, a + a * eps)  # immutable: rebind (optimizers look the name up)

    def tensorflow(layer, name):
        a = getattr(layer, name)
        if hasattr(a, "assign"):  # DW, Db: tf.Variables held by the optimizer
            a.assign(a + a * eps)
        else:  # DX: a tf.Tensor
            setattr(layer, name, a + a * eps)

    return {"numpy": numpy, "torch": torch, "jax": jax, "tensorflow": tensorflow}[backend]


def _dims(layer: Any) -> tuple[int, ...]:
    """(K, D) of a linear-type layer (its W), (D,) of a BatchNormalization layer."""
    for attr in ("W", "beta", "gamma"):
        if getattr(layer, attr, None) is not None:
            return tuple(int(s) for s in getattr(layer, attr).shape)
    return ()


def _layer_dims(scenario: Scenario) -> list[tuple[str, tuple[int, ...]]]:
    """(class name, dims) of every layer of the scenario, as the backends build them."""
    out, width = [], scenario.input_size
    for spec in scenario.layers:
        cls = LAYER_CLASS.get(spec.kind, "ActivationLayer")
        out.append((cls, (spec.units,) if spec.kind == "BatchNormalization" else (spec.units, width)))
        width = spec.units
    return out


class Perturbation:
    """Context: ``backend``'s layer ``layer`` (1-based) gets ``tensor`` scaled by (1 + eps)."""

    def __init__(self, scenario: Scenario, backend: str, tensor: str, layer: int, eps: float):
        layers = _layer_dims(scenario)
        self.cls_name, self.dims = layers[layer - 1]
        if layers.count((self.cls_name, self.dims)) != 1:  # the patch tells layers apart by class and shape
            raise ValueError(f"layer {layer} of {scenario.name} is not the only {self.cls_name} of shape {self.dims}")
        self.module = importlib.import_module(f"nerva_{backend}.layers")
        self.cls = getattr(self.module, self.cls_name)
        self.tensor, self.scale = tensor, _scaler(backend, eps)
        self.hits = 0  # how many times the defect was applied (0 would mean the probe missed its layer)

    def __enter__(self) -> "Perturbation":
        self.own = "backpropagate" in self.cls.__dict__
        self.original = self.cls.backpropagate
        cls, dims, original, me = self.cls, self.dims, self.original, self

        def broken(layer, Y, DY):
            out = original(layer, Y, DY)
            if type(layer) is cls and _dims(layer) == dims:
                me.scale(layer, me.tensor)
                me.hits += 1
            return out

        self.cls.backpropagate = broken
        return self

    def __exit__(self, *exc) -> None:
        if self.own:
            self.cls.backpropagate = self.original
        else:
            del self.cls.backpropagate


# -- runs ----------------------------------------------------------------------------------

@dataclass
class Case:
    """One network in one dtype: the scenario and its inputs, made once."""

    network: str
    scenario: Scenario
    state0: dict
    data: list

    def run(self, backends: list[str], keep_going: bool = False) -> RunResult:
        return run(self.scenario, backends, keep_going=keep_going, oracle="sympy",
                   state0=self.state0, data=self.data)


@dataclass
class Attempt:
    eps: float
    caught: bool
    first: str | None  # the first failing tensor
    blamed: list[str]
    ratio: float | None  # the probed backend's worst error / bound on the probed tensor
    seconds: float
    error: str | None = None


@dataclass
class Probe:
    network: str
    dtype: str
    backend: str
    tensor: str  # "DW1"
    attempts: list[Attempt] = field(default_factory=list)
    smallest: float | None = None  # None: not caught at 1e-1 (or an error)

    @property
    def at_smallest(self) -> Attempt | None:
        return next((a for a in self.attempts if a.eps == self.smallest), None)


def _key_name(key: tuple[str, int | None]) -> str:
    return key[0] if key[1] is None else f"{key[0]}{key[1]}"


def attempt(case: Case, backends: list[str], backend: str, tensor: str, layer: int, eps: float) -> Attempt:
    start = time.perf_counter()
    with Perturbation(case.scenario, backend, tensor, layer, eps) as p:
        result = case.run(backends)
    seconds = time.perf_counter() - start
    if result.failures:
        return Attempt(eps, False, None, [], None, seconds, error="; ".join(f"{b}: {m}" for b, m in result.failures.items()))
    if p.hits == 0:
        return Attempt(eps, False, None, [], None, seconds, error=f"the patch never reached layer {layer}")
    name = f"{tensor}{layer}"
    ratio = max((t.worst.get(backend, 0.0) for s in result.steps for t in s.tensors if _key_name(t.key) == name),
                default=None)
    div = result.first_divergence
    if div is None:
        return Attempt(eps, False, None, [], ratio, seconds)
    _, verdict = div
    return Attempt(eps, backend in verdict.blamed, _key_name(verdict.key), list(verdict.blamed), ratio, seconds)


def search(case: Case, backends: list[str], backend: str, tensor: str, layer: int, progress: Callable) -> Probe:
    """Smallest grid eps caught with ``backend`` blamed: 1e-1 first, then bisection."""
    probe = Probe(case.network, case.scenario.dtype, backend, f"{tensor}{layer}")

    def caught(i: int) -> bool:
        a = attempt(case, backends, backend, tensor, layer, GRID[i])
        probe.attempts.append(a)
        progress(probe, a)
        return a.caught

    hi = len(GRID) - 1
    if not caught(hi):
        return probe
    lo = -1  # invariant: GRID[hi] caught; GRID[lo] not caught (lo = -1: below the grid)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if caught(mid):
            hi = mid
        else:
            lo = mid
    probe.smallest = GRID[hi]
    return probe


def baseline(case: Case, backends: list[str]) -> dict[str, Any]:
    """The unperturbed run: per (tensor, backend) the worst error / bound over the steps."""
    start = time.perf_counter()
    result = case.run(backends, keep_going=True)
    worst: dict[tuple[str, str], float] = {}
    ulps: dict[tuple[str, str], float] = {}
    for step in result.steps:
        for t in step.tensors:
            for b, r in t.worst.items():
                k = (_key_name(t.key), b)
                worst[k] = max(worst.get(k, 0.0), r)
            for b, u in (t.ulps or {}).items():
                k = (_key_name(t.key), b)
                ulps[k] = max(ulps.get(k, 0.0), u)
    ratios = list(worst.values())
    top = max(worst, key=worst.get) if worst else None
    top_ulps = max(ulps, key=ulps.get) if ulps else None
    return {
        "passed": result.passed,
        "failures": dict(result.failures),
        "first_divergence": (_key_name(result.first_divergence[1].key) if result.first_divergence else None),
        "median": statistics.median(ratios) if ratios else float("nan"),
        "max": max(ratios) if ratios else float("nan"),
        "max_at": f"{top[0]} {top[1]}" if top else None,
        "ulps": ulps[top_ulps] if top_ulps else float("nan"),
        "ulps_at": f"{top_ulps[0]} {top_ulps[1]}" if top_ulps else None,
        "per_tensor": {f"{t} {b}": r for (t, b), r in sorted(worst.items())},
        "seconds": time.perf_counter() - start,
    }


# -- output --------------------------------------------------------------------------------

def fmt_eps(x: float | None) -> str:
    return "> 1e-1" if x is None else f"{x:.0e}"


def fmt_ratio(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.2g}" if x < 1e4 else f"{x:.1e}"


def table(rows: list[list[str]], header: list[str], left: tuple[int, ...] = (0, 1, 2)) -> str:
    """Plain aligned text: the ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _finite(x: Any) -> Any:
    """Strict JSON: inf and nan (an infinite ratio, an empty run) become strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="torch", choices=BACKENDS, help="the backend whose gradients are scaled")
    ap.add_argument("--all-backends", action="store_true", help="run all four backends (default: the probed one and one other)")
    ap.add_argument("--quick", action="store_true", help="probe DW1 only")
    ap.add_argument("--steps", type=int, default=2, help="SGD steps per run (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="write every run and the summary as JSON")
    return ap.parse_args()


def _unavailable(backends: list[str]) -> str | None:
    """Why the benchmark cannot run here (a backend or the exact oracle missing), or None."""
    for name in backends:
        reason = adapters.why_unavailable(name)
        if reason:
            return reason
    return adapters.why_oracle_unavailable("sympy")


def _probe_cases(args: argparse.Namespace, backends: list[str], cases: list) -> list:
    """Every case's unperturbed baseline and its probes: (case, baseline, probes, seconds)."""
    probes_of = lambda sc: [("DW", 1)] if args.quick else [("DW", 1), ("Db", 1), ("DX", len(sc.layers))]  # noqa: E731
    log(f"sensitivity: backend {args.backend} scaled, runs on {', '.join(backends)}, {args.steps} step(s), "
        f"seed {args.seed}, lockstep, sympy oracle; probes {', '.join(t + str(i) for t, i in probes_of(cases[0].scenario))}"
        f"{' (last layer)' if not args.quick else ''}")

    def progress(probe: Probe, a: Attempt) -> None:
        what = "error: " + a.error if a.error else (
            f"caught ({a.first}, blamed {','.join(a.blamed)})" if a.caught else
            (f"failed at {a.first} blaming {','.join(a.blamed)} (not counted)" if a.first else "passed"))
        log(f"  {probe.network} {probe.dtype} {probe.tensor} eps={a.eps:.0e}: {what}; "
            f"{probe.backend} {probe.tensor} ratio {fmt_ratio(a.ratio)}; {a.seconds:.2f} s")

    results = []
    for case in cases:
        t_case = time.perf_counter()
        base = baseline(case, backends)
        log(f"{case.network} {case.scenario.dtype}: unperturbed {'passed' if base['passed'] else 'FAILED'}; "
            f"error/bound median {fmt_ratio(base['median'])}, max {fmt_ratio(base['max'])} ({base['max_at']}), "
            f"worst {base['ulps']:.3g} ulps ({base['ulps_at']}); {base['seconds']:.2f} s")
        if not base["passed"]:
            log(f"  the unperturbed run already fails ({base['first_divergence'] or base['failures']}): "
                "blame below may not come from the probe")
        probes = [search(case, backends, args.backend, t, i, progress) for t, i in probes_of(case.scenario)]
        results.append((case, base, probes, time.perf_counter() - t_case))
    return results


def _print_results(args: argparse.Namespace, backends: list[str], results: list, seconds: float) -> dict:
    """The table, the verdict per dtype against its target; returns the summary."""
    header = ["network", "dtype", "tensor", "smallest eps flagged", "first failing", "ratio there", "runs",
              "correct median", "correct max", "correct ulps"]
    rows = []
    for case, base, probes, _ in results:
        for p in probes:
            a = p.at_smallest
            rows.append([case.network, case.scenario.dtype, p.tensor, fmt_eps(p.smallest),
                         (a.first or "-") if a else "-", fmt_ratio(a.ratio if a else None), str(len(p.attempts)),
                         fmt_ratio(base["median"]), fmt_ratio(base["max"]), f"{base['ulps']:.3g}"])
    print(f"Sensitivity of lockstep + sympy oracle: {args.backend}'s gradient scaled by (1 + eps); "
          f"backends {', '.join(backends)}; {args.steps} step(s), seed {args.seed}")
    print("first failing: the run's first divergence at that eps (a DX defect may first exceed the bound "
          "downstream); ratio there: the probed backend's error/bound on the probed tensor at that eps;")
    print("correct: the unperturbed run, every backend, per (tensor, backend) the worst over the steps, "
          "then median and max of those, and the worst ulps")
    print(table(rows, header, left=(0, 1, 2, 4)))
    summary = {}
    for dtype in DTYPES:
        ps = [p for _, _, probes, _ in results for p in probes if p.dtype == dtype]
        missed = [p for p in ps if p.smallest is None]
        largest = None if missed else max(p.smallest for p in ps)
        ok = largest is not None and largest <= TARGETS[dtype]
        worst = ", ".join(f"{p.network} {p.tensor}" for p in ps if p.smallest == largest) if largest else \
            ", ".join(f"{p.network} {p.tensor}" for p in missed)
        summary[dtype] = {"largest_smallest_eps": largest, "target": TARGETS[dtype], "passed": ok, "at": worst}
        print(f"{dtype}: largest smallest-eps {fmt_eps(largest)} ({worst}); target <= {TARGETS[dtype]:.0e}: "
              f"{'PASS' if ok else 'FAIL'}")
    runs = sum(len(p.attempts) for _, _, probes, _ in results for p in probes) + len(results)
    print(f"{runs} runs in {seconds:.1f} s")
    return summary


def _write_json(args: argparse.Namespace, backends: list[str], results: list, seconds: float, summary: dict) -> None:
    doc = {
        "schema": "nerva-consistency/sensitivity/1",
        "backend": args.backend, "backends": backends, "steps": args.steps, "seed": args.seed,
        "quick": args.quick, "grid": GRID, "targets": TARGETS, "seconds": seconds,
        "networks": {n: {k: v for k, v in spec.items()} for n, spec in NETWORKS.items()},
        "cases": [{
            "network": case.network, "dtype": case.scenario.dtype, "seconds": secs, "baseline": base,
            "probes": [{"tensor": p.tensor, "smallest_eps": p.smallest,
                        "attempts": [a.__dict__ for a in p.attempts]} for p in probes],
        } for case, base, probes, secs in results],
        "summary": summary,
    }
    with open(args.json, "w") as f:
        json.dump(_finite(doc), f, indent=2, allow_nan=False)
    print(f"wrote {args.json}")


def main() -> int:
    args = _arguments()
    other = "numpy" if args.backend != "numpy" else "torch"
    backends = list(BACKENDS) if args.all_backends else [args.backend, other]
    reason = _unavailable(backends)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    t_all = time.perf_counter()
    cases = []
    for network, spec in NETWORKS.items():
        for dtype in DTYPES:
            sc = build_scenario(name=network, steps=args.steps, seed=args.seed, dtype=dtype, mode="lockstep", **spec)
            cases.append(Case(network, sc, initial_state(sc), batches(sc)))
    for name in backends:  # import the frameworks before the first run
        adapters.load(name).setup()
    results = _probe_cases(args, backends, cases)
    seconds = time.perf_counter() - t_all
    summary = _print_results(args, backends, results, seconds)
    if args.json:
        _write_json(args, backends, results, seconds, summary)
    return 0

if __name__ == "__main__":
    sys.exit(main())
