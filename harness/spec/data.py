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
from harness.core import components
from harness.core.errors import SpecError
from harness.spec.scenario import Scenario, harness_problem
from harness.spec.state import as_dtype, param_shapes, rng_for

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


def linear_positions(scenario: Scenario) -> list[int]:
    """The layer position (1-based) of each linear-type layer, in order: a weights file's ``W1``,
    ``W2`` … count linear layers only, the harness's parameter names every layer."""
    return [i for i, layer in enumerate(scenario.layers, start=1) if layer.info.has_weights]


def weights(scenario: Scenario) -> dict[str, np.ndarray]:
    """``--load-weights``: the file's weights and biases under the harness's parameter names
    (``W{layer position}``), rounded to the run's dtype; {} without the flag."""
    if not scenario.weights:
        return {}
    positions, model = linear_positions(scenario), param_shapes(scenario)
    shapes = {f"W{index}": model[f"W{position}"] for index, position in enumerate(positions, start=1)}
    path = rules.input_file(scenario.weights, "weights file", "give an existing .npz file")
    st = os.stat(path)
    filed = _weights_file(str(path), tuple(shapes.items()), (st.st_size, st.st_mtime_ns, st.st_ino))
    return {f"{p}{position}": as_dtype(filed[f"{p}{index}"], scenario.dtype)
            for index, position in enumerate(positions, start=1) for p in "Wb"}


@functools.lru_cache(maxsize=2)
def _weights_file(path: str, shapes: tuple, stamp: tuple) -> dict[str, np.ndarray]:
    """A weights file read and checked once while ``stamp`` (its size, time and inode) holds."""
    return rules.weights_file(path, dict(shapes))


