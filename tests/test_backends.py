"""End to end: the four released backends, driven identically, agree on small scenarios."""


import numpy as np
import pytest

import adapters
import scenarios
from harness.judge.compare import key_name, tensor_order
from harness.run.known import expected
from harness.run.plan import plan
from harness.run.runner import run
from harness.spec.scenario import build_scenario

pytestmark = pytest.mark.backends

SMALL = [(r.scenario, r.dtype, r.mode) for r in plan() if r.scenario != "upstream"]


@pytest.mark.parametrize("name,dtype,mode", SMALL)
def test_catalog_scenario_agrees(name, dtype, mode, installed):
    known = expected(name, dtype, installed)
    if known:  # a documented defect: exactly it shows
        result = run(scenarios.get(name, dtype=dtype, mode=mode), installed, keep_going=True)
        assert not result.failures
        step, tv = result.first_divergence
        assert sorted(tv.blamed) == sorted(known.backends), (name, result.first_divergence)
        return
    result = run(scenarios.get(name, dtype=dtype, mode=mode), installed)
    assert not result.failures
    assert len(result.steps) == result.scenario.steps
    worst = max(w for v in result.steps for t in v.tensors for w in t.worst.values())
    assert result.passed, (name, result.first_divergence)
    assert 0 < worst <= 1  # the backends are not bit-identical, and all are inside the bound


def test_trace_has_every_tensor_of_every_layer(installed):
    sc = scenarios.get("batchnorm-softmax-xent", steps=1)
    state_names = {key_name(k) for k in tensor_order(sc)}
    for name in installed:
        a = adapters.load(name)
        from harness.spec.state import initial_state
        from harness.spec.data import batches

        a.build(sc, initial_state(sc))
        X, T = batches(sc)[0]
        trace = a.step(X, T, sc.lr)
        assert state_names <= set(trace), (name, state_names - set(trace))
        # NumPy copies in the dtype each was computed in (the judge reads them as float64)
        assert sc.dtype == "float32" and {k: v.dtype.name for k, v in trace.items()} == a.dtypes
        assert all(isinstance(v, np.ndarray) and v.dtype in (np.float32, np.float64) for v in trace.values())
        assert trace["DW1"].shape == (24, 16) and trace["Db1"].shape == (24,)
        assert trace["Dgamma2"].shape == (24,) and trace["DX2"].shape == (10, 24)
        kept = {k: v.copy() for k, v in trace.items()}
        a.step(X, T, sc.lr)  # updates the parameters in place (numpy, torch, tensorflow)
        assert all(np.array_equal(trace[k], kept[k]) for k in kept), name  # copies, never views of live buffers
        whole, velocities = a.get_state(), a.get_state(parameters=False)  # float64; as the backend holds them
        assert velocities and velocities.keys() < whole.keys() and all(v.dtype == np.float64 for v in whole.values())
        assert all(v.dtype == np.float32 and np.array_equal(v, whole[k]) for k, v in velocities.items())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_buffer_is_in_the_requested_dtype(dtype, installed):
    """float64 mode is really float64 in every backend (the recipe in docs/nerva-api.md); float32 mode
    keeps the libraries' float32 except where a library itself widens (reported, see README)."""
    sc = scenarios.get("srelu-nll", dtype=dtype, steps=1)
    sc_bn = scenarios.get("batchnorm-softmax-xent", dtype=dtype, steps=1)
    for scenario in (sc, sc_bn):
        result = run(scenario, installed)
        assert result.passed
        if dtype == "float64":
            assert result.dtype_mismatches == {}
        else:
            assert set(result.dtype_mismatches) <= {"numpy"}


def test_float64_agrees_far_more_tightly_than_float32(installed):
    """float32 backends differ by rounding (> 1e-9 somewhere); float64 ones by ~1e-16."""
    from harness.spec.data import batches
    from harness.spec.state import initial_state

    spread = {}
    for dtype in ("float32", "float64"):
        sc = scenarios.get("sigmoid-logistic", steps=1, dtype=dtype)
        traces = []
        for name in installed:
            a = adapters.load(name)
            a.build(sc, initial_state(sc))
            X, T = batches(sc)[0]
            traces.append(a.step(X, T, sc.lr))
        spread[dtype] = max(np.max(np.abs(t["DX1"] - traces[0]["DX1"])) for t in traces)
    assert spread["float32"] > 1e-9
    assert spread["float64"] < 1e-13


def test_lockstep_resets_every_backend_to_the_consensus(installed):
    result = run(scenarios.get("leaky-logsoftmax", mode="lockstep", steps=3), installed)
    assert result.passed and result.resyncs == []  # lockstep resets are not kink re-anchorings


