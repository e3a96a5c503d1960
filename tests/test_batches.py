"""Batches made as the steps need them give, bit for bit, the batches the eager construction made.

``eager`` below is harness/spec/data.py's ``batches`` as it was before batches were streamed (issue
11), with its dataset reader (``eager_dataset``), verbatim but for the error checks: it read the
file with NumPy's own loader and built every batch of every step first.
Pure NumPy: no backend is built or imported here.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.spec.data import Batches, batches
from harness.core.errors import SpecError
from harness.spec.scenario import DataSpec, build_scenario
from harness.spec.state import as_dtype, rng_for


def eager_dataset(scenario):
    """The pre-streaming reader (without its error checks)."""
    src, K = scenario.data.source, scenario.output_size
    if src == "synthetic":
        return None
    if src in ("digits", "digits784"):
        from harness.spec.data import _digits

        X, labels = _digits(64 if src == "digits" else 784)
        return X, np.eye(10)[np.asarray(labels).astype(np.int64).ravel()]
    with np.load(src[4:], allow_pickle=False) as f:
        X, T = np.asarray(f["Xtrain"], dtype=np.float64), np.asarray(f["Ttrain"])
    X = X.reshape(len(X), -1)
    T = np.asarray(T, dtype=np.float64).reshape(len(T), -1) if np.ndim(T) == 2 else \
        np.eye(K)[np.asarray(T).astype(np.int64).ravel()]
    return X, T


def eager(scenario) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pre-streaming construction: every batch of every step, in one list."""
    rng = rng_for(scenario.seed, "data")
    N, D, K, steps = scenario.batch_size, scenario.input_size, scenario.output_size, scenario.steps
    full = eager_dataset(scenario)
    out = []
    if full is None:
        for _ in range(steps):
            X = rng.standard_normal((N, D))
            kind = scenario.data.targets
            if kind == "onehot":
                T = np.eye(K)[rng.integers(0, K, size=N)]
            elif kind == "soft":
                T = rng.dirichlet(np.ones(K), size=N)
            elif kind == "real":
                T = rng.standard_normal((N, K))
            else:
                raise SpecError(f"unknown synthetic targets {kind!r}; choose onehot, soft or real")
            out.append((X, T))
    else:
        X, T = full
        if len(X) < N:
            raise SpecError(f"batch size {N} is larger than the dataset ({len(X)} rows)")
        order = np.empty(0, dtype=np.int64)
        for _ in range(steps):
            if len(order) < N:
                order = np.concatenate([order, rng.permutation(len(X))])
            rows, order = order[:N], order[N:]
            out.append((X[rows], T[rows]))
    return [(as_dtype(X, scenario.dtype), as_dtype(T, scenario.dtype)) for X, T in out]


def build(**kw):
    args = dict(name="t", layers="ReLU;Linear", sizes="5,4,3", optimizers="GradientDescent", init_weights=None,
                loss="SquaredError", lr=0.01, batch_size=6, steps=7)
    args.update(kw)
    return build_scenario(**args)


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        x1.dtype == x2.dtype and t1.dtype == t2.dtype and x1.tobytes() == x2.tobytes() and t1.tobytes() == t2.tobytes()
        for (x1, t1), (x2, t2) in zip(a, b))


@pytest.fixture
def npz_files(tmp_path):
    rng = np.random.default_rng(5)
    labels = tmp_path / "labels.npz"
    np.savez(labels, Xtrain=rng.standard_normal((23, 5)), Ttrain=rng.integers(0, 3, size=23))
    matrix = tmp_path / "matrix.npz"
    np.savez(matrix, Xtrain=rng.standard_normal((11, 5)).astype(np.float32), Ttrain=rng.random((11, 3)))
    return {"labels": labels, "matrix": matrix}


CASES = [dict(seed=s, dtype=d, data=DataSpec("synthetic", t))
         for s in (0, 3, 2026) for d in ("float32", "float64") for t in ("onehot", "soft", "real")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['seed']}-{c['dtype']}-{c['data'].targets}")
def test_streamed_synthetic_batches_are_the_eager_ones_bit_for_bit(case):
    sc = build(**case)
    assert same(list(batches(sc)), eager(sc))


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("which", ["labels", "matrix"])
def test_streamed_dataset_batches_are_the_eager_ones_bit_for_bit(npz_files, which, seed):
    # 23 (or 11) rows, batch 6, 9 steps: several epochs, each a fresh permutation
    sc = build(seed=seed, steps=9, data=DataSpec(f"npz:{npz_files[which]}"))
    assert same(list(batches(sc)), eager(sc))


@pytest.mark.parametrize("seed", [0, 4])
def test_streamed_digits_batches_are_the_eager_ones_bit_for_bit(seed):
    sc = build(sizes="64,16,10", batch_size=100, steps=25, seed=seed, data=DataSpec("digits"))  # 2500 > 1797 rows
    assert same(list(batches(sc)), eager(sc))


def test_indexing_in_any_order_gives_the_same_batches():
    sc = build(seed=11, steps=6)
    b, reference = batches(sc), eager(sc)
    for i in (0, 0, 3, 1, 5, -1, 2, 4):
        X, T = b[i]
        assert X.tobytes() == reference[i][0].tobytes() and T.tobytes() == reference[i][1].tobytes()
    assert same(b[1:4], reference[1:4])
    assert len(b) == 6
    with pytest.raises(IndexError):
        b[6]


def test_iterating_twice_gives_the_same_batches():
    b = batches(build(seed=2, steps=4, data=DataSpec("synthetic", "soft")))
    assert same(list(b), list(b))


def test_a_huge_number_of_steps_makes_nothing_up_front():
    sc = build(steps=10**12, batch_size=4)
    start = time.perf_counter()
    b = batches(sc)
    first = next(iter(b))
    assert time.perf_counter() - start < 1.0  # nothing is made for the steps not asked for
    assert len(b) == 10**12 and isinstance(b, Batches)
    assert first[0].tobytes() == eager(sc.with_(steps=1))[0][0].tobytes()


def test_bad_data_is_an_error_when_the_batches_are_made_not_at_a_step(tmp_path):
    path = tmp_path / "small.npz"
    np.savez(path, Xtrain=np.zeros((3, 5)), Ttrain=np.zeros(3, dtype=int))
    with pytest.raises(SpecError, match="batch size 6"):
        batches(build(data=DataSpec(f"npz:{path}")))
    with pytest.raises(SpecError, match="fuzzy"):
        batches(build(data=DataSpec("synthetic", "fuzzy")))