def epoch_steps(scenario: Scenario) -> int:
    """The steps of one epoch: as many batches as the libraries' ``DataLoader`` makes of the
    training rows (the last one smaller when the batch size does not divide them); synthetic
    data, fresh rows every step, never comes round again: the whole run is one epoch."""
    full = dataset(scenario)
    return scenario.steps if full is None else -(-len(full[0]) // scenario.batch_size)


class LoaderBatches(Batches):
    """What the libraries' ``create_npz_dataloaders`` should yield (``--build nerva``): the
    training rows of :func:`loader_arrays` in order, ``batch_size`` at a time (the last batch of
    an epoch holds the rest), epoch after epoch, never shuffled; targets one-hot, all float32.
    Synthetic data: the harness's own seeded batches, one epoch of the whole run."""

    def _stream(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sc = self.scenario
        if self.full is None:
            yield from super()._stream()
            return
        X, T = self.full
        N, per_epoch = sc.batch_size, epoch_steps(sc)
        for step in range(sc.steps):
            rows = slice(step % per_epoch * N, (step % per_epoch + 1) * N)
            yield as_dtype(X[rows], "float32"), as_dtype(T[rows], "float32")


def loader_arrays(scenario: Scenario) -> dict[str, np.ndarray]:
    """A built-in source as a file in the libraries' format (Xtrain, Ttrain, Xtest, Ttest, the
    labels as integers), for ``--build nerva``: the digits whole (also as the test set), synthetic
    data as the run's own batches, one after another (so one epoch is the whole run)."""
    if scenario.data.source == "synthetic":
        X, T = (np.concatenate(part) for part in zip(*Batches(scenario.with_(build="harness"))))
    else:
        X, T = dataset(scenario)
    X, labels = X.astype(np.float32), np.argmax(T, axis=1)
    return {"Xtrain": X, "Ttrain": labels, "Xtest": X, "Ttest": labels}


def with_epochs(scenario: Scenario, epochs: int | None, steps_given: bool) -> Scenario:
    """``--epochs E``: E passes over the training set, E x :func:`epoch_steps` steps, capped by
    ``--steps`` when that is given too."""
    if epochs is None:
        return scenario
    rules.integer(epochs, "--epochs")
    if scenario.data.source == "synthetic":
        raise SpecError("--epochs counts passes over a dataset, and synthetic data has none: give --steps, "
                        "or --load-dataset FILE.npz")
    steps = epochs * epoch_steps(scenario)
    return scenario.with_(steps=rules.steps(min(steps, scenario.steps) if steps_given else steps, "--epochs' steps"))


def with_build(scenario: Scenario, given: str | None) -> Scenario:
    """The build of a run: the one given (``nerva`` only where the libraries can express the
    scenario, else bad input), or for an ad-hoc run on a user's ``.npz`` file (what tools/mlp.py
    runs) ``nerva`` when they can express it, else ``harness``."""
    problem = None if given == "harness" else native_problem(scenario.with_(build="nerva"))
    if given is None and not scenario.data.source.startswith("npz:"):
        problem = problem or "the default for a run on built-in data"
    if problem is not None and given == "nerva":
        raise SpecError(f"--build nerva cannot run this: {problem}")
    built = scenario.with_(build="harness" if given == "harness" or problem else "nerva")
    own = harness_problem(built) if built.build == "harness" else None
    if own is not None:
        raise SpecError(f"{own}: give --build nerva and a --load-dataset FILE.npz"
                        + (f" ({problem})" if problem else ""))
    return built


NATIVE_ONLY_FILES = ("Xtest", "Ttest")
"""What ``create_npz_dataloaders`` reads besides Xtrain and Ttrain."""

SYNTHETIC_FILE_ROWS = 2**20
"""The most rows of synthetic data a library-built run writes to its file (every step's batch):
a bound on what the file holds in memory, which otherwise grows with ``--steps``."""


def native_problem(scenario: Scenario) -> str | None:
    """Why the libraries cannot build and train ``scenario`` themselves (``--build nerva``), or
    None when they can: their loaders read a ``.npz`` file with test data too and make float32,
    their loop follows its own trajectory, and the harness's extensions are not theirs."""
    extension = next((f"layer {layer.kind}" for layer in scenario.layers if layer.kind in components.CUSTOM), None) \
        or (f"loss {scenario.loss}" if scenario.loss in components.CUSTOM else None) \
        or next((f"initializer {layer.init}" for layer in scenario.layers
                 if (layer.init or "").startswith("LeCun") or layer.init in components.SOURCES), None) \
        or next((f"optimizers {layer.optimizer_text!r}" for layer in scenario.layers
                 if len({str(opt) for _, opt in layer.optimizers}) > 1), None)
    if extension:
        return f"{extension} is an extension of this harness, not the libraries'"
    if scenario.data.source == "synthetic" and scenario.data.targets != "onehot":
        return f"the libraries' loaders read class labels, not {scenario.data.targets} targets"
    if scenario.data.source == "synthetic" and scenario.steps * scenario.batch_size > SYNTHETIC_FILE_ROWS:
        return (f"synthetic data is handed to the libraries' loaders as one file of every step's rows, and "
                f"{scenario.steps} x {scenario.batch_size} rows is more than {SYNTHETIC_FILE_ROWS}: give fewer --steps")
    if scenario.dtype != "float32":
        return "the libraries' loaders make float32 batches: use --dtype float32"
    if scenario.mode != "trajectory":
        return "the libraries' own loop follows its own trajectory: use --mode trajectory"
    dataset(scenario)  # the file checked first (its own messages), then only its member names read
    if not scenario.data.source.startswith("npz:"):
        return None
    path = rules.dataset_path(scenario.data.source[4:])
    with np.load(path, allow_pickle=False) as archive:
        missing = [name for name in NATIVE_ONLY_FILES if name not in archive.files]
    if missing:
        return f"the libraries' create_npz_dataloaders also reads {' and '.join(missing)}, which {path} lacks"
    return None


def batches(scenario: Scenario) -> Batches:
    """One (X, T) per step, made as the steps need them (:class:`Batches`; a run built by the
    libraries: :class:`LoaderBatches`, what their loaders should yield)."""
    return LoaderBatches(scenario) if scenario.build == "nerva" else Batches(scenario)