def test_a_backend_that_raises_is_reported_and_the_others_go_on(installed, monkeypatch):
    import nerva_jax.layers

    def broken(self, Y, DY):
        raise FloatingPointError("injected failure")

    monkeypatch.setattr(nerva_jax.layers.SoftmaxLayer, "backpropagate", broken)
    result = run(scenarios.get("relu-softmax", steps=2), installed)
    assert list(result.failures) == ["jax"]
    failure = result.failures["jax"]
    assert (failure.step, failure.type, failure.message) == (0, "FloatingPointError", "injected failure")
    assert str(failure).startswith("step 0: FloatingPointError: injected failure (")
    assert len(result.steps) == 2 and all(len(v.tensors[0].worst) == 3 for v in result.steps)
    assert not result.passed


def test_ad_hoc_flags_run_end_to_end(installed, capsys, tmp_path):
    from harness.cli.main import main

    report = tmp_path / "r.json"
    code = main(["run", "--layers", "ReLU;Softmax", "--sizes", "8,16,4", "--optimizers", "Momentum(0.9);Nesterov(0.5)",
                 "--init-weights", "XavierNormal,XavierNormal", "--loss", "CrossEntropy", "--learning-rate",
                 "Constant(0.01)", "--batch-size", "8", "--steps", "3", "--seed", "7", "--json", str(report), "--quiet"])
    assert code == 0
    import json

    doc = json.loads(report.read_text())
    assert doc["passed"] is True and doc["seed"] == 7 and doc["steps_run"] == 3
    assert doc["first_divergence"] is None
    assert set(doc["per_step"][0]["ratio"]["DW1"]) == set(installed)
    assert doc["spec"]["optimizers"] == "Momentum(mu=0.9);Nesterov(mu=0.5)"
    assert "PASS" in capsys.readouterr().out


