"""Spec strings (harness.spec.scenario, scenarios), data batches (harness.spec.data), initial state (harness.spec.state).

Pure NumPy: no backend is built or imported here.
"""

from __future__ import annotations

import numpy as np
import pytest

import scenarios
from harness.core.components import INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS
from harness.spec.data import batches
from harness.core.errors import SpecError
from harness.run import plan
from harness.spec.scenario import (
    DataSpec,
    build_scenario,
    parse_layer,
    parse_layer_optimizers,
    parse_learning_rate,
    parse_optimizer,
)
from harness.spec.state import initial_state


def build(**kw):
    args = dict(name="t", layers="ReLU;Linear", sizes="3,4,2", optimizers="GradientDescent",
                init_weights=None, loss="SquaredError", lr=0.01, batch_size=4, steps=2)
    args.update(kw)
    return build_scenario(**args)


def spec_error(fn, *args, **kw) -> str:
    """Call fn, expect a SpecError with a one-line message, return the message."""
    with pytest.raises(SpecError) as info:
        fn(*args, **kw)
    message = str(info.value)
    assert message, "empty error message"
    assert "\n" not in message and "\r" not in message, message
    return message


# --------------------------------------------------------------------------------------- layers

# Distinct, non-default values for every parameter of every kind, so a mis-binding shows.
VALUES = [0.125, -0.25, 0.375, 0.75]


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_layer_kind_parses_bare_or_with_its_parameters(kind):
    params = LAYERS[kind].params
    if not params:
        assert parse_layer(kind) == (kind, {})
        return
    values = VALUES[: len(params)]
    expected = dict(zip(params, values))
    positional = f"{kind}({', '.join(map(str, values))})"
    keyword = f"{kind}({', '.join(f'{k}={v}' for k, v in expected.items())})"
    assert parse_layer(positional) == (kind, expected)
    assert parse_layer(keyword) == (kind, expected)


def test_leaky_relu_positional_equals_keyword():
    assert parse_layer("LeakyReLU(0.1)") == parse_layer("LeakyReLU(alpha=0.1)") == ("LeakyReLU", {"alpha": 0.1})


def test_elu_alpha_defaults_to_one():
    assert parse_layer("ELU") == ("ELU", {"alpha": 1.0})
    assert parse_layer("ELU(alpha=0.1)") == ("ELU", {"alpha": 0.1})


def test_srelu_defaults():
    assert parse_layer("SReLU") == ("SReLU", {"al": 0.0, "tl": 0.0, "ar": 0.0, "tr": 1.0})


def test_srelu_keywords_not_given_take_defaults():
    assert parse_layer("SReLU(tl=-0.3)") == ("SReLU", {"al": 0.0, "tl": -0.3, "ar": 0.0, "tr": 1.0})


def test_srelu_single_positional_number_sets_all_four():
    assert parse_layer("SReLU(0.3)") == ("SReLU", {"al": 0.3, "tl": 0.3, "ar": 0.3, "tr": 0.3})


def test_srelu_two_positional_numbers_bind_in_order():
    assert parse_layer("SReLU(0.1, 0.2)") == ("SReLU", {"al": 0.1, "tl": 0.2, "ar": 0.0, "tr": 1.0})


def test_linear_with_parentheses_rejected():
    message = spec_error(parse_layer, "Linear()")
    assert "Linear" in message


def test_unknown_layer_rejected_with_choices():
    message = spec_error(parse_layer, "Foo(0.1)")
    assert "'Foo'" in message
    for kind in LAYERS:
        assert kind in message


def test_unknown_layer_rejected_by_build_scenario():
    message = spec_error(build, layers="ReLU;Foo")
    assert "'Foo'" in message


@pytest.mark.parametrize("text", ["LeakyReLU", "LeakyReLU()", "AllReLU"])
def test_missing_required_parameter_rejected(text):
    message = spec_error(parse_layer, text)
    assert "alpha" in message


def test_too_many_numbers_rejected():
    message = spec_error(parse_layer, "LeakyReLU(0.1, 0.2)")
    assert "alpha" in message


