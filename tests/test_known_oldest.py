"""docs/findings.md #22: with NumPy 1.x, nerva-numpy's SReLU derivative is float64 in float32 runs.

The cause is one expression of nerva_numpy.activation_functions.Srelu_gradient,
``np.where(X <= tl, al, np.where(X < tr, 1, ar))``: under NumPy 1.x's value-based promotion the
Python int ``1`` beside the float32 scalar ``ar`` is int64, and int64 with float32 is float64;
under NumPy 2 (NEP 50) the Python int is weak and the result stays float32. The replay runs the
smallest example ``explore`` shrank it to (one SReLU layer of width 1, batch 1, one step) on
whichever NumPy is installed and expects what that version does: the dtype line, known as #22,
on NumPy 1.x (constraints-oldest.txt), nothing on NumPy 2 (constraints.txt). The classification
rules (which dtype mismatches a documented defect explains, layer by layer) are tested on
constructed results, for both NumPy lines, on any installed version.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.run import known
from harness.run.findings import classify
from harness.run.runner import RunResult
from harness.spec.scenario import DataSpec, build_scenario

NUMPY_1 = np.lib.NumpyVersion(np.__version__) < "2.0.0"
SMALLEST = dict(layers="SReLU(al=0,tl=0,ar=0,tr=1)", sizes="1,1", optimizers="GradientDescent",
                init_weights="XavierNormal", loss="SquaredError", lr=0.01, batch_size=1, steps=1,
                mode="trajectory", dtype="float32", data=DataSpec("synthetic", "real"))


def _scenario(layers: str, sizes: str, dtype: str = "float32"):
    return build_scenario(**{**SMALLEST, "name": "t", "layers": layers, "sizes": sizes, "dtype": dtype})


def _held(scenario, mismatches: dict[str, list[str]]) -> RunResult:
    return RunResult(scenario, ["numpy", "torch"], [], dtype_mismatches=mismatches)


@pytest.fixture(params=[True, False], ids=["numpy1", "numpy2"])
def numpy_line(request, monkeypatch):
    """DEFECTS as the given NumPy line sees them (#22's version condition fixed to it)."""
    defects = tuple(dataclasses.replace(d, versions=lambda: request.param) if d.number == 22 else d
                    for d in known.DEFECTS)
    monkeypatch.setattr(known, "DEFECTS", defects)
    return request.param


def test_the_expression_is_float64_on_numpy_1_only():
    from nerva_numpy.activation_functions import Srelu_gradient

    al, tl, ar, tr = np.array([0.05, -0.3, 0.2, 0.4], dtype=np.float32)
    X = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    widened = np.float64 if NUMPY_1 else np.float32
    assert np.where(X < tr, 1, ar).dtype == widened  # the Python int 1 beside a float32 scalar
    assert np.where(X < tr, np.float32(1), ar).dtype == np.float32  # a float32 one keeps the dtype
    assert Srelu_gradient(al, tl, ar, tr)(X).dtype == widened
    assert Srelu_gradient(al, tl, ar, tr)(X).tolist() == [[0.05000000074505806, 1.0, 0.20000000298023224]]


def test_the_smallest_example_replays_as_its_numpy_line_does(installed):
    from harness.run.runner import run

    result = run(build_scenario(name="finding-22", **SMALLEST), ["numpy", "torch"])
    assert result.passed
    if NUMPY_1:
        assert result.dtype_mismatches == {"numpy": ["DX1", "DZ1"]}
        assert known.known_dtype(result, "numpy") == "docs/findings.md #22"
    else:
        assert result.dtype_mismatches == {}
    assert not [f for f in classify(result) if f.red]


def test_srelu_dtype_mismatches_are_known_on_numpy_1_and_red_on_numpy_2(numpy_line):
    result = _held(_scenario("SReLU;Linear", "3,4,2"), {"numpy": ["DX1", "DZ1"]})
    assert known.known_dtype(result, "numpy") == ("docs/findings.md #22" if numpy_line else None)
    dtype = [f for f in classify(result) if f.cls == "dtype"]
    assert [(f.backends, f.tensor, f.red) for f in dtype] == ([] if numpy_line else [(("numpy",), "DX", True)])


def test_a_dtype_defect_explains_its_layers_and_the_layers_they_feed_only(numpy_line):
    both = _held(_scenario("ReLU;SReLU;Linear", "3,4,4,2"), {"numpy": ["DX1", "DZ1", "DX2", "DZ2"]})
    assert known.known_dtype(both, "numpy") == ("docs/findings.md #3, #22" if numpy_line else None)
    fed = _held(_scenario("SReLU;ReLU;Linear", "3,4,4,2"), {"numpy": ["DX1", "DZ1", "DX2", "DZ2"]})
    assert known.known_dtype(fed, "numpy") == "docs/findings.md #3"  # layer 1 feeds the ReLU of layer 2
    after = _held(_scenario("Linear;ReLU;Linear", "3,4,4,2"), {"numpy": ["DZ3"]})
    assert known.known_dtype(after, "numpy") is None  # layer 3 feeds no ReLU: #3 cannot widen it
    other = _held(_scenario("SReLU;Linear", "3,4,2"), {"numpy": ["DW1"]})
    assert known.known_dtype(other, "numpy") is None  # not a tensor the defect holds
    torch = _held(_scenario("SReLU;Linear", "3,4,2"), {"torch": ["DX1", "DZ1"]})
    assert known.known_dtype(torch, "torch") is None  # not the backend it concerns
    wide = _held(_scenario("SReLU;Linear", "3,4,2", "float64"), {"numpy": ["DX1", "DZ1"]})
    assert known.known_dtype(wide, "numpy") is None  # float64 runs: nothing to widen


def test_the_defect_is_listed_once_with_its_number_and_version_condition():
    defect = known.BY_ID["numpy1-float32-srelu-dtype"]
    assert (defect.number, defect.backends, defect.dtype, defect.layers, defect.held) == \
        (22, ("numpy",), "float32", ("SReLU",), ("DZ", "DX"))
    assert defect.versions() is NUMPY_1
    assert defect.concerns(_scenario("SReLU;Linear", "3,4,2")) is NUMPY_1


def test_the_nightly_oldest_and_latest_cells_search_their_own_versions():
    """The explore job searches on the pinned versions only; #22 shows on the oldest alone. Each
    oldest and latest cell runs its shard of a search, in its own tox environment."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / ".github" / "workflows" / "nightly.yml").read_text()
    step = text[text.index("- name: the cell's share of an explore search"):]
    step = step[:step.index("- name:", 1)]
    assert "if: always() && matrix.versions != 'pinned'" in step
    assert 'tox exec -e "$TOX_ENV"' in step and '--shard "$SHARD" --seed "$NIGHT_SEED"' in step
    assert "nerva-consistency explore --examples \"$EXPLORE_EXAMPLES\"" in step
    assert "--json reports/nightly/explore.json --bundle-dir reports/nightly/bundles" in step  # in the artifact
