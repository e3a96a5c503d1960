"""The leaf input rules: numbers, integers, lists, paths, archives and dataset files.

These rules import nothing above :mod:`harness.core`, so that the parsers of :mod:`harness.spec.scenario`
can apply them while they parse; the checks of a whole command line (backends, catalog entries,
bundles, memory) apply them from above (:mod:`harness.cli.checks`, :mod:`harness.reports.bundle`,
:mod:`harness.spec.memory`).

Every rule raises :class:`~harness.core.errors.SpecError` with one line that names the input
and says how to mend it; the command line prints it and exits 2. Nothing here imports a
framework, and nothing is ever unpickled (archives are read with ``allow_pickle=False``, and an
array that would need pickle is refused from its header, before it is read). Code that runs
after the checks assumes valid input: an exception there is a harness bug.

The rules (README, "Validation: what bad input is"):

- numbers: every parameter of a spec string is finite; a learning rate is above 0; a
  Momentum/Nesterov ``mu`` lies in [0, 1]; SReLU needs ``tl <= tr``; LeakyReLU, AllReLU and ELU
  take any finite alpha. There are no tolerances to set (the unit is the rounding bound).
- integers: steps 1 to :data:`MAX_STEPS`, batch size and sizes at least 1, a seed from 0 to
  2**64 - 1, explore's ``--examples`` at least 1;
- lists: no empty item (``ReLU;;Softmax``, ``--backends ''``, ``numpy,,torch``);
- dataset files (:func:`dataset_file`): an existing ``.npz`` archive with ``Xtrain`` and
  ``Ttrain``, real numbers only (no text, no Python objects), finite, as many rows in both, at
  least one row and at least a batch of them; targets either integer class labels 0 … K-1 (one
  per row) or a matrix of K columns (K = the output layer's width);
- output paths (:func:`output_file`, :func:`output_dir`): writable before the run starts.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.core.errors import SpecError
from harness.spec.memory import BYTES, memory_for

MAX_STEPS = 10**12  # far beyond any run that could finish; keeps every count a machine integer
MAX_SEED = 2**64 - 1


# ------------------------------------------------------------------------------------ numbers

def integer(value: Any, what: str, low: int = 1, high: int | None = None) -> int:
    """An integer (not a bool) in [low, high]; ``what`` names the input (``--steps``, ``seed``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"{what} must be a whole number, got {value!r}")
    value = int(value)
    if value < low:
        raise SpecError(f"{what} must be {'0 or more' if low == 0 else f'at least {low}'}, not {value}")
    if high is not None and value > high:
        raise SpecError(f"{what} must be at most {high}, not {value}")
    return value


def seed(value: Any, what: str = "seed") -> int:
    return integer(value, what, 0, MAX_SEED)


def steps(value: Any, what: str = "steps") -> int:
    return integer(value, what, 1, MAX_STEPS)


def finite(value: float, what: str, example: str) -> float:
    """A finite float; ``example`` is a valid way to write it (the mend)."""
    if not math.isfinite(value):
        raise SpecError(f"{what} is {value!r}, not a finite number: give e.g. {example}")
    return float(value)


# (component, parameter) -> (lowest, highest) allowed, both included; None: unbounded.
# Momentum and Nesterov: velocity = mu * velocity - eta * gradient; mu above 1 makes every step
# larger than the one before, below 0 reverses the velocity each step.
RANGES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("Momentum", "mu"): (0.0, 1.0),
    ("Nesterov", "mu"): (0.0, 1.0),
}