def test_unknown_keyword_rejected():
    message = spec_error(parse_layer, "LeakyReLU(beta=0.1)")
    assert "'beta'" in message and "alpha" in message


def test_non_number_argument_rejected():
    message = spec_error(parse_layer, "LeakyReLU(alpha=x)")
    assert "LeakyReLU" in message


@pytest.mark.parametrize("text", ["ReLU", "LeakyReLU(alpha=0.1)", "ELU(0.5)", "AllReLU(0.3)", "SReLU",
                                  "SReLU(0.3)", "SReLU(al=0.05, tl=-0.3, ar=0.2, tr=0.4)", "Linear",
                                  "Softmax", "BatchNormalization", "ELU(alpha=2)", "LeakyReLU(1e-20)"])
def test_layer_text_round_trips(text):
    kind, args = parse_layer(text)
    sizes = "3,2" if kind == "BatchNormalization" else "3,3,2"
    sc = build(layers=f"{text};Linear", sizes=sizes)
    spec = sc.layers[0]
    assert spec.kind == kind
    assert spec.arg == args
    assert parse_layer(spec.text) == (kind, args)


# ---------------------------------------------------------------------------------------- sizes

def test_batchnorm_keeps_width_and_consumes_no_size():
    sc = build(layers="ReLU;BatchNormalization;Linear", sizes="3,4,2")
    assert [layer.units for layer in sc.layers] == [4, 4, 2]
    assert sc.input_size == 3 and sc.output_size == 2
    assert [layer.init for layer in sc.layers] == ["XavierNormal", None, "XavierNormal"]


@pytest.mark.parametrize("layers, sizes", [
    ("ReLU;Linear", "3,2"),
    ("ReLU;Linear", "3,4,5,2"),
    ("ReLU;BatchNormalization;Linear", "3,4,4,2"),  # BN counted as if it consumed a size
    ("BatchNormalization;Linear", "3,3,2"),
])
def test_sizes_that_do_not_fit_rejected(layers, sizes):
    message = spec_error(build, layers=layers, sizes=sizes)
    n_linear = sum(LAYERS[k].has_weights for k in layers.split(";"))
    assert f"{n_linear} linear layer" in message and f"give {n_linear + 1} sizes" in message


@pytest.mark.parametrize("sizes", ["3,x,2", "3,0,2", "3,-4,2"])
def test_bad_size_values_rejected(sizes):
    spec_error(build, sizes=sizes)


# ----------------------------------------------------------------------------------- optimizers

def test_unknown_optimizer_rejected_with_choices():
    message = spec_error(parse_optimizer, "Adam(0.9)")
    assert "'Adam'" in message
    for name in OPTIMIZERS:
        assert name in message


def test_unknown_optimizer_rejected_by_build_scenario():
    message = spec_error(build, optimizers="GradientDescent;Adam")
    assert "'Adam'" in message


def test_optimizer_binds_mu():
    assert parse_optimizer("Momentum(0.9)").mu == 0.9
    assert parse_optimizer("Nesterov(mu=0.75)").mu == 0.75
    assert parse_optimizer("GradientDescent").mu == 0.0
    assert "mu" in spec_error(parse_optimizer, "Momentum")


@pytest.mark.parametrize("optimizers", ["GradientDescent;Momentum(0.9)",
                                        "GradientDescent;GradientDescent;Momentum(0.9);Nesterov(0.5)"])
def test_wrong_number_of_optimizers_rejected(optimizers):
    # three layers, BatchNormalization included, need three optimizers
    message = spec_error(build, layers="ReLU;BatchNormalization;Linear", sizes="3,4,2", optimizers=optimizers)
    assert f"{optimizers.count(';') + 1} optimizer(s) for 3 layer(s)" in message


def test_single_optimizer_broadcast_to_every_layer():
    sc = build(layers="ReLU;BatchNormalization;Linear", sizes="3,4,2", optimizers="Momentum(0.9)")
    for layer in sc.layers:
        opts = dict(layer.optimizers)
        assert set(opts) == set(layer.info.trainable)
        assert all(o.name == "Momentum" and o.mu == 0.9 for o in opts.values())
    assert set(dict(sc.layers[1].optimizers)) == {"gamma", "beta"}


