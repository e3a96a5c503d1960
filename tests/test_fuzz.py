"""Hypothesis throws random strings, numbers and arrays at the spec parser and the dataset loader
through the command line (in process): the outcome is exit 2 with one error line, or a run that
can start (its parameters and first batch are made), never a traceback or an internal error.

No backend runs: ``_run_one`` is replaced by a function that makes the run's inputs and stops.
Each test runs 150 examples (or the profile's number, if larger; ``FUZZ_EXAMPLES=3000`` for a
longer search: 3000 of each found nothing, 3 minutes here).
"""

from __future__ import annotations

import os
import string
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from harness.cli import console, main as cli
from harness.reports.bundle import bundle as load_bundle
from harness.spec.memory import model_size
from harness.core.components import INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS
from harness.spec.data import batches
from harness.spec.state import initial_state

FRAMEWORKS = ("torch", "jax", "tensorflow", "nerva_torch", "nerva_jax", "nerva_tensorflow")
EXAMPLES = max(int(os.environ.get("FUZZ_EXAMPLES", 150)), settings().max_examples)  # cheap examples: more than the profile's default
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class RunStarted(BaseException):
    """The inputs passed validation and the run's inputs were made."""


@pytest.fixture
def run_stops(monkeypatch):
    before = {m for m in FRAMEWORKS if m in sys.modules}

    def start(scenario, backends, *args, **kw):
        params, _ = model_size(scenario)
        if params <= 10**6:  # a model this command line may really build
            initial_state(scenario)
        X, T = next(iter(batches(scenario)))
        assert X.shape == (scenario.batch_size, scenario.input_size) and np.isfinite(X).all()
        assert T.shape == (scenario.batch_size, scenario.output_size) and np.isfinite(T).all()
        raise RunStarted

    monkeypatch.setattr(console, "run_one", start)
    yield
    assert {m for m in FRAMEWORKS if m in sys.modules} == before


def note(what: str) -> None:
    try:
        event(what)  # --hypothesis-show-statistics: how often each outcome was reached
    except InvalidArgument:  # called outside a Hypothesis test
        pass


def outcome(capsys, argv: list[str]) -> str:
    """"refused" (exit 2, one line) or "started"; anything else fails the test."""
    try:
        code = cli.main(argv)
    except RunStarted:
        code = None
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    if code is None:
        note("started")
        return "started"
    assert code == 2, (code, captured.err)
    assert captured.err.count("\n") == 1 and captured.err.startswith("nerva-consistency: error: "), captured.err
    note("refused")
    return "refused"


# ------------------------------------------------------------------------------------ spec strings

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                    st.sampled_from(["1e999", "-1e999", "nan", "inf", "", "1_0", "0x10", "1e-400"]))
junk = st.text(alphabet=string.printable + "αβ٣()=;,", max_size=30)


@st.composite
def call(draw, names) -> str:
    name = draw(st.one_of(st.sampled_from(names), junk))
    args = draw(st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["alpha", "mu", "al", "tl", "ar", "tr", "x"])),
                                   numbers), max_size=4))
    if not args and draw(st.booleans()):
        return name
    inner = ", ".join(f"{k}={v}" if k else str(v) for k, v in args)
    return f"{name}({inner})"


def joined(element, sep: str):
    return st.one_of(junk, st.lists(st.one_of(element, st.just("")), min_size=0, max_size=4).map(sep.join))


sizes = st.one_of(junk, st.lists(st.one_of(st.integers(-2, 9), st.sampled_from([10**10, 10**13])), max_size=5)
                  .map(lambda xs: ",".join(map(str, xs))))
flags = st.fixed_dictionaries({}, optional={
    "--layers": joined(call(list(LAYERS)), ";"),
    "--sizes": sizes,
    "--optimizers": joined(call(list(OPTIMIZERS)), ";"),
    "--init-weights": joined(st.sampled_from(list(INITIALIZERS)), ","),
    "--loss": st.one_of(st.sampled_from(list(LOSSES)), junk),
    "--learning-rate": st.one_of(numbers.map(str), call(["Constant", "Exponential"])),
    "--batch-size": st.one_of(st.integers(-2, 20), st.just(10**10)).map(str),
    "--steps": st.one_of(st.integers(-2, 5), st.just(10**13)).map(str),
    "--seed": st.one_of(st.integers(-3, 2**65)).map(str),
    "--dtype": st.sampled_from(["float32", "float64", "float16"]),
    "--mode": st.sampled_from(["trajectory", "lockstep"]),
    "--backends": st.sampled_from(["numpy,torch", "", "numpy", "numpy,,torch"]),
    "--oracle": st.sampled_from(["auto", "none", "sympy"]),
})


@FUZZ
@given(given_flags=flags, scenario=st.sampled_from([None, "relu-softmax", "srelu-nll", "nope"]))
def test_random_spec_strings_are_refused_in_one_line_or_start(capsys, run_stops, given_flags, scenario):
    argv = ["run", "--quiet"] + (["--scenario", scenario] if scenario else [])
    for flag, value in given_flags.items():
        argv += [flag, value]
    outcome(capsys, argv)


def test_the_spec_fuzzer_reaches_both_outcomes(capsys, run_stops):
    base = ["run", "--quiet", "--backends", "numpy,torch", "--layers", "ReLU;Linear", "--sizes", "4,8,3"]
    assert outcome(capsys, base) == "started"
    assert outcome(capsys, base + ["--optimizers", "Momentum(nan)"]) == "refused"