def component(kind: str, args: dict[str, float], text: str, what: str) -> dict[str, float]:
    """The numbers of one layer or optimizer (``LeakyReLU(alpha=0.1)``, ``Momentum(0.9)``)."""
    for key, value in args.items():
        finite(value, f"{what} {text!r}: {key}", f"{kind}({key}=0.5)")
        low, high = RANGES.get((kind, key), (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
            raise SpecError(f"{what} {text!r}: {key} = {value!r} is outside {span}; "
                            f"give e.g. {kind}({key}=0.9)")
    if kind == "SReLU" and args["tl"] > args["tr"]:
        raise SpecError(f"layer {text!r}: tl = {args['tl']!r} lies above tr = {args['tr']!r}; SReLU needs tl <= tr "
                        f"(its left threshold first), e.g. SReLU(al=0.05, tl=-0.3, ar=0.2, tr=0.4)")
    return args


def learning_rate(value: float, text: Any) -> float:
    finite(value, f"learning rate {text!r}", "0.01 or Constant(0.01)")
    if not value > 0:
        raise SpecError(f"learning rate must be positive, got {value!r} (from {text!r}): give e.g. 0.01")
    return float(value)


def items(text: str, parts: list[str], what: str, sep: str, example: str) -> list[str]:
    """The items of a separated list, none of them empty."""
    for i, part in enumerate(parts, 1):
        if not part.strip():
            raise SpecError(f"{what} {text!r} has an empty item at position {i} (two {sep!r} in a row, or one "
                            f"at an end): write e.g. {example!r}")
    return [p.strip() for p in parts]


# ------------------------------------------------------------------------------------ paths

def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(directory: Path, what: str, mend: str) -> None:
    """Create and remove a file in ``directory``: the only test that holds for root and for
    read-only file systems alike."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".nerva-consistency-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise SpecError(f"{what}: cannot write in {str(directory)!r} ({e.strerror or e}); {mend}") from None


def output_file(text: str, flag: str) -> Path:
    """A file a report will be written to: it may not exist yet (its directories are created)."""
    if not text.strip():
        raise SpecError(f"{flag} {text!r} is an empty name; give a file name, e.g. {flag} report.json")
    path = Path(os.path.abspath(text))
    mend = f"give {flag} a path in a directory you can write to"
    if path.is_dir():
        raise SpecError(f"{flag} {text!r} is a directory; give a file name, e.g. {flag} report.json")
    if path.exists() and not os.access(path, os.W_OK):
        raise SpecError(f"{flag} {text!r} exists and cannot be written; {mend}")
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise SpecError(f"{flag} {text!r}: {str(ancestor)!r} is a file, not a directory; {mend}")
    _probe(ancestor, f"{flag} {text!r}", mend)
    return path


def output_dir(text: str, flag: str) -> Path:
    """A directory files will be written into: it may not exist yet (it is created when needed)."""
    if not text.strip():
        raise SpecError(f"{flag} {text!r} is an empty name; give a directory (it is created if missing)")
    path = Path(os.path.abspath(text))
    mend = f"give {flag} a directory you can write to"
    if path.exists() and not path.is_dir():
        raise SpecError(f"{flag} {text!r} is a file; give a directory (it is created if missing)")
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():
        raise SpecError(f"{flag} {text!r}: {str(ancestor)!r} is a file, not a directory; {mend}")
    _probe(ancestor, f"{flag} {text!r}", mend)
    return path


def input_file(text: str, what: str, mend: str) -> Path:
    """An existing, readable, non-empty file (absolute path)."""
    if not str(text).strip():
        raise SpecError(f"{what} {text!r} is an empty name; {mend}")
    path = Path(os.path.abspath(text))
    if path.is_dir():
        raise SpecError(f"{what} {text!r} is a directory, not a file; {mend}")
    if not path.exists():
        raise SpecError(f"{what} {text!r} does not exist; {mend}")
    if not os.access(path, os.R_OK):
        raise SpecError(f"{what} {text!r} cannot be read (permissions); {mend}")
    if path.stat().st_size == 0:
        raise SpecError(f"{what} {text!r} is an empty file; {mend}")
    return path


# ------------------------------------------------------------------------------------ archives

class Archive:
    """A ``.npz`` file opened as what it is, a zip archive of ``.npy`` members, so that every
    member's dtype and shape are known from its header before anything is read, and nothing is
    unpickled. ``what`` names the file in messages (``dataset '/d.npz'``); ``mend`` says what to do."""

    def __init__(self, path: Path, what: str, mend: str, damaged: str):
        self.path, self.what, self.mend, self.damaged = path, what, mend, damaged
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] != b"PK":
            kind = "a .npy array" if head[:4] == b"\x93NUM" else \
                "text" if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head) else "not a zip archive"
            raise SpecError(f"{what} is {kind}, not an .npz archive; {mend}")
        try:
            self.zip = zipfile.ZipFile(path)
            names = self.zip.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise SpecError(f"{what} {damaged}: not a complete zip archive ({e}); {mend}") from None
        self.headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        try:
            for name in names:
                if not name.endswith(".npy"):
                    raise SpecError(f"{what} {damaged}: member {name!r} is not an .npy array; {mend}")
                self.headers[name[:-4]] = self._header(name)
        except SpecError:
            self.zip.close()
            raise

    def _header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        fmt = np.lib.format
        try:
            with self.zip.open(name) as fp:
                version = fmt.read_magic(fp)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(fp)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error, SyntaxError) as e:
            raise SpecError(f"{self.what} {self.damaged}: member {name!r} has no readable array header "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); {self.mend}") from None
        return tuple(int(n) for n in shape), dtype

    def read(self, name: str) -> np.ndarray:
        """A member's array; one holding Python objects is refused from its header."""
        shape, dtype = self.headers[name]
        if dtype.hasobject:
            raise SpecError(f"{self.what}: {name} holds Python objects (it would need pickle, which is never "
                            f"loaded); save it as numbers; {self.mend}")
        try:
            with self.zip.open(name + ".npy") as fp:
                return np.lib.format.read_array(fp, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
            raise SpecError(f"{self.what} {self.damaged}: {name} cannot be read "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); {self.mend}") from None

    def close(self) -> None:
        self.zip.close()


def _real(a_dtype: np.dtype, what: str, name: str, mend: str) -> None:
    if a_dtype.kind not in "biuf":
        kind = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates",
                "m": "time spans", "V": "records"}.get(a_dtype.kind, f"dtype {a_dtype}")
        raise SpecError(f"{what}: {name} holds {kind} ({a_dtype}), not real numbers; {mend}")


def first_nonfinite(a: np.ndarray) -> tuple[tuple[int, ...], float] | None:
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return index, float(a[index])


def shape_text(shape: Iterable[int]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(tuple(shape)) == 1 else "") + ")"


# ------------------------------------------------------------------------------------ datasets

def dataset_path(text: str) -> Path:
    """The absolute path of a dataset file that exists and is a non-empty file."""
    return input_file(text, "dataset file", "give an existing Nerva .npz file with Xtrain and Ttrain, "
                                            "or synthetic, digits or digits784")


def dataset_file(text: str, D: int, K: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, T) of a Nerva dataset file as float64 (N, D) and (N, K), every rule checked.

    Targets: class labels (one integer 0 … K-1 per row, as integers or whole floats) become
    one-hot rows; a matrix of K columns is taken as it is.
    """
    path = dataset_path(text)
    what = f"dataset {str(path)!r}"
    mend = "a Nerva dataset is an .npz file with Xtrain (N rows of D numbers) and Ttrain (N class labels or N rows of K numbers)"
    archive = Archive(path, what, mend, "is damaged")
    try:
        for name in ("Xtrain", "Ttrain"):
            if name not in archive.headers:
                held = ", ".join(sorted(archive.headers)) or "nothing"
                raise SpecError(f"{what} has no array {name} (it holds {held}); {mend}")
        (xs, xd), (ts, td) = archive.headers["Xtrain"], archive.headers["Ttrain"]
        for name, dt in (("Xtrain", xd), ("Ttrain", td)):
            _real(dt, what, name, mend)
        if len(xs) == 0 or len(ts) == 0:
            name = "Xtrain" if len(xs) == 0 else "Ttrain"
            raise SpecError(f"{what}: {name} is a single number (shape ()), not one row per sample; {mend}")
        if xs[0] == 0:
            raise SpecError(f"{what} has no rows (Xtrain has shape {shape_text(xs)}); it needs at least {batch_size} "
                            f"(the batch size)")
        if xs[0] != ts[0]:
            raise SpecError(f"{what}: Xtrain has {xs[0]} rows but Ttrain has {ts[0]}; they need one target per row")
        features = math.prod(xs[1:])
        if features == 0:
            raise SpecError(f"{what}: Xtrain has shape {shape_text(xs)}, no features; {mend}")
        if features != D:
            raise SpecError(f"{what} has {features} features per row (Xtrain {shape_text(xs)}), but sizes start with {D}: "
                            f"start --sizes with {features}")
        if len(ts) > 2:
            raise SpecError(f"{what}: Ttrain has shape {shape_text(ts)}; give class labels (shape ({ts[0]},)) or a "
                            f"matrix of {K} columns (shape ({ts[0]}, {K}))")
        if len(ts) == 2 and ts[1] != K:
            raise SpecError(f"{what} has targets of width {ts[1]} (Ttrain {shape_text(ts)}), but the output layer has {K} "
                            f"units: end --sizes with {ts[1]}, or give class labels 0 … {K - 1}")
        rows = xs[0]
        memory_for(BYTES * rows * (D + K) * 2, f"{what} ({rows:,} rows of {D} + {K} values)",
                   "use a smaller dataset")
        if rows < batch_size:
            raise SpecError(f"batch size {batch_size} is larger than {what} ({rows} rows): give --batch-size {rows} "
                            "or less")
        X = archive.read("Xtrain").astype(np.float64).reshape(rows, D)
        T = archive.read("Ttrain")
    finally:
        archive.close()
    for name, a in (("Xtrain", X), ("Ttrain", T)):
        bad = first_nonfinite(np.asarray(a, dtype=np.float64))
        if bad is not None:
            raise SpecError(f"{what}: {name}{list(bad[0])} is {bad[1]!r}; every value must be finite")
    if T.ndim == 1:
        labels = T
        if labels.dtype.kind == "f":
            whole = labels == np.round(labels)
            if not whole.all():
                i = int(np.argmin(whole))
                raise SpecError(f"{what}: class label Ttrain[{i}] is {float(labels[i])!r}, not a whole number; give integer "
                                f"labels 0 … {K - 1}, or one row of {K} target values per sample")
        labels = labels.astype(np.int64)
        if (labels < 0).any():
            i = int(np.argmax(labels < 0))
            raise SpecError(f"{what}: class label Ttrain[{i}] is {int(labels[i])}; class labels count from 0 "
                            f"(0 … {K - 1} for {K} output units): relabel the classes")
        if (labels >= K).any():
            i = int(np.argmax(labels >= K))
            raise SpecError(f"{what}: class label Ttrain[{i}] is {int(labels[i])}, but the output layer has {K} units "
                            f"(labels 0 … {K - 1}): end --sizes with {int(labels.max()) + 1} or more")
        return X, one_hot(labels, K)
    return X, T.astype(np.float64)


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """Rows of the identity picked by ``labels`` (the values of ``np.eye(classes)[labels]``,
    without the classes x classes identity)."""
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def enough_rows(rows: int, batch_size: int, what: str) -> None:
    if rows < batch_size:
        raise SpecError(f"batch size {batch_size} is larger than {what} ({rows} rows): give --batch-size {rows} or less")


# ------------------------------------------------------------------------------------ weights files

def weights_file(text: str, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The arrays of a weights file (``--load-weights``) as float64, every rule checked: an
    .npz archive as the libraries' ``save_weights_and_bias`` writes it, ``W1``, ``b1``, ``W2`` …
    numbered by linear layer; ``shapes`` gives each ``W`` key's (K, D). W has that shape, b K
    numbers (shape (K,), (1, K) or (K, 1)), real and finite; no other arrays."""
    mend = "give the .npz file a library's save_weights_and_bias wrote for this model (W1, b1, W2, b2 …)"
    path = input_file(text, "weights file", mend)
    what = f"weights file {str(path)!r}"
    archive = Archive(path, what, mend, "is damaged")
    try:
        wanted = [*shapes, *(f"b{key[1:]}" for key in shapes)]
        extra = sorted(set(archive.headers) - set(wanted))
        if extra:
            raise SpecError(f"{what} holds {extra[0]}, which the model ({len(shapes)} linear layer(s)) has not; {mend}")
        out = {}
        for key in wanted:
            if key not in archive.headers:
                raise SpecError(f"{what} has no array {key}; {mend}")
            shape, dtype = archive.headers[key]
            _real(dtype, what, key, mend)
            K, D = shapes[key] if key[0] == "W" else shapes["W" + key[1:]]
            fits = shape == (K, D) if key[0] == "W" else shape in ((K,), (1, K), (K, 1))
            if not fits:
                need = shape_text((K, D)) if key[0] == "W" else f"{shape_text((K,))} or {shape_text((1, K))}"
                raise SpecError(f"{what}: {key} has shape {shape_text(shape)}, but the model needs {need}; {mend}")
            a = np.asarray(archive.read(key), dtype=np.float64).reshape((K, D) if key[0] == "W" else (K,))
            bad = first_nonfinite(a)
            if bad is not None:
                raise SpecError(f"{what}: {key}{list(bad[0])} is {bad[1]!r}, not a finite number; {mend}")
            out[key] = a
        return out
    finally:
        archive.close()