def test_one_optimizer_per_layer_assigned_in_order():
    sc = build(layers="ReLU;BatchNormalization;Linear", sizes="3,4,2",
               optimizers="Momentum(0.9);Nesterov(0.5);GradientDescent")
    names = [{o.name for _, o in layer.optimizers} for layer in sc.layers]
    assert names == [{"Momentum"}, {"Nesterov"}, {"GradientDescent"}]
    assert dict(sc.layers[1].optimizers)["gamma"].mu == 0.5


def test_per_parameter_optimizer():
    opts = dict(parse_layer_optimizers("W=Momentum(0.9),b=Nesterov(0.75)", LAYERS["ReLU"]))
    assert set(opts) == {"W", "b"}
    assert opts["W"].name == "Momentum" and opts["W"].mu == 0.9
    assert opts["b"].name == "Nesterov" and opts["b"].mu == 0.75


def test_per_parameter_optimizer_unnamed_parameters_fall_back_to_first():
    opts = dict(parse_layer_optimizers("b=Nesterov(0.75)", LAYERS["SReLU"]))
    assert set(opts) == {"W", "b", "srelu"}
    assert all(o.name == "Nesterov" and o.mu == 0.75 for o in opts.values())


def test_per_parameter_optimizer_in_build_scenario():
    sc = build(optimizers="W=Momentum(0.9),b=Nesterov(0.75);GradientDescent")
    opts = dict(sc.layers[0].optimizers)
    assert (opts["W"].name, opts["W"].mu, opts["b"].name, opts["b"].mu) == ("Momentum", 0.9, "Nesterov", 0.75)
    assert {o.name for _, o in sc.layers[1].optimizers} == {"GradientDescent"}


@pytest.mark.parametrize("text, kind", [
    ("gamma=Momentum(0.9)", "Linear"),
    ("W=Momentum(0.9),gamma=Nesterov(0.5)", "ReLU"),
    ("W=Momentum(0.9)", "BatchNormalization"),
    ("W=Momentum(0.9),Nesterov(0.5)", "ReLU"),  # second part is not PARAM=Optimizer
])
def test_per_parameter_optimizer_bad_parameter_rejected(text, kind):
    message = spec_error(parse_layer_optimizers, text, LAYERS[kind])
    assert kind in message
    for p in LAYERS[kind].trainable:
        assert p in message


def test_per_parameter_optimizer_unknown_optimizer_rejected():
    message = spec_error(parse_layer_optimizers, "W=Adam(0.9),b=Nesterov(0.75)", LAYERS["ReLU"])
    assert "'Adam'" in message


# --------------------------------------------------------------------- initializers and losses

def test_unknown_initializer_rejected_with_choices():
    message = spec_error(build, init_weights="Glorot")
    assert "'Glorot'" in message
    for name in INITIALIZERS:
        assert name in message


def test_wrong_number_of_initializers_rejected():
    message = spec_error(build, layers="ReLU;ReLU;Linear", sizes="3,4,4,2", init_weights="HeNormal,HeNormal")
    assert "2 weight initializer" in message and "3 linear" in message


def test_single_initializer_broadcast_to_linear_layers():
    sc = build(layers="ReLU;BatchNormalization;ReLU;Linear", sizes="3,4,4,2", init_weights="HeNormal")
    assert [layer.init for layer in sc.layers] == ["HeNormal", None, "HeNormal", "HeNormal"]


def test_initializers_assigned_per_linear_layer_skipping_batchnorm():
    sc = build(layers="ReLU;BatchNormalization;ReLU;Linear", sizes="3,4,4,2",
               init_weights="HeNormal,Zero,LeCunUniform")
    assert [layer.init for layer in sc.layers] == ["HeNormal", None, "Zero", "LeCunUniform"]


def test_unknown_loss_rejected_with_choices():
    message = spec_error(build, loss="HingeLoss")
    assert "'HingeLoss'" in message
    for name in LOSSES:
        assert name in message


