"""What the harness measured in the released Nerva 1.0.0 backends (docs/findings.md).

Each test of a single component pins one measured behaviour exactly (element-wise arithmetic,
the same on every CPU), so a release that changes it makes the test fail and the finding gets
revisited. The bundles of the Hypothesis search are replayed for their verdict, class and blame,
not their bits (those depend on the CPU's kernels).
"""

from pathlib import Path

import numpy as np
import pytest

import adapters

symbolic = pytest.importorskip("harness.oracle.symbolic")


def load(name):
    reason = adapters.why_unavailable(name)
    if reason:
        pytest.skip(reason)
    a = adapters.load(name)
    a.setup()
    return a


@pytest.mark.parametrize("kind", ["LeakyReLU", "AllReLU"])
def test_tensorflow_float64_rounds_alpha_to_float32(kind):
    """nerva-tensorflow: tf.cast(alpha, X.dtype) converts the Python float to a float32 tensor
    first, so in float64 runs the derivatives of LeakyReLU and AllReLU (and AllReLU's value)
    use float32(0.3) = 0.30000001192092896; LeakyReLU's value uses alpha * X, exact."""
    a = load("tensorflow")
    with a.precision("float64"):
        act = a.activation(kind, {"alpha": 0.3}, "float64")
        X = a.array(np.array([[-2.0]]), "float64")
        grad = float(a.to_numpy(act.gradient(X))[0, 0])
        value = float(a.to_numpy(act(X))[0, 0])
    assert grad == float(np.float32(0.3)) != 0.3
    assert value == -2.0 * (float(np.float32(0.3)) if kind == "AllReLU" else 0.3)
    for other in ("numpy", "torch", "jax"):  # the others keep alpha in float64
        b = load(other)
        with b.precision("float64"):
            g = b.to_numpy(b.activation(kind, {"alpha": 0.3}, "float64").gradient(b.array(np.array([[-2.0]]), "float64")))
        assert float(g[0, 0]) == 0.3


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "tensorflow"])
def test_leaky_relu_gradient_contradicts_its_forward_for_alpha_above_1(name):
    """All four define LeakyReLU(x) = max(alpha x, x) but its derivative as 1 for x > 0 and
    alpha otherwise: for alpha > 1 the forward is alpha x on x > 0, so the derivative there is
    alpha, not 1. Backend comparison cannot see it (all four agree); the exact oracle does."""
    a = load(name)
    X = np.array([[1.5, -1.5]])
    with a.precision("float64"):
        act = a.activation("LeakyReLU", {"alpha": 2.0}, "float64")
        got = a.to_numpy(act.gradient(a.array(X, "float64")))
        value = a.to_numpy(act(a.array(X, "float64")))
    exact = symbolic.Activation("LeakyReLU", {"alpha": 2.0})
    assert value.tolist() == [[3.0, -1.5]]  # max(2x, x)
    assert [float(v) for v in exact.derivative(X).ravel()] == [2.0, 1.0]
    assert got.tolist() == [[1.0, 2.0]]  # the library's derivative: wrong on both sides


def test_numpy_relu_family_derivatives_widen_float32_to_float64():
    """nerva-numpy's ReLU-family gradients are integer arrays (np.where(X > 0, 1, 0)), so
    hadamard(DY, gradient) promotes float32 to float64: DZ and DX leave float32."""
    a = load("numpy")
    act = a.activation("ReLU", {}, "float32")
    g = act.gradient(np.array([[1.0, -1.0]], dtype=np.float32))
    assert g.dtype.kind == "i"
    assert (np.ones((1, 2), dtype=np.float32) * g).dtype == np.float64


