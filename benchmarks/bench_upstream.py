"""Harness overhead: the `upstream` scenario through the harness vs the four bare Nerva loops.

Both sides build the same four models (the libraries' own layer classes, loaded with the same
initial parameters) and run the same 50 SGD steps on the same batches. The bare side runs
Nerva's training loop and nothing else:

    Y = M.feedforward(X); DY = loss.gradient(Y, T) / N; M.backpropagate(Y, DY); M.optimize(eta)

The harness side additionally copies every intermediate to float64 NumPy and judges it.
Frameworks are imported before timing; each side runs `--repeat` times, alternating, and the
fastest run of each is used. Prints the ratio harness / bare (target <= 2, then 1.5), and where
the harness's time goes in its fastest run: the backends' traced steps and state reads (the main
thread) and the judgement (a worker thread, overlapped with the next step): the rounding bound,
the reference (consensus), the parameters' consensus and spread, and the comparison itself.

Both sides run with the thread pools a run has (:func:`harness.core.process.run_threads`: one
BLAS and OpenMP thread, unless ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or
``MKL_NUM_THREADS`` is set); ``--threads frameworks`` runs both with the frameworks' own pools
instead, to compare the two settings. On a quiet machine, three times, alternating:

    python benchmarks/bench_upstream.py --repeat 3
    python benchmarks/bench_upstream.py --repeat 3 --threads frameworks
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections import defaultdict

import adapters
import scenarios
from harness.spec.data import batches
import harness.run.runner as runner
from adapters.nerva_driver import NervaAdapter
from harness.run.runner import run
from harness.spec.state import initial_state
from harness.core.process import run_threads

BACKENDS = ["numpy", "torch", "jax", "tensorflow"]


def bare(scenario, state, data, threads) -> float:
    with threads():
        return _bare(scenario, state, data)


def _bare(scenario, state, data) -> float:
    start = time.perf_counter()
    for name in BACKENDS:
        a = adapters.load(name)
        a.build(scenario, state)
        with a.precision(scenario.dtype):
            inputs = [(a.array(X, scenario.dtype), a.array(T, scenario.dtype), X.shape[0]) for X, T in data]
            M, loss = a.model, a.loss
            for X, T, N in inputs:
                Y = M.feedforward(X)
                DY = loss.gradient(Y, T) / N
                M.backpropagate(Y, DY)
                M.optimize(scenario.lr)
            a.to_numpy(M.layers[-1].W)  # wait for asynchronous backends (JAX) to finish
    return time.perf_counter() - start


# seconds per phase of the harness (filled by the wrappers of `timed`)
PHASES = {
    "backends' traced steps": (NervaAdapter, "step"),
    "backends' state reads": (NervaAdapter, "get_state"),
    "rounding bound": (runner, "step_bounds"),
    "reference (consensus of traces)": (runner, "reference_trace"),
    "judgement (ratios, kinks, ulps)": (runner, "judge"),
    "parameters' consensus": (runner, "consensus_and_spread"),  # with the velocities' spread where fused
    "parameters' spread": (runner, "_pairwise_spread"),
}


def timed(spent: dict[str, float]) -> None:
    """Wrap each phase's function so that its wall time is added to ``spent``."""
    for phase, (owner, name) in PHASES.items():
        f = getattr(owner, name)
        f = getattr(f, "__wrapped__", f)

        def wrapper(*args, _f=f, _phase=phase, **kwargs):
            start = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_phase] += time.perf_counter() - start

        wrapper.__wrapped__ = f
        setattr(owner, name, wrapper)


def harness(scenario) -> tuple[float, bool, dict[str, float]]:
    spent: dict[str, float] = defaultdict(float)
    timed(spent)
    start = time.perf_counter()
    result = run(scenario, BACKENDS)
    return time.perf_counter() - start, result.passed, dict(spent)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", choices=["run", "frameworks"], default="run",
                   help="run: one BLAS/OpenMP thread, as a run has (default); frameworks: their own pools")
    args = p.parse_args()
    if args.threads == "frameworks":  # a thread count the user set: the run leaves the pools alone
        cores = str(len(os.sched_getaffinity(0)))
        os.environ.update(OMP_NUM_THREADS=cores, OPENBLAS_NUM_THREADS=cores)
    threads = run_threads if args.threads == "run" else contextlib.nullcontext
    sc = scenarios.get("upstream", steps=args.steps, seed=args.seed)
    state, data = initial_state(sc), batches(sc)
    for name in BACKENDS:  # import every framework before any timing
        adapters.load(name).setup()
    bare(sc.with_(steps=1), state, data[:1], threads)  # warm-up (first-call costs in every framework)
    t_bare, t_harness, phases = [], [], []
    for _ in range(args.repeat):
        t_bare.append(bare(sc, state, data, threads))
        seconds, passed, spent = harness(sc)
        t_harness.append(seconds)
        phases.append(spent)
    b, h = min(t_bare), min(t_harness)
    print(f"upstream, {sc.steps} steps, 4 backends, seed {sc.seed}, best of {args.repeat}, threads: {args.threads}")
    print(f"bare Nerva loops : {b:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in t_bare)})")
    print(f"harness          : {h:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in t_harness)}; passed: {passed})")
    print(f"ratio harness/bare: {h / b:.2f}  (target <= 2, then 1.5)")
    spent = phases[t_harness.index(h)]
    print(f"the harness's fastest run, per step (bare loops: {1e3 * b / sc.steps:.1f} ms per step, four backends):")
    for phase in PHASES:
        thread = "main" if phase.startswith("backends") else "judge"
        print(f"  {phase:<33} {1e3 * spent.get(phase, 0.0) / sc.steps:8.1f} ms   ({thread} thread)")


if __name__ == "__main__":
    main()
