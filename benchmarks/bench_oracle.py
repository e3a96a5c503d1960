"""Speed of the exact oracle (targets: one lockstep step <= 2 s, component suite <= 60 s).

1. One lockstep step of the SymPy oracle on a 16-32-32-10 network (ReLU; BatchNormalization;
   ReLU; Softmax: three linear layers need one more activation than the three kinds the target
   names) with CrossEntropy, batch 16: the first step (derivations included) and the next
   ones (derivations cached).
2. The whole component suite (`pytest -m symbolic tests/test_components.py`), wall time.
3. Beside it, what nerva-sympy's style of check costs for one Softmax layer: the backward
   formula written symbolically and compared with SymPy's gradient by `sp.simplify(A - B) == 0`
   for every element, at growing sizes up to the size of the layer in (1) (N=16, D=32, K=10),
   each size in a subprocess with a time budget; against our exact evaluation of the same
   gradients at a point. Printed as ratios measured in this run.

    python benchmarks/bench_oracle.py [--budget 60] [--no-suite]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def oracle_step() -> tuple[float, float]:
    from adapters.sympy_oracle import SympyOracle
    from harness.spec.data import batches
    from harness.spec.scenario import build_scenario
    from harness.spec.state import initial_state

    sc = build_scenario(name="bench", layers="ReLU;BatchNormalization;ReLU;Softmax", sizes="16,32,32,10",
                        optimizers="GradientDescent", init_weights="XavierNormal", loss="CrossEntropy",
                        lr=0.01, batch_size=16, steps=3)
    data = batches(sc)
    oracle = SympyOracle()
    oracle.build(sc, initial_state(sc))
    t = time.perf_counter()
    oracle.step(*data[0], sc.lr)
    first = time.perf_counter() - t
    t = time.perf_counter()
    for X, T in data[1:]:
        oracle.step(X, T, sc.lr)
    return first, (time.perf_counter() - t) / (len(data) - 1)


def simplify_check(N: int, D: int, K: int) -> None:
    """nerva-sympy's way: the hand-written formula vs sp.diff, compared by simplify(A - B) == 0."""
    import sympy as sp

    X = sp.Matrix(N, D, lambda i, j: sp.Symbol(f"x{i}_{j}"))
    W = sp.Matrix(K, D, lambda i, j: sp.Symbol(f"w{i}_{j}"))
    b = sp.Matrix(1, K, lambda i, j: sp.Symbol(f"b{j}"))
    Z = X * W.T + sp.Matrix(N, K, lambda i, j: b[j])
    E = Z.applyfunc(sp.exp)
    Y = sp.Matrix(N, K, lambda i, j: E[i, j] / sum(E[i, k] for k in range(K)))
    loss = sum(Y[i, j] ** 2 for i in range(N) for j in range(K))
    DY = 2 * Y
    d = [sum(DY[i, k] * Y[i, k] for k in range(K)) for i in range(N)]
    DZ = sp.Matrix(N, K, lambda i, j: Y[i, j] * (DY[i, j] - d[i]))
    DW = DZ.T * X
    DW1 = sp.Matrix(K, D, lambda i, j: sp.diff(loss, W[i, j]))
    assert all(sp.simplify(DW[i, j] - DW1[i, j]) == 0 for i in range(K) for j in range(D))


def exact_gradient(N: int, D: int, K: int) -> float:
    """The same DW, exactly, at a point: harness.oracle.symbolic (derivatives of the forward definitions)."""
    from harness.oracle import symbolic

    rng = np.random.default_rng(0)
    X, W, b = rng.normal(size=(N, D)), rng.normal(size=(K, D)), rng.normal(size=K)
    t = time.perf_counter()
    Z = symbolic.linear_forward(X, W, b)
    softmax = symbolic.RowFunction("softmax", K)
    Y = softmax.value(Z)
    DZ = softmax.vjp(Z, 2 * Y)
    symbolic.linear_vjp(X, W, DZ)
    return time.perf_counter() - t


def timed_simplify(N: int, D: int, K: int, budget: float) -> float | None:
    p = mp.get_context("spawn").Process(target=simplify_check, args=(N, D, K))
    t = time.perf_counter()
    p.start()
    p.join(budget)
    if p.is_alive():
        p.terminate()
        p.join()
        return None
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per simplify-style size")
    ap.add_argument("--no-suite", action="store_true")
    args = ap.parse_args()

    first, later = oracle_step()
    print("1. sympy oracle, one lockstep step, 16-32-32-10 ReLU/BN/Softmax, CrossEntropy, batch 16:")
    print(f"   first step {first:.2f} s (derivations included), next steps {later:.2f} s each (target <= 2 s)")

    if not args.no_suite:
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "symbolic",
                               "tests/test_components.py"], cwd=ROOT, capture_output=True, text=True)
        suite = time.perf_counter() - t
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
        print(f"2. component suite: {suite:.1f} s wall (target <= 60 s): {last}")

    print("3. one Softmax layer's DW: nerva-sympy style simplify(A - B) == 0 vs our exact evaluation")
    for N, D, K in [(2, 3, 2), (2, 3, 3), (3, 4, 3), (4, 6, 4), (16, 32, 10)]:
        ours = exact_gradient(N, D, K)
        theirs = timed_simplify(N, D, K, args.budget)
        if theirs is None:
            print(f"   N={N:2d} D={D:2d} K={K:2d}: simplify > {args.budget:.0f} s (stopped), exact {ours * 1e3:.1f} ms,"
                  f" ratio > {args.budget / ours:,.0f}")
        else:
            print(f"   N={N:2d} D={D:2d} K={K:2d}: simplify {theirs:.2f} s, exact {ours * 1e3:.1f} ms,"
                  f" ratio {theirs / ours:,.0f}")


if __name__ == "__main__":
    main()