# ------------------------------------------------------------------------------------ dataset files

dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.uint8, np.bool_, np.complex128,
                          np.dtype("<U3"), np.dtype("O")])


@st.composite
def array(draw):
    dtype = np.dtype(draw(dtypes))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    if dtype.kind == "O":
        return np.array([draw(st.integers())] * int(np.prod(shape)), dtype=object).reshape(shape)
    elements = st.floats(allow_nan=True, allow_infinity=True, width=32) if dtype.kind == "f" else None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def dataset_file(draw, directory: Path) -> str:
    path = directory / f"d{draw(st.integers(0, 10**9))}.npz"
    kind = draw(st.sampled_from(["arrays", "arrays", "arrays", "bytes", "labels"]))
    if kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=200)))
        return str(path)
    content = {}
    if kind == "labels":  # mostly valid: N rows of D numbers, N labels with a few bad ones
        N = draw(st.integers(0, 12))
        content["Xtrain"] = draw(hnp.arrays(np.float64, (N, 3), elements=st.floats(-1e6, 1e6)))
        content["Ttrain"] = draw(hnp.arrays(np.int64, (draw(st.sampled_from([N, N, N + 1])),),
                                            elements=st.integers(-1, 4)))
    else:
        for name in draw(st.lists(st.sampled_from(["Xtrain", "Ttrain", "Xtest", "other"]), unique=True)):
            content[name] = draw(array())
    np.savez(path, **content)  # object arrays are pickled here: the loader must refuse them unread
    if draw(st.booleans()) and kind != "labels":
        raw = path.read_bytes()
        path.write_bytes(raw[: draw(st.integers(0, len(raw)))])  # truncated
    return str(path)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@FUZZ
@given(data=st.data(), D=st.integers(1, 4), K=st.integers(1, 4), N=st.integers(1, 8))
def test_random_dataset_files_are_refused_in_one_line_or_start(capsys, run_stops, scratch, data, D, K, N):
    path = data.draw(dataset_file(scratch))
    argv = ["run", "--quiet", "--backends", "numpy,torch", "--layers", "ReLU;Linear", "--sizes", f"{D},5,{K}",
            "--batch-size", str(N), "--steps", "3", "--dataset", path]
    outcome(capsys, argv)


def test_the_dataset_fuzzer_reaches_both_outcomes(capsys, run_stops, scratch):
    good = scratch / "good.npz"
    np.savez(good, Xtrain=np.ones((6, 3)), Ttrain=np.array([0, 1, 2, 0, 1, 2]))
    base = ["run", "--quiet", "--backends", "numpy,torch", "--layers", "ReLU;Linear", "--sizes", "3,5,3",
            "--batch-size", "4", "--dataset", str(good)]
    assert outcome(capsys, base) == "started"
    assert outcome(capsys, base[:-1] + [str(scratch / "absent.npz")]) == "refused"


# ------------------------------------------------------------------------------------ bundles

json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**70) | st.floats(allow_nan=False) |
                           st.text(max_size=8), lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def bundle_meta(scratch):
    from test_hostile import _good_bundle

    path = _good_bundle(scratch / "bundles")
    with np.load(path) as f:
        return path, {k: f[k] for k in f.files}


@FUZZ
@given(data=st.data())
def test_a_bundle_with_random_meta_is_damaged_or_replayable(bundle_meta, scratch, data):
    """Replace parts of a good bundle's meta by random JSON, and some of its arrays by random
    ones: validation says "damaged" (or an unknown schema, or too large) in one line, or
    everything a replay reads from the meta works and the arrays fit the spec."""
    import json

    from harness.reports import machine as platform
    from harness.reports import bundle as repro
    from harness.core.errors import SpecError

    path, arrays = bundle_meta
    meta = json.loads(str(arrays["meta"]))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["top", "spec", "numbers", "verdict", "platform"]))
        target = meta if where == "top" else meta.setdefault(where, {}) if isinstance(meta.get(where), dict) else meta
        key = data.draw(st.one_of(st.sampled_from(sorted(target) or ["x"]), st.text(max_size=6)))
        if data.draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = data.draw(json_values)
    arrays = dict(arrays)
    for _ in range(data.draw(st.integers(0, 2))):  # and replace or drop an array
        name = data.draw(st.sampled_from(sorted(set(arrays) - {"meta"}) + ["state/W7", "data/9/X"]))
        if data.draw(st.booleans()):
            arrays.pop(name, None)
        else:
            arrays[name] = data.draw(array())
    out = scratch / f"m{data.draw(st.integers(0, 10**9))}.npz"
    np.savez(out, **{**arrays, "meta": np.array(json.dumps(meta))})
    try:
        meta, scenario, state0, batches_ = load_bundle(str(out))
    except SpecError as e:
        assert "\n" not in str(e) and str(out) in str(e)
        note("refused")
        return
    note("accepted")
    assert all(np.isfinite(a).all() for a in state0.values()) and len(batches_) >= 1
    recorded = repro.recorded_verdict(meta)
    repro.compare_verdicts(recorded, recorded)
    repro.describe_verdict(recorded)
    if meta["platform"] is not None:
        platform.explain(meta["platform"], meta["platform"])