def test_tiny_network_step_matches_a_hand_computation(installed):
    """One Linear layer, SquaredError, GradientDescent: DW = (2/N) (Y - T)^T X by hand."""
    sc = build_scenario(name="hand", layers="Linear", sizes="3,2", optimizers="GradientDescent",
                        init_weights="XavierNormal", loss="SquaredError", lr=0.5, batch_size=4, steps=1,
                        dtype="float64")
    from harness.spec.data import batches
    from harness.spec.state import initial_state

    state = initial_state(sc)
    X, T = batches(sc)[0]
    Y = X @ state["W1"].T + state["b1"]
    DW = (2 / 4) * (Y - T).T @ X
    for name in installed:
        a = adapters.load(name)
        a.build(sc, state)
        trace = a.step(X, T, sc.lr)
        np.testing.assert_allclose(trace["DW1"], DW, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(trace["W1"], state["W1"] - 0.5 * DW, rtol=1e-12, atol=1e-14)


# Kink ties, constructed: values placed exactly on a kink, so every backend lands there whatever
# CPU kernel computes it (a product with an all-zero weight row is exactly 0 in any summation
# order; adding the bias gives the bias exactly). nerva-sympy's flaky test hit these kinks by
# rounding luck (upstream seeds 13 and 4, scripts/upstream_flakiness.py); which seed does depends
# on the CPU, so the tests build the tie instead of searching for one.
TIE = 0.25  # the tied value: exact in float32 and float64
TIED_ROWS = 4


def tied(site: str, mode: str = "trajectory", steps: int = 3, dtype: str = "float32", alpha: float = 0.1):
    """A two-layer network, its initial state and batches, with a tie at ``site`` for every row:

    - "AbsoluteError loss": HyperbolicTangent;Linear. Output unit 0 has W2[0] = 0 and
      b2[0] = TIE, and T[:, 0] = TIE, so Y[:, 0] - T[:, 0] is exactly 0 in every step (its
      gradient sign(0) = 0 leaves W2[0] and b2[0] untouched). Output unit 1 is far from its target.
    - "ELU layer 1": ELU(alpha);Linear. Hidden unit 0 has W1[0] = 0 and b1[0] = 0, so
      Z1[:, 0] is exactly 0 in step 0; every other Z1 is at least 0.5 (X, W1 >= 0, b1 = 0.5).
    """
    rng = np.random.default_rng(0)
    layers, loss = {"AbsoluteError loss": ("HyperbolicTangent;Linear", "AbsoluteError"),
                    "ELU layer 1": (f"ELU(alpha={alpha});Linear", "SquaredError")}[site]
    sc = build_scenario(name=f"tie-{site.split()[0].lower()}", layers=layers, sizes="3,4,2",
                        optimizers="GradientDescent", init_weights="XavierNormal", loss=loss, lr=0.1,
                        batch_size=TIED_ROWS, steps=steps, dtype=dtype, mode=mode)

    def exact(a):  # as the runner wants them: already exact in the run's dtype
        return np.asarray(a, dtype=np.float64).astype(dtype).astype(np.float64)

    W1 = exact(rng.uniform(0.1, 0.5, size=(4, 3)))
    b1 = exact(np.full(4, 0.5))
    W2 = exact(rng.uniform(-0.5, 0.5, size=(2, 4)))
    b2 = exact(np.zeros(2))
    if site == "AbsoluteError loss":
        W2[0], b2[0] = 0.0, TIE
    else:
        W1[0], b1[0] = 0.0, 0.0
    state0 = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    data = []
    for _ in range(steps):
        X = exact(rng.uniform(0.0, 1.0, size=(TIED_ROWS, 3)))
        T = exact(np.column_stack([np.full(TIED_ROWS, TIE), np.full(TIED_ROWS, 3.0)]))
        data.append((X, T))
    return sc, state0, data


def events_at(result, site: str, step: int) -> dict[tuple, dict]:
    return {tuple(e["index"]): e for v in result.steps for e in v.kink_events if e["site"] == site and e["step"] == step}


def planted(site: str) -> set[tuple]:
    return {(n, 0) for n in range(TIED_ROWS)}


def same_side(gradient: dict[str, float], backends: list[str]) -> None:
    """The backends' gradients at a kink event agree up to rounding (the recorded gradient is DZ
    or DY, a product with the incoming gradient, so only rounding-close, not identical)."""
    ref = gradient[backends[0]]
    assert all(gradient[b] == pytest.approx(ref, rel=1e-5, abs=1e-12) for b in backends), gradient


@pytest.mark.parametrize("site,tied_steps", [("AbsoluteError loss", (0, 1, 2)), ("ELU layer 1", (0,))])
def test_an_exact_tie_at_a_kink_is_recorded_and_passes(site, tied_steps, installed):
    """Every backend exactly on the kink, in every step the tie lasts: each tied element is a
    kink event there; all four take the same derivative at the kink (sign(0) = 0, ELU'(0) =
    alpha: `nerva-consistency conventions`), so nothing flipped, nothing was re-anchored, and
    the run passes. Re-anchoring happens exactly after the steps with a flip, if any."""
    sc, state0, data = tied(site)
    result = run(sc, installed, state0=state0, data=data)
    assert result.passed, result.first_divergence
    for step in tied_steps:
        events = events_at(result, site, step)
        assert planted(site) <= set(events), (step, sorted(events))
        for index in planted(site):
            e = events[index]
            assert set(e["values"]) == set(installed)
            assert all(v == e["point"] for v in e["values"].values())  # exactly on the kink
            assert not e["flipped"]
            same_side(e["gradient"], installed)
    flipped_steps = sorted({e["step"] for v in result.steps for e in v.kink_events if e["flipped"]})
    assert result.resyncs == flipped_steps  # re-anchored after a flip, and only then


def test_backends_on_different_sides_of_the_absolute_error_kink_are_excused_and_re_anchored(installed, monkeypatch):
    """A constructed flip: nerva-numpy is made to take the right-hand derivative of |Y - T| at
    Y = T (+1, a legitimate one-sided derivative) where the others take sign(0) = 0. Every tied
    element is then a flip in every step; its influence (DY, DW2's row, Db2, W2 and b2 after
    the update) is excused, the trajectories are re-anchored to the consensus after each step,
    the tie lasts, and the run passes."""
    from adapters import extensions

    original = extensions.ABSOLUTE_ERROR["numpy"]

    def right_hand():  # nerva-numpy's AbsoluteError with sign(0) = +1
        class RightHand(type(original())):
            def gradient(self, Y, T):
                return np.where(Y - T >= 0, np.ones_like(Y), -np.ones_like(Y))

        return RightHand()

    monkeypatch.setitem(extensions.ABSOLUTE_ERROR, "numpy", right_hand)
    site = "AbsoluteError loss"
    sc, state0, data = tied(site)
    result = run(sc, installed, state0=state0, data=data)
    assert result.passed, result.first_divergence
    assert result.resyncs == [0, 1, 2]
    for step in range(3):
        events = events_at(result, site, step)
        assert planted(site) <= set(events)
        for index in planted(site):
            e = events[index]
            assert e["flipped"] and all(v == e["point"] for v in e["values"].values())
            assert e["gradient"]["numpy"] > 0 and all(e["gradient"][b] == 0 for b in installed if b != "numpy")
    dy = [tv for v in result.steps for tv in v.tensors if tv.key == ("DY", None)]
    assert dy and all(tv.kinks.get("numpy", 0) >= 1 for tv in dy)  # excused, not judged


@pytest.mark.parametrize("oracle", ["sympy", "autodiff"])
def test_a_tie_at_the_elu_kink_against_an_oracle_is_recorded_and_a_flip_excused(oracle, installed):
    """ELU layer 1 with Z1[:, 0] exactly 0, in lockstep against an oracle: every backend takes
    ELU'(0) = alpha (the left side); the exact SymPy oracle takes the right-hand derivative 1, so
    each tied element is a flip by construction, recorded and excused, and the run passes
    (torch.autograd takes alpha too: recorded, no flip)."""
    if oracle == "sympy":
        pytest.importorskip("harness.oracle.symbolic")
    site = "ELU layer 1"
    sc, state0, data = tied(site, mode="lockstep", steps=2)
    result = run(sc, installed, oracle=oracle, state0=state0, data=data)
    assert result.oracle == oracle
    assert result.passed, result.first_divergence
    assert result.resyncs == []  # lockstep resets every step anyway: no re-anchoring recorded
    events = events_at(result, site, 0)
    assert planted(site) <= set(events)
    for index in planted(site):
        e = events[index]
        assert all(v == 0.0 for v in e["values"].values())
        g = e["gradient"]
        same_side(g, installed)  # DZ1 = alpha DX2 in every backend
        if oracle == "sympy":  # the exact oracle takes the right-hand derivative 1: 10 times theirs
            assert e["flipped"] and g["sympy"] == pytest.approx(10 * g[installed[0]], rel=1e-5)
        else:  # torch.autograd of where(Z > 0, ...) takes alpha at 0 too
            assert not e["flipped"] and g["autodiff"] == pytest.approx(g[installed[0]], rel=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_sided_derivatives_closer_than_any_tolerance_are_still_a_flip(dtype, installed):
    """ELU(alpha = 1 - 1e-5) tied at 0 against the exact oracle: the backends take alpha, the
    oracle 1, derivatives 1e-5 apart, far inside a relative tolerance of 1e-3 and far outside
    the rounding of a product in either dtype. A convention, recorded as a flip, not a finding."""
    pytest.importorskip("harness.oracle.symbolic")
    site = "ELU layer 1"
    sc, state0, data = tied(site, mode="lockstep", steps=1, dtype=dtype, alpha=0.99999)
    result = run(sc, installed, oracle="sympy", state0=state0, data=data)
    assert result.passed, result.first_divergence
    events = events_at(result, site, 0)
    assert planted(site) <= set(events)
    for index in planted(site):
        e = events[index]
        assert e["flipped"]
        g = e["gradient"]
        assert g["sympy"] != g[installed[0]] and g["sympy"] == pytest.approx(g[installed[0]], rel=2e-5)


def test_conventions_table(installed, tmp_path, capsys):
    """One command prints each backend's derivative at each kink beside the exact one-sided limits."""
    pytest.importorskip("harness.oracle.symbolic")
    import json

    from harness.cli.main import main

    out = tmp_path / "conventions.json"
    assert main(["conventions", "--json", str(out)]) == 0
    rows = {r["kink"]: r for r in json.loads(out.read_text())}
    relu = rows["ReLU'(0)"]
    assert (relu["left"], relu["right"]) == (0.0, 1.0)
    assert relu["backends"] == {b: 0.0 for b in installed}  # all four: ReLU'(0) = 0
    allrelu = rows["AllReLU(0.3)'(0)"]
    assert allrelu["backends"] == {b: 1.0 for b in installed}  # right-hand: X < 0 takes alpha
    srelu_tr = rows["SReLU'(tr) (ar=0.375, tr=0.5)"]
    assert (srelu_tr["left"], srelu_tr["right"]) == (1.0, 0.375)
    assert rows["AbsoluteError dL/dY at Y = T"]["backends"] == {b: 0.0 for b in installed}  # sign(0)
    assert "one-sided" in capsys.readouterr().out


def test_frameworks_are_imported_only_when_their_backend_is_used(installed):
    import subprocess
    import sys

    code = ("import sys; from harness.cli.main import main; "
            "c = main(['run', '--scenario', 'relu-softmax', '--backends', 'numpy,torch', '--steps', '1', '--quiet']); "
            "print(c, 'tensorflow' in sys.modules, 'jax' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "0 False False True"