@pytest.mark.parametrize("kw, word", [
    ({"dtype": "float16"}, "float16"),
    ({"mode": "sometimes"}, "sometimes"),
    ({"batch_size": 0}, "batch size"),
    ({"steps": 0}, "steps"),
    ({"layers": ""}, "layers"),
])
def test_other_bad_values_rejected(kw, word):
    assert word in spec_error(build, **kw)


# -------------------------------------------------------------------------------- learning rate

def test_learning_rate_number_string():
    assert parse_learning_rate("0.01") == 0.01


def test_learning_rate_float():
    assert parse_learning_rate(0.01) == 0.01
    assert parse_learning_rate(1) == 1.0


def test_learning_rate_constant():
    assert parse_learning_rate("Constant(0.01)") == 0.01
    assert parse_learning_rate("Constant(lr=0.01)") == 0.01


@pytest.mark.parametrize("text", ["Exponential(0.1)", "Constant(0.1, 0.2)", "Constant", "-1", "0", "abc("])
def test_learning_rate_unsupported_rejected(text):
    spec_error(parse_learning_rate, text)


def test_learning_rate_schedule_message_names_it():
    assert "Exponential(0.1)" in spec_error(parse_learning_rate, "Exponential(0.1)")


@pytest.mark.parametrize("value", [-1.0, 0.0, "Constant(-0.5)"])
def test_learning_rate_non_positive_rejected(value):
    assert "positive" in spec_error(parse_learning_rate, value)


# ---------------------------------------------------------------------------------- scenarios

@pytest.mark.parametrize("name", list(scenarios.catalog()))
def test_every_catalog_scenario_builds(name):
    sc = scenarios.get(name)
    assert sc.name == name
    assert len(sc.sizes) == sum(layer.info.has_weights for layer in sc.layers) + 1
    assert sc.lr > 0 and sc.steps >= 1 and sc.batch_size >= 1


def test_upstream_scenario():
    sc = scenarios.get("upstream")
    assert sc.sizes == (784, 1024, 512, 10)
    assert [layer.kind for layer in sc.layers] == ["ELU", "HyperbolicTangent", "Linear"]
    assert sc.layers[0].arg == {"alpha": 0.1}
    assert [layer.units for layer in sc.layers] == [1024, 512, 10]
    assert sc.loss == "AbsoluteError"
    assert sc.batch_size == 100
    assert sc.lr == 0.001
    assert sc.steps == 50
    assert sc.data.source == "digits784"
    opts = dict(sc.layers[0].optimizers)
    assert (opts["W"].name, opts["W"].mu) == ("Momentum", 0.9)
    assert (opts["b"].name, opts["b"].mu) == ("Nesterov", 0.75)
    assert {(o.name, o.mu) for _, o in sc.layers[1].optimizers} == {("Momentum", 0.8)}
    assert [layer.init for layer in sc.layers] == ["XavierNormal", "LeCunNormal", "HeNormal"]


def test_upstream_layer_strings_rebuild_the_same_model():
    sc = scenarios.get("upstream")
    s = sc.layer_strings()
    again = build_scenario(name="again", layers=s["layers"], sizes=s["sizes"], optimizers=s["optimizers"],
                           init_weights=s["init_weights"], loss=sc.loss, lr=sc.lr,
                           batch_size=sc.batch_size, steps=sc.steps)
    assert again.layers == sc.layers and again.sizes == sc.sizes



def test_every_catalog_scenario_rebuilds_from_its_printed_flags():
    """harness.spec.flags.flags is the one printer of a scenario: its strings, read back as a
    catalog table (what ``run`` and a report's ``reproduce`` do), give the same scenario."""
    from harness.spec.flags import NAMES, flags

    for name in scenarios.catalog():
        sc = scenarios.get(name)
        printed = flags(sc)
        assert tuple(printed) == NAMES
        again = scenarios.from_table(name, printed)
        assert again.with_(description=sc.description) == sc, name


