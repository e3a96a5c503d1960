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

Batches are made as the steps ask for them (:class:`Batches`, a lazy sequence): memory does not
grow with the number of steps, and the values are those of one seeded stream, the same bits
whichever way they are read. A dataset file is read and checked once
(:func:`harness.spec.rules.dataset_file`) and kept while it is unchanged on disk.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator, Sequence

import numpy as np

from harness.spec import rules
from harness.core.errors import SpecError
from harness.spec.scenario import Scenario
from harness.spec.state import as_dtype, rng_for

SOURCES = ("synthetic", "digits", "digits784", "npz:PATH")
TARGETS = ("onehot", "soft", "real")


@functools.lru_cache(maxsize=2)
def _digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits as (X, labels), made once per process (validation and the run both read them)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.images / 16.0
    if size == 784:
        X = np.pad(np.kron(X, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
    return _frozen(X.reshape(len(X), -1), d.target)


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cached arrays are shared: read-only, so that no reader can change another's data."""
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=2)
def _file(path: str, D: int, K: int, batch_size: int, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A dataset file's (X, T), read and checked once while ``stamp`` (its size, time and inode) holds."""
    return _frozen(*rules.dataset_file(path, D, K, batch_size))


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
        rules.enough_rows(len(X), scenario.batch_size, f"dataset {src}")
        return X, rules.one_hot(labels, 10)
    if src.startswith("npz:"):
        path = rules.dataset_path(src[4:])
        st = os.stat(path)
        return _file(str(path), D, K, scenario.batch_size, (st.st_size, st.st_mtime_ns, st.st_ino))
    raise SpecError(f"unknown data source {src!r}; choose one of {', '.join(SOURCES)}")


class Batches(Sequence):
    """One (X, T) per step, float64 arrays holding values exact in the run's dtype, made when a
    step asks for it from one seeded stream (the same values as building every batch first).

    Iterating makes them in order; ``batches[i]`` goes on from the last one read (or starts the
    stream again for an earlier step), so reading in order costs nothing extra. The source is
    read and checked when the object is made: bad data is an error before any step."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.full = dataset(scenario)
        if self.full is None and scenario.data.targets not in TARGETS:
            raise SpecError(f"unknown synthetic targets {scenario.data.targets!r}; choose onehot, soft or real")
        self._cursor: tuple[int, Iterator] | None = None  # (index of the next batch, the stream)
        self._last: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return self.scenario.steps

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._stream()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = i + n if i < 0 else i
        if not 0 <= i < n:
            raise IndexError(f"batch {i} of {n}")
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        if self._cursor is None or self._cursor[0] > i:
            self._cursor = (0, self._stream())
        at, stream = self._cursor
        item = next(itertools.islice(stream, i - at, None))
        self._cursor = (i + 1, stream)
        self._last = (i, item)
        return item

    def _stream(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sc = self.scenario
        rng = rng_for(sc.seed, "data")
        N, D, K, dtype = sc.batch_size, sc.input_size, sc.output_size, sc.dtype
        if self.full is None:
            kind = sc.data.targets
            for _ in range(sc.steps):
                X = rng.standard_normal((N, D))
                if kind == "onehot":
                    T = rules.one_hot(rng.integers(0, K, size=N), K)
                elif kind == "soft":
                    T = rng.dirichlet(np.ones(K), size=N)
                else:
                    T = rng.standard_normal((N, K))
                yield as_dtype(X, dtype), as_dtype(T, dtype)
        else:
            X, T = self.full
            order = np.empty(0, dtype=np.int64)
            for _ in range(sc.steps):
                if len(order) < N:
                    order = np.concatenate([order, rng.permutation(len(X))])
                rows, order = order[:N], order[N:]
                yield as_dtype(X[rows], dtype), as_dtype(T[rows], dtype)


def batches(scenario: Scenario) -> Batches:
    """One (X, T) per step, made as the steps need them (:class:`Batches`)."""
    return Batches(scenario)