def test_jax_flushes_float32_subnormals_to_zero():
    """XLA on the CPU flushes subnormals: nerva-jax computes ReLU'(1.4e-45) = 0 (exact: 1)."""
    a = load("jax")
    tiny = np.array([[np.nextafter(np.float32(0), np.float32(1))]], dtype=np.float32)
    with a.precision("float32"):
        got = a.to_numpy(a.activation("ReLU", {}, "float32").gradient(a.array(tiny, "float32")))
    assert got[0, 0] == 0.0
    assert float(symbolic.Activation("ReLU", {}).derivative(tiny.astype(np.float64))[0, 0]) == 1.0


@pytest.mark.backends
def test_run_flags_tensorflow_float64_alpha_and_blames_tensorflow_alone(installed):
    """docs/findings.md #2 through the whole harness: a float64 lockstep run of the catalog's
    leaky-logsoftmax against the exact oracle fails at the first tensor alpha touches, blamed on
    tensorflow alone, by orders of magnitude (the fixed float64 tolerance of 1e-7 passed it)."""
    import scenarios
    from harness.run.runner import run

    if "tensorflow" not in installed:
        pytest.skip("needs nerva-tensorflow")
    sc = scenarios.get("leaky-logsoftmax", dtype="float64", mode="lockstep", steps=1)
    result = run(sc, list(installed), oracle="sympy")
    step, tv = result.first_divergence
    assert (step, tv.key) == (0, ("X", 3)) and tv.blamed == ["tensorflow"]  # AllReLU's value (LeakyReLU's is exact)
    assert tv.worst["tensorflow"] > 1e5
    assert all(tv.worst[b] <= 1 for b in installed if b != "tensorflow")


# Findings of the Hypothesis search (docs/findings.md #9, #10): every bundle in docs/findings/
# must replay with its expected verdict, on any CPU. The numbers are not compared: their last
# bits depend on the kernels BLAS, oneDNN and XLA pick by CPU. What is compared is what must
# hold on any machine - passed or not, where the first divergence is (step, tensor, layer),
# each finding's class and the backends it blames, how it is triaged (harness.search.evaluate.evaluate)
# and bounds on the blamed backends' worst error / bound there.
#
# The expected verdict of each bundle is written here, keyed by the start of its file name (a
# regenerated bundle keeps its prefix). When a change of the comparator changes a verdict, edit
# the row (and regenerate the bundle: a row must also say what its bundle recorded).
ALL = ("jax", "numpy", "tensorflow", "torch")
FINDINGS = {
    # prefix: passed; first divergence (step, tensor, layer) or None; classify()'s findings
    # (class, blamed backends); explore's triage of the one non-kink finding (class, red?) or
    # None; the blamed backends' worst error / bound at the first divergence is at least this
    "9-log-softmax-overflow-float64": dict(
        passed=False, at=(2, "Y", None),
        findings=[("non-finite", ALL), ("convention", ("jax", "numpy", "sympy", "tensorflow", "torch"))],
        triage=("non-finite", False), worst_at_least=float("inf")),
    # 10a, 10b, 10d: rounding that the fixed tolerances failed (and explore's triage excused);
    # recorded as failures by the old comparator, inside the rounding bound now.
    "10a-batchnorm-constant-column-forward-float32": dict(
        passed=True, at=None, findings=[], triage=None, worst_at_least=0.0,
        recorded=dict(passed=False, at=(0, "Z", 2), findings=[("bug", ALL)])),
    "10b-batchnorm-zero-column-backward-float32": dict(
        passed=True, at=None, findings=[], triage=None, worst_at_least=0.0,
        recorded=dict(passed=False, at=(0, "DX", 2), findings=[("bug", ("jax",))])),
    "10d-batchnorm-two-rows-backward-float32": dict(
        passed=True, at=None, findings=[], triage=None, worst_at_least=0.0,
        recorded=dict(passed=False, at=(1, "DX", 2), findings=[("bug", ALL)])),
}
BUNDLE_DIR = Path(__file__).parent.parent / "docs" / "findings"
BUNDLES = sorted(BUNDLE_DIR.glob("*.npz"))


