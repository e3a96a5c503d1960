"""Hypothesis over whole random networks: scenarios/strategies.py draws them, harness/search/explore.py searches
(harness/search/evaluate.py judges each example).

- the property: on the released backends no example shows a red finding (known defects of
  docs/findings.md, listed in harness.run.known, are sorted out by harness.search.evaluate.evaluate;
  nothing else is excused); runs under the active profile (tests/conftest.py: dev | ci | nightly);
- the ``unstable`` rule: a float32 ``bug`` that float64 does not show is ``unstable`` (red),
  one that float64 shows too stays ``bug`` (planted on an explicit example);
- the search is deterministic for a seed;
- the acceptance test: a planted backward-pass bug is found, blamed on its backend alone and
  shrunk to a small example;
- the strategy draws valid, exact examples and covers every component.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings

from mutants import break_bias_gradient
from profiles import HEALTH, PROFILE

from harness.core.components import LAYERS, LOSSES, OPTIMIZERS
from harness.run.findings import RED
from harness.cli.main import main
from harness.search.evaluate import evaluate
from harness.search.explore import example_from_blob, explore, fingerprint, stable_generation
from harness.reports.bundle import load, replay
from harness.spec.flags import flags
from harness.core.components import DTYPES, MODES
from harness.spec.scenario import build_scenario
from harness.spec.state import as_dtype
from scenarios.strategies import TRICKS, Example, examples, losses_for


# ------------------------------------------------------------------------------ the property

BUNDLE_DIR = "nerva-consistency-failures"


def _final_run() -> bool:
    """True on Hypothesis's last call of a failing test: the shrunk example, replayed to report it."""
    try:
        from hypothesis.control import current_build_context

        return current_build_context().is_final
    except (ImportError, AttributeError):  # an older Hypothesis: write a bundle for every failing call
        return True


@pytest.mark.backends
@given(example=examples())
def test_no_red_finding_on_the_released_backends(example, installed, request):
    ev = evaluate(example, installed)
    message = ev.report()
    if ev.red and ev.result is not None and _final_run():
        from harness.reports.bundle import save

        test = request.node.nodeid.split("[")[0]
        seed = request.config.getoption("hypothesis_seed", None)
        pytest_cmd = f"HYPOTHESIS_PROFILE={PROFILE} pytest {test}" + (f" --hypothesis-seed={seed}" if seed else "")
        how = {"test": test, "profile": PROFILE, "hypothesis_seed": seed,
               "note": "Hypothesis prints the @reproduce_failure blob with the failure"}
        path = save(ev.result, BUNDLE_DIR, hypothesis=how, stem=f"pytest-{ev.red[0].cls}-{'+'.join(ev.red[0].backends)}",
                    commands=lambda p: {"replay": f"nerva-consistency replay {p}",
                                        "tox": f"tox -e consistency -- replay {p}", "pytest": pytest_cmd})
        search = ("derandomized: every run draws the same examples" if settings().derandomize else
                  f"seed {seed}" if seed else "random: pin a search with --hypothesis-seed=N")
        message += (f"\n\nrepro bundle: {path}\n  nerva-consistency replay {path}\n"
                    f"  tox -e consistency -- replay {path}\n  {pytest_cmd}   ({PROFILE} profile, {search})")
    assert not ev.red, message


# ------------------------------------------------------------------------------ the search

@pytest.fixture(autouse=True)
def _stable_generation():
    """Examples depend on the seed alone, not on which local modules this session loaded."""
    with stable_generation():
        yield


