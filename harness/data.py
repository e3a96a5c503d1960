"""Inputs and targets, made once in NumPy from the seed, never by a framework's RNG.

Sources (``DataSpec.source``):

- ``synthetic``  X ~ N(0, 1), fresh rows every step; targets ``onehot`` (uniform classes),
                 ``soft`` (rows of a flat Dirichlet draw: non-negative, summing to 1) or ``real``
                 (N(0, 1)). Works for any sizes.
- ``digits``     scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn, offline),
                 pixels scaled to [0, 1]: 64 features, 10 classes.
- ``digits784``  the same digits brought to MNIST's shape: each pixel repeated 3x3 (24x24) and
                 a 2-pixel border (28x28 = 784 features), like flattened MNIST, with no download.
- ``npz:PATH``   a Nerva-format file with Xtrain and Ttrain (class indices or one-hot rows).

Batches walk through a seeded permutation of the rows, reshuffled each epoch. Everything is
rounded once to the run's dtype so every backend sees the same bits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import SpecError
from harness.spec import Scenario
from harness.state import as_dtype, rng_for

SOURCES = ("synthetic", "digits", "digits784", "npz:PATH")


def _digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.images / 16.0
    if size == 784:
        X = np.pad(np.kron(X, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
    return X.reshape(len(X), -1), d.target


def _one_hot(labels: np.ndarray, classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise SpecError(f"{what} has class labels up to {labels.max()}, but the output layer has {classes} units")
    return np.eye(classes)[labels]


def dataset(scenario: Scenario) -> tuple[np.ndarray, np.ndarray] | None:
    """The full (X, T) of a file-based source, or None for synthetic data."""
    src, D, K = scenario.data.source, scenario.input_size, scenario.output_size
    if src == "synthetic":
        return None
    if src in ("digits", "digits784"):
        need = 64 if src == "digits" else 784
        if D != need or K != 10:
            raise SpecError(f"dataset {src} has {need} features and 10 classes: sizes must start with {need} and end with 10")
        X, labels = _digits(need)
        return X, _one_hot(labels, 10, src)
    if src.startswith("npz:"):
        path = Path(src[4:])
        if not path.is_file():
            raise SpecError(f"dataset file {str(path)!r} does not exist: give an existing .npz file with Xtrain and Ttrain")
        try:
            f = np.load(path, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("it holds one array, not the named arrays of an .npz")
            with f:
                X, T = np.asarray(f["Xtrain"], dtype=np.float64), np.asarray(f["Ttrain"])
        except KeyError as e:
            raise SpecError(f"dataset {str(path)!r} has no array {e.args[0]}: a Nerva dataset holds Xtrain, Ttrain, Xtest, Ttest") from None
        except (OSError, ValueError) as e:
            raise SpecError(f"dataset {str(path)!r} is not a readable .npz file ({e})") from None
        X = X.reshape(len(X), -1)
        if X.shape[1] != D:
            raise SpecError(f"dataset {str(path)!r} has {X.shape[1]} features, but sizes start with {D}")
        T = np.asarray(T, dtype=np.float64).reshape(len(T), -1) if np.ndim(T) == 2 else _one_hot(T, K, str(path))
        if T.shape[1] != K:
            raise SpecError(f"dataset {str(path)!r} has targets of width {T.shape[1]}, but the output layer has {K} units")
        return X, T
    raise SpecError(f"unknown data source {src!r}; choose one of {', '.join(SOURCES)}")


def batches(scenario: Scenario) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (X, T) per step, float64 arrays holding values exact in the run's dtype."""
    rng = rng_for(scenario.seed, "data")
    N, D, K, steps = scenario.batch_size, scenario.input_size, scenario.output_size, scenario.steps
    full = dataset(scenario)
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