def bundle_id(path: Path) -> str:
    return path.name.rsplit("-", 2)[0]  # without the time stamp


def expected(path: Path) -> dict:
    rows = [prefix for prefix in FINDINGS if path.name.startswith(prefix + "-")]
    assert rows, f"{path.name}: no row in FINDINGS (tests/test_findings.py) says what its verdict is"
    return FINDINGS[max(rows, key=len)]


def as_verdict(row: dict) -> dict:
    """A row as harness.reports.bundle.verdict() writes a verdict."""
    at = row["at"]
    return {"passed": row["passed"], "findings": [{"class": c, "backends": list(b)} for c, b in row["findings"]],
            "first_divergence": None if at is None else dict(zip(("step", "tensor", "layer"), at))}


def test_every_row_names_a_bundle():
    for prefix in FINDINGS:
        assert any(p.name.startswith(prefix + "-") for p in BUNDLES), f"FINDINGS row {prefix!r}: no bundle in {BUNDLE_DIR}"


@pytest.mark.parametrize("path", BUNDLES, ids=bundle_id)
def test_every_row_says_what_its_bundle_recorded(path):
    """The table and the bundles go together: a bundle regenerated after a change of the
    comparator must come with its row (no backend runs here)."""
    from harness.reports.bundle import compare_verdicts, load as load_bundle, recorded_verdict

    meta = load_bundle(path)[0]
    row = expected(path)
    differences, notes = compare_verdicts(as_verdict(row.get("recorded", row)), recorded_verdict(meta))
    assert (differences, notes) == ([], []), f"{path.name} recorded another verdict than its FINDINGS row: {differences + notes}"


@pytest.mark.backends
@pytest.mark.parametrize("path", BUNDLES, ids=bundle_id)
def test_a_search_finding_replays_with_its_verdict_class_and_blame(path, installed):
    from harness.search.evaluate import evaluate
    from harness.reports.bundle import compare_verdicts, describe_verdict, load as load_bundle, replay, verdict
    from scenarios.strategies import Example

    row = expected(path)
    # never the bits (they depend on the CPU). With the row true of the bundle (the test above),
    # the verdict the bundle recorded reproduces.
    result, differences = replay(path, compare="verdict")
    assert differences.compared == "verdict"
    now = verdict(result)
    changed, kink_notes = compare_verdicts(as_verdict(row), now)
    assert (changed, kink_notes) == ([], []), (
        f"{path.name} replays as {describe_verdict(now)}, not as its FINDINGS row says: {changed + kink_notes}. "
        "If the comparator changed, edit the row and regenerate the bundle.")
    assert result.passed == row["passed"]

    _, scenario, state0, data = load_bundle(path)
    ev = evaluate(Example(scenario, state0, data), installed)
    filed = [(f.cls, True) for f in ev.red] + [(f.cls, False) for f, _ in ev.known] + \
        [(f.cls, False) for f in ev.other if f.cls not in ("kink", "convention")]
    assert filed == ([row["triage"]] if row["triage"] else []), ev.report()
    if result.passed:
        return
    step, tv = result.first_divergence
    blamed = [b for c, b in row["findings"] if c not in ("kink", "convention")][0]
    assert sorted(tv.blamed) == sorted(blamed)
    worst = max(tv.worst[b] for b in tv.blamed)
    assert 1 < worst and worst >= row["worst_at_least"], tv.worst  # outside the bound, clearly
    assert all(tv.worst[b] <= 1 for b in tv.worst if b not in tv.blamed)
    if row["triage"] and row["triage"][0] == "non-finite":  # every backend overflowed to -inf where the exact value is finite
        (f,) = [f for f in ev.other if f.cls == "non-finite"]
        assert f.everywhere and f.tensor == "Y" and f.backends == tuple(sorted(installed))
        assert all(tv.values[b] == float("-inf") for b in installed) and np.isfinite(tv.values[result.oracle])