@pytest.mark.backends
def test_explore_is_deterministic_for_a_seed(installed, tmp_path, monkeypatch):
    """The same seed draws the same examples, even after a local module full of constants was
    imported in between (Hypothesis would otherwise draw some of them: stable_generation)."""
    def search():
        seen: list[bytes] = []
        strategy = examples().map(lambda e: seen.append(fingerprint(e)) or e)
        return explore(8, seed=20240601, backends=installed, strategy=strategy), seen

    first, seen_first = search()
    (tmp_path / "lots_of_constants.py").write_text(
        "VALUES = [" + ", ".join(f"{0.1 * k + 1e-3:.6f}" for k in range(300)) + "]\n"
        "COUNTS = [" + ", ".join(str(7 * k + 3) for k in range(300)) + "]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("lots_of_constants")
    second, seen_second = search()
    assert list(first) == [] == list(second)
    assert first.stats.examples == second.stats.examples == 8
    assert seen_first == seen_second  # the same examples, in the same order
    assert first.stats.findings == second.stats.findings and first.stats.oracles == second.stats.oracles


def test_the_ci_profile_draws_the_same_examples_every_run():
    """Issue 4: the ci profile is deterministic. Two runs of a test under it see the same
    examples in the same order (generation only: the backends are not needed for this)."""
    def draw() -> list[bytes]:
        seen: list[bytes] = []

        @settings(settings.get_profile("ci"), phases=[Phase.generate])
        @given(examples())
        def record(example):
            seen.append(fingerprint(example))

        record()
        return seen

    first, second = draw(), draw()
    assert len(first) == settings.get_profile("ci").max_examples
    assert first == second


def _scale_linear_dw(monkeypatch, factor: float, only_float32: bool) -> None:
    """Patch nerva-torch's LinearLayer.backpropagate to multiply DW by ``factor`` (in every dtype,
    or only when DW is a float32 array): a planted error of a fixed relative size."""
    import torch

    layers = importlib.import_module("nerva_torch.layers")
    original = layers.LinearLayer.backpropagate

    def patched(self, Y, DY):
        original(self, Y, DY)
        if not only_float32 or self.DW.dtype == torch.float32:
            self.DW.mul_(factor)

    monkeypatch.setattr(layers.LinearLayer, "backpropagate", patched)


def _linear_example(dtype: str) -> Example:
    """One Linear layer, 2 -> 2, a batch of two, one lockstep step (the exact oracle). Every value
    is a small dyadic number and every one positive, so Y, DY and DW are exact in float32 too (a
    correct backend is off by nothing) and no sum cancels."""
    sc = build_scenario(name="hypothesis", layers="Linear", sizes="2,2", optimizers="GradientDescent",
                        init_weights="XavierNormal", loss="SquaredError", lr=0.125, batch_size=2, steps=1,
                        dtype=dtype, mode="lockstep")
    state0 = {"W1": np.array([[0.5, 0.25], [0.75, 1.0]]), "b1": np.array([0.5, 0.25])}
    X, T = np.array([[1.0, 2.0], [0.5, 1.5]]), np.zeros((2, 2))
    return Example(sc, state0, [(X, T)])


@pytest.mark.backends
def test_a_float32_error_that_float64_shows_too_stays_a_bug(installed, monkeypatch):
    """DW off by 2**-10 (relative) in every dtype: flagged in float32 and in float64's rerun."""
    backends = [b for b in installed if b in ("numpy", "torch")]
    _scale_linear_dw(monkeypatch, 1 + 2**-10, only_float32=False)
    ev = evaluate(_linear_example("float32"), backends)
    (f,) = ev.red
    assert (f.cls, f.backends, f.tensor, f.layer, f.layer_kind, f.step) == ("bug", ("torch",), "DW", 1, "Linear", 0)
    assert ev.runs == 2 and ev.known == [] and "float64" not in f.detail  # the float64 rerun, which blamed torch
    ev64 = evaluate(_linear_example("float64"), backends)  # a float64 example: a bug, no rerun
    (g,) = ev64.red
    assert (g.cls, g.backends, g.tensor) == ("bug", ("torch",), "DW") and ev64.runs == 1


@pytest.mark.backends
def test_a_documented_defect_is_known_after_its_counterfactual_run(installed):
    """docs/findings.md #2 through explore's triage (harness.run.known, the one list): the
    catalog's leaky-logsoftmax in float64 blames tensorflow; the same example with every alpha
    rounded to float32 is clean, so the finding is known by that defect's id, not red."""
    if "tensorflow" not in installed:
        pytest.skip("needs nerva-tensorflow")
    import scenarios
    from harness.spec.data import batches
    from harness.spec.state import initial_state

    sc = scenarios.get("leaky-logsoftmax", dtype="float64", mode="lockstep", steps=1)
    ev = evaluate(Example(sc, initial_state(sc), list(batches(sc))), installed)
    assert ev.red == [] and [(f.cls, f.backends, name) for f, name in ev.known] == \
        [("bug", ("tensorflow",), "tensorflow-float64-alpha")]
    assert ev.runs == 2  # the run and its counterfactual


@pytest.mark.backends
@pytest.mark.parametrize("error", [2**-10, 1e-6], ids=["2^-10", "1e-6"])
def test_a_float32_only_error_is_unstable_and_red(error, installed, monkeypatch):
    """DW off only when it is a float32 array - a formula that loses accuracy in float32 alone:
    the finding is ``unstable``, red, named apart from ``bug``. 2**-10 is far outside any bound;
    1e-6 (about 17 float32 units of roundoff, where a correct backend is exact) needs the
    comparator's per-element bound to be seen at all."""
    backends = [b for b in installed if b in ("numpy", "torch")]
    _scale_linear_dw(monkeypatch, 1 + error, only_float32=True)
    ev = evaluate(_linear_example("float32"), backends)
    (f,) = ev.red
    assert (f.cls, f.backends, f.tensor, f.layer, f.layer_kind, f.step) == \
        ("unstable", ("torch",), "DW", 1, "Linear", 0)
    assert f.red and "within the bound in float64" in f.detail and "in float32" in f.detail
    assert f.signature[0] == "unstable" and ev.runs == 2
    assert evaluate(_linear_example("float64"), backends).red == []  # float64 on its own: nothing


ACCEPTANCE_SEED = 1


@pytest.mark.backends
@pytest.mark.parametrize("backend,layer_class,budget", [("torch", "LinearLayer", 200),
                                                        ("tensorflow", "SoftmaxLayer", 120)])
def test_a_planted_backward_bug_is_found_blamed_shrunk_and_replayed(backend, layer_class, budget, installed,
                                                                     monkeypatch, record_property, capsys, tmp_path):
    """The acceptance test, through the command line: one backend's backpropagate of one layer
    class with Db off by 0.1%. ``explore`` must report exactly one defect, blamed on that
    backend alone, shrunk to at most 2 layers and 4 rows; its bundle must replay bit for bit and
    its reproduce blob must give back the same example.

    LinearLayer is hit by the very first example (Hypothesis starts from the simplest one, a
    single Linear layer), the other 199 check that nothing else is reported; SoftmaxLayer has to
    be searched for and shrunk (a smaller budget keeps this file within about three minutes)."""
    break_bias_gradient(monkeypatch, backend, layer_class)
    report = tmp_path / "explore.json"
    argv = ["explore", "--examples", str(budget), "--seed", str(ACCEPTANCE_SEED), "--backends", ",".join(installed),
            "--bundle-dir", str(tmp_path / "bundles"), "--json", str(report), "--quiet"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    doc = json.loads(report.read_text())
    assert doc["examples"] == budget
    red = [d for d in doc["defects"] if d["class"] in RED]
    assert len(red) == 1, out
    defect = red[0]
    assert defect["backends"] == [backend]
    assert defect["tensor"] == "Db" and defect["layer_kind"] == layer_class.removesuffix("Layer")
    assert defect["size"]["layers"] <= 2 and defect["size"]["batch"] <= 4
    assert 1 <= defect["found_after"] <= budget and defect["count"] >= 1
    # the failure message: replay, the search with its seed, the tox forms, the Hypothesis seed and blob
    bundle = defect["bundle"]
    cmds = defect["reproduce"]
    assert cmds["replay"] == f"nerva-consistency replay {bundle}"
    assert f"--seed {ACCEPTANCE_SEED}" in cmds["explore"] and f"--examples {budget}" in cmds["explore"]
    assert cmds["tox"].startswith("tox -e consistency -- replay ")
    for text in (cmds["replay"], cmds["explore"], cmds["tox"], cmds["tox_explore"], f"seed {cmds['hypothesis_seed']}"):
        assert text in out
    # the bundle: rerun without any RNG, the same numbers bit for bit
    meta, scenario, state0, data = load(bundle)
    assert meta["hypothesis"]["seed"] == ACCEPTANCE_SEED and meta["reproduce"] == cmds
    result, differences = replay(bundle)
    assert differences == [] and not result.passed
    step, tv = result.first_divergence
    assert tv.blamed == [backend] and tv.key[0] == "Db"
    # the reproduce blob gives back the bundle's example
    example = example_from_blob(meta["hypothesis"]["blob"].encode("ascii"))
    assert flags(example.scenario) == meta["spec"]
    assert state0.keys() == example.state0.keys()
    assert all(np.array_equal(state0[k], example.state0[k]) for k in state0)
    assert all(np.array_equal(a, b) for (X, T), (X2, T2) in zip(data, example.data) for a, b in ((X, X2), (T, T2)))
    for key in ("seconds", "rounds", "shrink_runs"):
        record_property(key, doc[key])
    record_property("found_after_examples", defect["found_after"])
    with capsys.disabled():
        print(f"\n{backend} {layer_class} bug: found after {defect['found_after']} example(s); {doc['examples']} "
              f"examples, {doc['shrink_runs']} shrink runs in {doc['seconds']:.1f} s; smallest example: "
              f"{defect['size']}")


# ------------------------------------------------------------------------------ the strategy

COVERAGE: dict[str, set] = {"kinds": set(), "losses": set(), "optimizers": set(), "dtypes": set(), "modes": set(),
                            "tricks": set(), "per-parameter": set()}


@settings(max_examples=200, derandomize=True, database=None, deadline=None, suppress_health_check=HEALTH,
          phases=[Phase.generate])
@given(example=examples())
def test_every_drawn_example_is_valid_and_exact(example: Example):
    sc = example.scenario
    kinds = [layer.kind for layer in sc.layers]
    # the network
    assert sc.name == "hypothesis"
    assert 1 <= len(kinds) <= 4 and all(1 <= w <= 32 for w in sc.sizes)
    assert 1 <= sc.batch_size <= 32 and 1 <= sc.steps <= 10
    assert "BatchNormalization" not in (kinds[0], kinds[-1])
    assert sc.loss in losses_for(kinds[-1])
    if sc.loss in ("CrossEntropy", "NegativeLogLikelihood"):
        assert kinds[-1] == "Softmax"
    for layer in sc.layers:
        if layer.kind in ("LeakyReLU", "AllReLU"):
            assert 0 < layer.arg["alpha"] < 1
        if layer.kind == "SReLU":
            assert layer.arg["tl"] < layer.arg["tr"]
    # build_scenario accepts it as its own flags say
    flags = sc.layer_strings()
    again = build_scenario(name=sc.name, layers=flags["layers"], sizes=flags["sizes"], optimizers=flags["optimizers"],
                           init_weights=flags["init_weights"], loss=sc.loss, lr=sc.lr, batch_size=sc.batch_size,
                           steps=sc.steps, dtype=sc.dtype, mode=sc.mode)
    assert again.layers == sc.layers and again.sizes == sc.sizes
    # the values: every parameter, exact in the dtype, the right shapes, finite and in range
    assert set(example.state0) == {f"{p}{i}" for i, layer in enumerate(sc.layers, 1) for p, _ in layer.optimizers}
    for key, a in example.state0.items():
        assert a.dtype == np.float64 and np.array_equal(as_dtype(a, sc.dtype), a), key
        assert np.all(np.isfinite(a)) and np.max(np.abs(a), initial=0.0) <= (1e3 if sc.dtype == "float32" else 1e4), key
    width = sc.input_size
    for i, layer in enumerate(sc.layers, 1):
        if layer.kind == "BatchNormalization":
            assert example.state0[f"gamma{i}"].shape == example.state0[f"beta{i}"].shape == (width,)
        else:
            assert example.state0[f"W{i}"].shape == (layer.units, width)
            assert example.state0[f"b{i}"].shape == (layer.units,)
            width = layer.units
    assert len(example.data) == sc.steps
    for X, T in example.data:
        assert X.shape == (sc.batch_size, sc.input_size) and T.shape == (sc.batch_size, sc.output_size)
        for a in (X, T):
            assert np.array_equal(as_dtype(a, sc.dtype), a) and np.all(np.isfinite(a))
        assert np.max(np.abs(X)) <= (1e2 if sc.dtype == "float32" else 1e3)
        if sc.loss in ("CrossEntropy", "NegativeLogLikelihood", "SoftmaxCrossEntropy", "LogisticCrossEntropy"):
            assert np.all(T >= 0)
    size = example.size
    assert size == (len(kinds), max(sc.sizes), sc.batch_size, sc.steps)
    # coverage
    COVERAGE["kinds"].update(kinds)
    COVERAGE["losses"].add(sc.loss)
    COVERAGE["optimizers"].update(opt.name for layer in sc.layers for _, opt in layer.optimizers)
    COVERAGE["per-parameter"].update(layer.kind for layer in sc.layers
                                     if len({str(o) for _, o in layer.optimizers}) > 1)
    COVERAGE["dtypes"].add(sc.dtype)
    COVERAGE["modes"].add(sc.mode)
    COVERAGE["tricks"].update(t.split()[0] for t in example.tricks)


def test_the_strategy_covers_every_component():
    if not COVERAGE["kinds"]:  # run on its own: draw the 200 examples first
        test_every_drawn_example_is_valid_and_exact()
    assert COVERAGE["kinds"] == set(LAYERS)
    assert COVERAGE["losses"] == set(LOSSES)
    assert COVERAGE["optimizers"] == set(OPTIMIZERS)
    assert COVERAGE["dtypes"] == set(DTYPES) and COVERAGE["modes"] == set(MODES)
    assert COVERAGE["per-parameter"], "no layer drew one optimizer per parameter"
    assert len(set(TRICKS) & COVERAGE["tricks"]) >= 5, COVERAGE["tricks"]  # most adversarial tricks too


def test_examples_shrink_towards_the_smallest_network():
    smallest = find(examples(), lambda e: len(e.scenario.layers) >= 3 and e.scenario.steps >= 2,
                    settings=settings(database=None, derandomize=True, deadline=None, suppress_health_check=HEALTH,
                                      max_examples=500))
    assert smallest.size == (3, 1, 1, 2), smallest.describe()