def test_the_plan_runs_small_scenarios_in_all_four_variants_and_upstream_once():
    jobs = [(r.scenario, r.dtype, r.mode) for r in plan.plan()]
    assert [j for j in jobs if j[0] == "upstream"] == [("upstream", "float32", "trajectory")]
    small = {j[0] for j in jobs} - {"upstream"}
    assert len(small) >= 6
    for name in small:
        assert {(d, m) for n, d, m in jobs if n == name} == {
            ("float32", "trajectory"), ("float32", "lockstep"), ("float64", "trajectory"), ("float64", "lockstep")}


def test_get_applies_overrides():
    sc = scenarios.get("relu-softmax", steps=3, seed=7, dtype="float64")
    assert (sc.steps, sc.seed, sc.dtype) == (3, 7, "float64")


def test_get_unknown_scenario():
    assert "'nope'" in spec_error(scenarios.get, "nope")


def test_from_table_maps_dataset_path_to_npz_with_an_absolute_path(tmp_path, monkeypatch):
    # absolute, so that the reproduce commands printed for the run work from any directory
    monkeypatch.chdir(tmp_path)
    table = dict(scenarios.catalog()["leaky-logsoftmax"], dataset="some/file.npz")
    assert scenarios.from_table("x", table).data.source == f"npz:{tmp_path}/some/file.npz"


def _fake_catalog(monkeypatch, tmp_path, text):
    (tmp_path / "catalog.toml").write_text(text)

    class FakeResources:
        @staticmethod
        def files(_package):
            return tmp_path

    monkeypatch.setattr(scenarios, "resources", FakeResources)


def test_catalog_unknown_key_rejected(monkeypatch, tmp_path):
    _fake_catalog(monkeypatch, tmp_path, '[a]\nlayers = "ReLU;Linear"\ngrowth = 1\n')
    message = spec_error(scenarios.catalog)
    assert "'a'" in message and "growth" in message


@pytest.mark.parametrize("line", ["tolerance = { DW = [1e-3, 1e-3] }", "tolerance-growth = 1"])
def test_catalog_tolerance_key_is_rejected_as_unknown(monkeypatch, tmp_path, line):
    """Fixed tolerances are gone (every element is judged in units of its rounding bound,
    harness.judge.bounds): a catalog entry that still sets one is an error, not silently ignored."""
    _fake_catalog(monkeypatch, tmp_path, f'[a]\nlayers = "ReLU;Linear"\n{line}\n')
    message = spec_error(scenarios.catalog)  # one line (spec_error checks)
    assert "'a'" in message and "unknown key" in message and line.split(" =")[0] in message


def test_catalog_base_from_a_fake_catalog(monkeypatch, tmp_path):
    _fake_catalog(monkeypatch, tmp_path, """
[a]
layers = "ReLU;Linear"
sizes = "3,4,2"
optimizers = "Momentum(0.9)"
loss = "SquaredError"
learning-rate = 0.5
batch-size = 2
steps = 3
check = true

[b]
base = "a"
sizes = "3,7,2"
""")
    b = scenarios.get("b")
    assert b.sizes == (3, 7, 2) and b.lr == 0.5 and b.steps == 3
    assert {o.mu for layer in b.layers for _, o in layer.optimizers} == {0.9}
    assert "base" not in scenarios.catalog()["b"]
    assert {r.scenario for r in plan.plan()} == {"a"}  # check is not inherited


def test_catalog_base_chains_and_variants(monkeypatch, tmp_path):
    _fake_catalog(monkeypatch, tmp_path, """
[a]
layers = "ReLU;Linear"
sizes = "3,4,2"
optimizers = "GradientDescent"
loss = "SquaredError"
learning-rate = 0.5
batch-size = 2
steps = 3

[b]
base = "a"
steps = 4

[c]
base = "b"
dtype = "float64"
check = true
variants = ["float64/lockstep"]
""")
    c = scenarios.get("c")
    assert (c.steps, c.lr, c.dtype) == (4, 0.5, "float64")
    assert [(r.scenario, r.dtype, r.mode) for r in plan.plan()] == [("c", "float64", "lockstep")]


