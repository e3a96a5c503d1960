"""The one validation layer: every input from outside is checked here, before any work starts.

What comes from outside: the command line's flags and Nerva spec strings (:mod:`harness.spec`
parses their grammar and asks here whether each number is allowed), catalog entries, dataset
files, repro bundles, the paths reports and bundles are written to, and whether a model and its
batch fit in memory. Every rule raises :class:`~harness.errors.SpecError` with one line that names
the input and says how to mend it; the command line prints it and exits 2. Nothing here imports
a framework, and nothing is ever unpickled (archives are read with ``allow_pickle=False``, and an
array that would need pickle is refused from its header, before it is read).

Code below this layer assumes valid input: an exception there is a harness bug, and the command
line says so (:func:`harness.cli.main`).

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
- bundles (:func:`bundle`): a zip archive of the documented members only, a JSON ``meta`` with
  every key a replay reads, a spec that builds, every parameter of that spec with its shape, the
  batches numbered from 0 with the spec's shapes, finite values;
- output paths (:func:`output_file`, :func:`output_dir`): writable before the run starts;
- memory (:func:`memory`): the estimated buffers of the model and batch for every backend and
  the oracle (:func:`estimate`) must fit in the memory available now.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from harness.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from harness.spec import Scenario

MAX_STEPS = 10**12  # far beyond any run that could finish; keeps every count a machine integer
MAX_SEED = 2**64 - 1
BYTES = 8  # every traced value is a float64 copy


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


# ------------------------------------------------------------------------------------ backends

def backends(text: str | None, at_least: int = 2, flag: str = "--backends") -> list[str]:
    """The backends of a ``--backends`` flag (None: every installed one); names are checked
    without importing anything."""
    import adapters

    if text is None:
        names = adapters.available()
    else:
        if not text.strip():
            raise SpecError(f"{flag} {text!r} names no backend: give e.g. {flag} numpy,torch "
                            "(or leave the flag out for every installed backend)")
        names = items(text, text.split(","), flag, ",", "numpy,torch")
        for name in names:
            reason = adapters.why_unavailable(name)
            if reason:
                raise SpecError(reason)
        if len(set(names)) != len(names):
            raise SpecError(f"backend listed twice in {flag} {text!r}")
    if len(names) < at_least:
        raise SpecError(f"need at least {'two backends to compare' if at_least == 2 else f'{at_least} backend(s)'}, "
                        f"have {', '.join(names) or 'none'}: install more "
                        "(pip install 'nerva-consistency[all]' -c constraints.txt)")
    return names


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


def _first_nonfinite(a: np.ndarray) -> tuple[tuple[int, ...], float] | None:
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return index, float(a[index])


def _shape(shape: Iterable[int]) -> str:
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
            raise SpecError(f"{what} has no rows (Xtrain has shape {_shape(xs)}); it needs at least {batch_size} "
                            f"(the batch size)")
        if xs[0] != ts[0]:
            raise SpecError(f"{what}: Xtrain has {xs[0]} rows but Ttrain has {ts[0]}; they need one target per row")
        features = math.prod(xs[1:])
        if features == 0:
            raise SpecError(f"{what}: Xtrain has shape {_shape(xs)}, no features; {mend}")
        if features != D:
            raise SpecError(f"{what} has {features} features per row (Xtrain {_shape(xs)}), but sizes start with {D}: "
                            f"start --sizes with {features}")
        if len(ts) > 2:
            raise SpecError(f"{what}: Ttrain has shape {_shape(ts)}; give class labels (shape ({ts[0]},)) or a "
                            f"matrix of {K} columns (shape ({ts[0]}, {K}))")
        if len(ts) == 2 and ts[1] != K:
            raise SpecError(f"{what} has targets of width {ts[1]} (Ttrain {_shape(ts)}), but the output layer has {K} "
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
        bad = _first_nonfinite(np.asarray(a, dtype=np.float64))
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


# ------------------------------------------------------------------------------------ memory

def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable), or None where it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.0f} MB"


def memory_for(need: int, what: str, mend: str) -> None:
    free = available_memory()
    if free is not None and need > free:
        raise SpecError(f"{what} needs about {_gb(need)}, but {_gb(free)} of memory is available now; {mend}")


def model_size(scenario: "Scenario") -> tuple[int, int]:
    """(parameters, activations): the elements of one model's parameters, and of one step's
    tensors for one batch (X, T, Y, DY and every layer's X, Z, DZ, DX and output)."""
    N, width = scenario.batch_size, scenario.input_size
    params, acts = 0, N * (width + 3 * scenario.output_size)
    for layer in scenario.layers:
        units = layer.units
        if layer.info.linear:
            params += units * width + units + (4 if layer.kind == "SReLU" else 0)
        else:
            params += 2 * width
        acts += N * (2 * width + 3 * units)
        width = units
    return params, acts


def estimate(scenario: "Scenario", n_backends: int, oracle: str | None) -> int:
    """Bytes the buffers of a run take at least (not the frameworks' own code and caches).

    Per backend and for an oracle, in float64 (the frameworks' float32 buffers are counted as
    float64, which covers their workspaces): the parameters, their gradients and velocities,
    the trace's copies of all three and the state copies (9 x parameters), and a step's tensors
    in the framework and in the trace (3 x activations). The comparator holds, for the step it
    judges and the step being computed, a reference, a bound and a ratio per element (8 x
    (2 parameters + activations)). The exact SymPy oracle holds Python numbers: 1 kB an element.
    """
    P, A = model_size(scenario)
    participants = n_backends + (oracle is not None)
    need = BYTES * (participants * (9 * P + 3 * A) + 8 * (2 * P + A))
    if oracle == "sympy":
        need += 1000 * (P + A)
    return need


def memory(scenario: "Scenario", n_backends: int, oracle: str | None, source: str = "",
           mend: str = "use smaller --sizes or --batch-size") -> None:
    """Refuse a model or batch whose buffers would not fit in the memory available now
    (``source``: where the scenario comes from, e.g. a bundle, to name in the message)."""
    P, A = model_size(scenario)
    what = source + (f"sizes {','.join(map(str, scenario.sizes))} with batch size {scenario.batch_size} "
            f"({P:,} parameters, {A:,} values per step, on {n_backends} backend(s)"
            + (f" and the {oracle} oracle)" if oracle else ")"))
    memory_for(estimate(scenario, n_backends, oracle), what, mend)


# ------------------------------------------------------------------------------------ bundles

BUNDLE_READS = ("nerva-consistency/bundle/1", "nerva-consistency/bundle/2")  # schema 1: no platform, no verdict
BUNDLE_SPEC = ("layers", "sizes", "optimizers", "init-weights", "loss", "learning-rate", "batch-size", "steps",
               "targets", "dtype", "mode", "seed")
ORACLES = ("sympy", "autodiff", "none")


def _need(cond: bool, what: str, problem: str, mend: str) -> None:
    if not cond:
        raise SpecError(f"{what} is damaged: {problem}; {mend}")


def _meta(meta: Any, what: str, mend: str, reads: tuple[str, ...]) -> dict:
    """Every key of ``meta`` that a replay reads, with its type."""
    _need(isinstance(meta, dict), what, "its meta is not a JSON object", mend)
    schema = meta.get("schema")
    if schema not in reads:
        raise SpecError(f"{what} is a bundle of schema {schema!r}; this version reads {' and '.join(reads)}")

    def has(key: str, types: type | tuple, container: dict = meta, where: str = "meta") -> Any:
        _need(key in container, what, f"{where} has no {key!r}", mend)
        _need(isinstance(container[key], types), what, f"{where}[{key!r}] is a {type(container[key]).__name__}", mend)
        return container[key]

    has("scenario", str)
    spec = has("spec", dict)
    for key in BUNDLE_SPEC:
        has(key, (str, int, float), spec, "meta['spec']")
    names = has("backends", list)
    _need(bool(names) and all(isinstance(b, str) and b for b in names), what, "meta['backends'] is not a list of names",
          mend)
    _need(has("oracle", str) in ORACLES, what, f"meta['oracle'] is {meta['oracle']!r}, not one of {', '.join(ORACLES)}",
          mend)
    versions = has("versions", dict)
    _need(all(isinstance(v, (str, type(None))) for v in versions.values()), what, "meta['versions'] holds non-text",
          mend)
    numbers = has("numbers", dict)
    per_step = has("per_step", list, numbers, "meta['numbers']")
    _need(all(isinstance(s, dict) and "step" in s and isinstance(s.get("ratio"), dict) for s in per_step), what,
          "meta['numbers']['per_step'] is not a list of steps with ratios", mend)
    has("failures", dict, numbers, "meta['numbers']")
    has("first_divergence", (dict, type(None)), numbers, "meta['numbers']")

    def verdict_like(v: dict, where: str, cls: str) -> None:
        _need(isinstance(v.get("findings"), list) and all(
            isinstance(f, dict) and isinstance(f.get(cls), str) and isinstance(f.get("backends"), list)
            and all(isinstance(b, str) for b in f["backends"]) for f in v["findings"]), what,
            f"{where} has no list of findings (class and backends)", mend)
        _need("first_divergence" in v, what, f"{where} has no 'first_divergence'", mend)
        first = v["first_divergence"]
        _need(first is None or (isinstance(first, dict) and all(k in first for k in ("step", "tensor", "layer"))),
              what, f"{where}'s first_divergence lacks step, tensor or layer", mend)

    if "verdict" in meta:
        v = has("verdict", dict)
        _need("passed" in v, what, "meta['verdict'] has no 'passed'", mend)
        verdict_like(v, "meta['verdict']", "class")
    else:  # schema 1: derived from the findings and numbers
        has("findings", list)
        verdict_like({"findings": meta["findings"], "first_divergence": numbers["first_divergence"]}, "meta", "cls")
    platform = meta.get("platform")
    _need(platform is None or isinstance(platform, dict), what, "meta['platform'] is not an object", mend)
    if platform:
        for key, types in (("blas", list), ("env", dict), ("cpu_flags", list)):
            _need(platform.get(key) is None or isinstance(platform[key], types), what,
                  f"meta['platform'][{key!r}] is a {type(platform.get(key)).__name__}", mend)
        _need(all(isinstance(e, dict) for e in platform.get("blas") or []), what,
              "meta['platform']['blas'] is not a list of objects", mend)
    return meta


def bundle(text: str) -> tuple[dict, "Scenario", dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """(meta, scenario, initial state, batches) of a repro bundle, every rule checked before an
    array is read: the meta's keys, a spec that builds, the memory it needs, every parameter
    the spec's model has with its shape (and no other), the batches 0 … n-1 (1 <= n <= steps)
    with the spec's shapes, finite real values."""
    from harness import oracle as oracles
    from harness.spec import DataSpec, build_scenario
    from harness.state import param_shapes

    path = input_file(text, "bundle", "give a .npz bundle written by a failing run or by explore")
    what = f"bundle {str(path)!r}"
    mend = "it cannot be replayed; rerun the command that wrote it to write it again"
    archive = Archive(path, what, mend, "is damaged")
    try:
        _need("meta" in archive.headers, what, "it has no meta (is it a nerva-consistency bundle?)", mend)
        shape, dtype = archive.headers["meta"]
        _need(dtype.kind == "U" and shape == (), what, f"its meta is {dtype} of shape {_shape(shape)}, not one JSON text",
              mend)
        raw = archive.read("meta")
        try:
            meta = json.loads(str(raw))
        except ValueError as e:
            raise SpecError(f"{what} is damaged: its meta is not JSON ({e}); {mend}") from None
        meta = _meta(meta, what, mend, BUNDLE_READS)
        s = meta["spec"]
        ints = {key: _int(s[key], what, key, mend) for key in ("batch-size", "steps", "seed")}
        try:
            scenario = build_scenario(
                name=meta["scenario"], layers=str(s["layers"]), sizes=str(s["sizes"]), optimizers=str(s["optimizers"]),
                init_weights=str(s["init-weights"]) or None, loss=str(s["loss"]), lr=str(s["learning-rate"]),
                batch_size=ints["batch-size"], steps=ints["steps"], data=DataSpec("synthetic", str(s["targets"])),
                dtype=str(s["dtype"]), mode=str(s["mode"]), seed=ints["seed"], description=str(meta.get("description", "")))
            if scenario.data.targets not in ("onehot", "soft", "real"):
                raise SpecError(f"targets {scenario.data.targets!r} are not onehot, soft or real")
            oracle, _ = oracles.choose(scenario, meta["oracle"])
        except SpecError as e:
            raise SpecError(f"{what} is damaged: its spec is not valid ({e}); {mend}") from None
        held = sum(math.prod(shape) * BYTES for shape, _ in archive.headers.values())
        memory_for(estimate(scenario, len(meta["backends"]), oracle) + held,
                   f"{what} ({len(archive.headers)} arrays of {held:,} bytes as float64, sizes {s['sizes']}, "
                   f"batch size {s['batch-size']})", "it was written on a larger machine, or its spec was altered")
        expected = param_shapes(scenario)
        state_names = {k[len("state/"):] for k in archive.headers if k.startswith("state/")}
        for name, want in expected.items():
            _need(name in state_names, what, f"state/{name} is missing (the spec's model has {', '.join(expected)})", mend)
            got = archive.headers[f"state/{name}"][0]
            _need(got == want, what, f"state/{name} has shape {_shape(got)}, but the spec "
                                     f"({s['layers']}, sizes {s['sizes']}) needs {_shape(want)}", mend)
        extra = sorted(state_names - set(expected))
        _need(not extra, what, f"state/{extra[0] if extra else ''} is not a parameter of the spec's model", mend)
        N, D, K = scenario.batch_size, scenario.input_size, scenario.output_size
        steps_found: set[int] = set()
        for key in archive.headers:
            if key == "meta" or key.startswith("state/"):
                continue
            parts = key.split("/")
            ok = len(parts) == 3 and parts[0] == "data" and parts[1].isdigit() and parts[2] in ("X", "T")
            _need(ok, what, f"member {key!r} is not meta, state/<parameter> or data/<step>/X|T", mend)
            steps_found.add(int(parts[1]))
        n = len(steps_found)
        _need(n >= 1, what, "it holds no batch (data/0/X)", mend)
        _need(steps_found == set(range(n)), what, f"its batches are not numbered 0 … {n - 1} "
                                                  f"(data/{min(set(range(n)) - steps_found, default=n)} is missing)", mend)
        _need(n <= scenario.steps, what, f"it holds {n} batches for a spec of {scenario.steps} steps", mend)
        for i in range(n):
            for name, want in (("X", (N, D)), ("T", (N, K))):
                key = f"data/{i}/{name}"
                _need(key in archive.headers, what, f"{key} is missing", mend)
                got = archive.headers[key][0]
                _need(got == want, what, f"{key} has shape {_shape(got)}, but the spec (batch size {N}, sizes "
                                         f"{s['sizes']}) needs {_shape(want)}", mend)
        for key, (_, dt) in archive.headers.items():
            if key != "meta":
                _need(dt.kind == "f", what, f"{key} holds {dt}, not floating-point numbers", mend)

        def array(key: str) -> np.ndarray:
            a = archive.read(key).astype(np.float64)
            bad = _first_nonfinite(a)
            _need(bad is None, what, f"{key}{list(bad[0]) if bad else ''} is {bad[1] if bad else ''!r}, not finite", mend)
            return a

        state0 = {name: array(f"state/{name}") for name in expected}
        data = [(array(f"data/{i}/X"), array(f"data/{i}/T")) for i in range(n)]
    finally:
        archive.close()
    meta.setdefault("platform", None)
    return meta, scenario, state0, data


def _int(value: Any, what: str, key: str, mend: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise SpecError(f"{what} is damaged: meta['spec'][{key!r}] is {value!r}, not a whole number; {mend}") from None


# ------------------------------------------------------------------------------------ command lines

AD_HOC_DEFAULTS = {"optimizers": "GradientDescent", "init-weights": None, "loss": "SquaredError",
                   "learning-rate": "0.01", "batch-size": 16, "steps": 10, "dataset": "synthetic"}
SCENARIO_FLAGS = ("layers", "sizes", "optimizers", "init-weights", "loss", "learning-rate", "batch-size", "dataset",
                  "targets", "steps", "seed", "dtype", "mode")


def ready(scenario: "Scenario", n_backends: int, oracle: str | None) -> str | None:
    """A scenario that can start: its data source read and checked (a dataset file, the rows for
    a batch), its oracle available, its buffers within memory. Returns the oracle chosen."""
    from harness import oracle as oracles
    from harness.data import batches

    batches(scenario)
    chosen, _ = oracles.choose(scenario, oracle)
    memory(scenario, n_backends, chosen)
    return chosen


def scenario_from_flags(args: Any) -> "Scenario":
    """The scenario of ``run``'s flags: a catalog entry with the flags given as overrides, or an
    ad-hoc model (``--layers`` and ``--sizes`` needed, the rest defaulted)."""
    import scenarios

    given = {k: getattr(args, k.replace("-", "_")) for k in SCENARIO_FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    if args.scenario is not None:
        return scenarios.get(args.scenario, **given)
    missing = [f"--{k}" for k in ("layers", "sizes") if k not in given]
    if missing:
        raise SpecError(f"give --scenario NAME, or an ad-hoc model with {' and '.join(missing)}")
    return scenarios.from_table("ad-hoc", {**AD_HOC_DEFAULTS, **given})


class Checked:
    """What a command line asked for, checked: ``backends``, ``runs`` (the scenarios to run),
    ``bundle`` (replay: the loaded bundle), and the output paths (absolute, writable)."""

    def __init__(self, **kw: Any):
        self.backends: list[str] = []
        self.runs: list[Any] = []
        self.bundle: tuple | None = None
        self.json: Path | None = None
        self.bundle_dir: Path | None = None
        self.database: Path | None = None
        self.junit: Path | None = None
        self.out: Path | None = None
        self.__dict__.update(kw)


def command(args: Any) -> Checked:
    """Check everything a command line gives (after argparse has parsed it) before any work:
    names, spec strings, numbers, data files, bundles, output paths and memory. SpecError on the
    first problem."""
    out = Checked()
    cmd = args.command
    json_flag = getattr(args, "json", None)
    if cmd in ("run", "explore", "conventions", "mutants") and json_flag is not None:
        out.json = output_file(json_flag, "--json")
    elif cmd == "check" and json_flag is not None:
        out.json = output_dir(json_flag, "--json")
    if getattr(args, "bundle_dir", None) is not None:
        out.bundle_dir = output_dir(args.bundle_dir, "--bundle-dir")
    if getattr(args, "junit", None) is not None:
        out.junit = output_file(args.junit, "--junit")
    if cmd == "check" and getattr(args, "out", None) is not None:
        out.out = output_dir(args.out, "--out")
    if getattr(args, "shard", None):
        from harness.shard import parse_shard

        parse_shard(args.shard)
    for flag, check in (("seed", seed), ("steps", steps), ("batch_size", integer), ("examples", integer)):
        if getattr(args, flag, None) is not None:
            check(getattr(args, flag), "--" + flag.replace("_", "-"))
    if cmd == "run":
        out.backends = backends(args.backends)
        scenario = scenario_from_flags(args)
        ready(scenario, len(out.backends), args.oracle)
        out.runs = [scenario]
    elif cmd == "check":
        import scenarios

        out.backends = backends(args.backends)
        for name, dtype, mode in scenarios.main_job():
            scenario = scenarios.get(name, seed=args.seed, dtype=dtype, mode=mode)
            ready(scenario, len(out.backends), args.oracle)
            out.runs.append(scenario)
    elif cmd == "explore":
        out.backends = backends(args.backends)
        if args.database is not None:
            out.database = output_dir(args.database, "--database")
    elif cmd == "replay":
        out.backends = backends(args.backends) if args.backends is not None else []
        out.bundle = bundle(args.bundle)
        if not out.backends:
            import adapters

            for name in out.bundle[0]["backends"]:
                reason = adapters.why_unavailable(name)
                if reason:
                    raise SpecError(f"bundle {args.bundle!r} was recorded on {name}, which cannot run here ({reason}); "
                                    "replay it on others with --backends")
    elif cmd == "conventions":
        out.backends = backends(args.backends, at_least=1)
    return out