# ------------------------------------------------------------------------------------- data

def test_batches_seeded():
    sc = build(sizes="5,4,3", batch_size=6, steps=3, seed=11)
    a, b = batches(sc), batches(sc)
    c = batches(sc.with_(seed=12))
    assert len(a) == 3
    for (X1, T1), (X2, T2) in zip(a, b):
        assert np.array_equal(X1, X2) and np.array_equal(T1, T2)
    assert not np.array_equal(a[0][0], c[0][0])
    assert not np.array_equal(a[0][0], a[1][0])  # fresh rows every step


@pytest.mark.parametrize("targets", ["onehot", "soft", "real"])
def test_synthetic_batches_exact_in_float32(targets):
    sc = build(sizes="5,4,3", batch_size=6, steps=2, data=DataSpec("synthetic", targets))
    for X, T in batches(sc):
        assert X.dtype == np.float64 and X.shape == (6, 5) and T.shape == (6, 3)
        for a in (X, T):
            assert np.array_equal(a.astype(np.float32).astype(np.float64), a)
        if targets == "real":
            assert (T < 0).any()  # real-valued targets, not probabilities


def test_float64_batches_not_rounded_to_float32():
    sc = build(sizes="5,4,3", batch_size=6, steps=1, dtype="float64")
    X, _ = batches(sc)[0]
    assert not np.array_equal(X.astype(np.float32).astype(np.float64), X)


def test_onehot_targets():
    sc = build(sizes="5,4,3", batch_size=50, steps=1)
    _, T = batches(sc)[0]
    assert set(np.unique(T)) == {0.0, 1.0}
    assert np.array_equal(T.sum(axis=1), np.ones(50))


def test_soft_targets_are_distributions():
    sc = build(sizes="5,4,7", batch_size=20, steps=2, data=DataSpec("synthetic", "soft"))
    for _, T in batches(sc):
        assert (T >= 0).all()
        assert np.abs(T.sum(axis=1) - 1).max() < 1e-6
        assert (T.max(axis=1) < 1).all()  # genuinely soft, not one-hot


def test_unknown_synthetic_targets_rejected():
    spec_error(batches, build(data=DataSpec("synthetic", "fuzzy")))


def test_digits784():
    sc = build(sizes="784,16,10", batch_size=12, steps=2, data=DataSpec("digits784"))
    for X, T in batches(sc):
        assert X.shape == (12, 784) and T.shape == (12, 10)
        assert X.min() >= 0 and X.max() <= 1 and X.max() > 0
        assert set(np.unique(T)) == {0.0, 1.0} and np.array_equal(T.sum(axis=1), np.ones(12))
        # the 2-pixel border of the 28x28 image is empty
        img = X.reshape(12, 28, 28)
        assert not img[:, :2, :].any() and not img[:, :, -2:].any()
        assert np.array_equal(X.astype(np.float32).astype(np.float64), X)


def test_digits784_wrong_sizes_rejected():
    assert "784" in spec_error(batches, build(sizes="64,16,10", data=DataSpec("digits784")))


def _npz_scenario(path, **kw):
    return build(sizes="3,4,2", batch_size=4, steps=3, data=DataSpec(f"npz:{path}"), **kw)


def test_npz_dataset_with_class_indices(tmp_path):
    rng = np.random.default_rng(0)
    Xtrain = rng.standard_normal((10, 3))
    Ttrain = rng.integers(0, 2, size=10)
    path = tmp_path / "data.npz"
    np.savez(path, Xtrain=Xtrain, Ttrain=Ttrain)
    seen = []
    for X, T in batches(_npz_scenario(path)):
        assert X.shape == (4, 3) and T.shape == (4, 2)
        for x, t in zip(X, T):
            rows = np.nonzero(np.all(np.abs(Xtrain - x) <= 1e-6 * (1 + np.abs(x)), axis=1))[0]
            assert len(rows) == 1
            assert np.array_equal(t, np.eye(2)[Ttrain[rows[0]]])
            seen.append(rows[0])
    # 12 rows drawn from 10: the first epoch is a permutation (no repeats among the first 10)
    assert len(set(seen[:10])) == 10


def test_npz_dataset_through_from_table(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, Xtrain=np.ones((6, 12)), Ttrain=np.arange(6) % 5)
    table = dict(scenarios.catalog()["leaky-logsoftmax"], dataset=str(path), **{"batch-size": 3})
    X, T = batches(scenarios.from_table("x", table))[0]
    assert X.shape == (3, 12) and T.shape == (3, 5)


def test_npz_missing_file(tmp_path):
    message = spec_error(batches, _npz_scenario(tmp_path / "absent.npz"))
    assert "absent.npz" in message


def test_npz_without_ttrain(tmp_path):
    path = tmp_path / "noT.npz"
    np.savez(path, Xtrain=np.zeros((5, 3)))
    assert "Ttrain" in spec_error(batches, _npz_scenario(path))


def test_npz_wrong_width(tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, Xtrain=np.zeros((5, 7)), Ttrain=np.zeros(5, dtype=int))
    assert "7 features" in spec_error(batches, _npz_scenario(path))


def test_npz_labels_out_of_range(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, Xtrain=np.zeros((5, 3)), Ttrain=np.array([0, 1, 2, 0, 1]))
    spec_error(batches, _npz_scenario(path))


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_text("not a numpy file\n")
    spec_error(batches, _npz_scenario(path))


def test_npy_file_given_as_dataset(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros((5, 3)))
    spec_error(batches, _npz_scenario(path))


# ------------------------------------------------------------------------------------ state

def test_initial_state_shapes():
    sc = build(layers="ReLU;BatchNormalization;SReLU(al=0.05,tl=-0.3,ar=0.2,tr=0.4);Linear",
               sizes="3,5,4,2", optimizers="GradientDescent")
    state = initial_state(sc)
    shapes = {k: v.shape for k, v in state.items()}
    assert shapes == {"W1": (5, 3), "b1": (5,), "gamma2": (5,), "beta2": (5,),
                      "W3": (4, 5), "b3": (4,), "srelu3": (4,), "W4": (2, 4), "b4": (2,)}
    assert np.array_equal(state["gamma2"], np.ones(5)) and np.array_equal(state["beta2"], np.zeros(5))
    assert np.array_equal(state["b1"], np.zeros(5))
    assert np.allclose(state["srelu3"], [0.05, -0.3, 0.2, 0.4], rtol=1e-7)
    for a in state.values():
        assert np.array_equal(a.astype(np.float32).astype(np.float64), a)


def test_initial_state_seeded():
    sc = build(sizes="6,5,4", seed=3)
    a, b, c = initial_state(sc), initial_state(sc), initial_state(sc.with_(seed=4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], c["W1"])


@pytest.mark.parametrize("init, std", [
    ("XavierNormal", (2.0 / (200 + 300)) ** 0.5),
    ("HeNormal", (2.0 / 200) ** 0.5),
    ("LeCunNormal", (1.0 / 200) ** 0.5),
])
def test_normal_initializer_std(init, std):
    sc = build(layers="Linear", sizes="200,300", init_weights=init)
    W = initial_state(sc)["W1"]
    assert W.shape == (300, 200)
    assert W.std() == pytest.approx(std, rel=0.05)
    assert abs(W.mean()) < 0.05 * std


@pytest.mark.parametrize("init, bound", [("XavierUniform", (6.0 / 500) ** 0.5), ("HeUniform", (6.0 / 200) ** 0.5)])
def test_uniform_initializer_bounds(init, bound):
    W = initial_state(build(layers="Linear", sizes="200,300", init_weights=init))["W1"]
    assert np.abs(W).max() <= bound * (1 + 1e-6)
    assert np.abs(W).max() > 0.95 * bound
    assert W.std() == pytest.approx(bound / 3 ** 0.5, rel=0.05)


def test_zero_initializer():
    W = initial_state(build(layers="Linear", sizes="20,30", init_weights="Zero"))["W1"]
    assert W.shape == (30, 20) and not W.any()
