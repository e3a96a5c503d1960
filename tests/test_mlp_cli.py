"""tools/mlp.py's command line, verbatim: its flags, separators, epochs and schedulers.

No framework is imported here (the schedulers are compared with nerva-numpy's, which needs only
NumPy); the runs themselves are in tests/test_native.py.
"""

from __future__ import annotations

import importlib.util
import math
import shlex
from fractions import Fraction
from pathlib import Path

import pytest

from harness.cli import checks, console
from harness.cli.main import main
from harness.cli.parser import parser
from harness.spec.schedule import parse_schedule

ROOT = Path(__file__).resolve().parent.parent
MNIST_CLI = """--layers="ReLU;ReLU;Linear" --layer-sizes="{D};1024;512;10"
    --layer-weights="XavierNormal;XavierNormal;XavierNormal"
    --optimizers="Momentum(0.9);Momentum(0.9);Momentum(0.9)" --batch-size=100 --epochs=5
    --loss=SoftmaxCrossEntropy --learning-rate="Constant(0.01)" --load-dataset={dataset}"""
"""examples/train_mnist_cli.sh's flags (the same as train_cifar10_cli.sh's but the first size)."""


def make_npz_module():
    spec = importlib.util.spec_from_file_location("make_npz", ROOT / "scripts" / "make_npz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    make_npz_module().make_npz(str(path), "digits")
    return path


def scenario_of(argv: list[str]):
    return checks.scenario_from_flags(parser().parse_args(["run", *argv]))


def test_make_npz_writes_the_libraries_format(digits):
    import numpy as np

    with np.load(digits) as data:
        assert sorted(data.files) == ["Ttest", "Ttrain", "Xtest", "Xtrain"]
        assert data["Xtrain"].dtype == np.float32 and data["Xtrain"].shape == (1438, 64)
        assert data["Ttrain"].dtype.kind == "i" and set(data["Ttrain"]) == set(range(10))
        assert len(data["Xtest"]) == 359 and 0 <= data["Xtrain"].min() and data["Xtrain"].max() <= 1


def test_the_mnist_command_line_is_read_as_mlp_py_reads_it(digits):
    sc = scenario_of(shlex.split(MNIST_CLI.format(D=64, dataset=digits)))
    assert sc.sizes == (64, 1024, 512, 10)
    assert [layer.kind for layer in sc.layers] == ["ReLU", "ReLU", "Linear"]
    assert [layer.init for layer in sc.layers] == ["XavierNormal"] * 3
    assert {layer.optimizer_text for layer in sc.layers} == {"Momentum(mu=0.9)"}
    assert (sc.loss, sc.lr, sc.schedule, sc.batch_size) == ("SoftmaxCrossEntropy", 0.01, None, 100)
    assert sc.steps == 5 * math.ceil(1438 / 100)  # --epochs 5: five passes through the loader, the last batch short
    assert sc.build == "nerva"  # an ad-hoc run the libraries can express is built by them


def test_steps_caps_the_epochs(digits):
    sc = scenario_of(shlex.split(MNIST_CLI.format(D=64, dataset=digits)) + ["--steps", "3"])
    assert sc.steps == 3
    assert scenario_of(shlex.split(MNIST_CLI.format(D=64, dataset=digits)) + ["--steps", "1000"]).steps == 75


def test_the_short_forms_stay_aliases_of_the_same_scenario(digits):
    long = scenario_of(["--layers", "ReLU;Linear", "--layer-sizes", "64;16;10", "--layer-weights", "HeNormal;Zero",
                        "--load-dataset", str(digits)])
    short = scenario_of(["--layers", "ReLU;Linear", "--sizes", "64,16,10", "--init-weights", "HeNormal,Zero",
                         "--dataset", str(digits)])
    assert long == short and long.sizes == (64, 16, 10) and [la.init for la in long.layers] == ["HeNormal", "Zero"]


def test_parametrised_initializers_are_read_for_the_libraries_build(digits):
    sc = scenario_of(["--layers", "ReLU;Linear", "--layer-sizes", "64;16;10", "--load-dataset", str(digits),
                      "--layer-weights", "Uniform(a=-0.1,b=0.1);Normal(a=0, b=0.5)"])
    assert [la.init for la in sc.layers] == ["Uniform(a=-0.1,b=0.1)", "Normal(a=0,b=0.5)"] and sc.build == "nerva"


@pytest.mark.parametrize("argv, words", [
    (["--layer-weights", "Uniform(a=-0.1,b=0.1)", "--build", "harness"], ["drawn by the libraries", "--build nerva"]),
    (["--build", "nerva", "--dataset", "synthetic", "--targets", "soft"], ["--build nerva", "class labels, not soft"]),
    (["--dataset", "synthetic", "--epochs", "2"], ["--epochs counts passes over a dataset"]),
    (["--build", "nerva", "--loss", "AbsoluteError"], ["loss AbsoluteError is an extension"]),
    (["--build", "nerva", "--dtype", "float64"], ["float32"]),
    (["--learning-rate", "MultiStepLR(0.1;3,1;0.5)"], ["milestones must increase"]),
    (["--learning-rate", "StepBased(0.1,0.5,0)"], ["change_rate", "above 0"]),
    (["--learning-rate", "TimeBased(0.1)"], ["TimeBased takes 2 part(s)", "lr,decay"]),
    (["--epochs", "0"], ["--epochs", "at least 1"]),
    (["--layer-weights", "Uniform(a=-0.1,c=1)"], ["no parameter 'c'"]),
])
def test_bad_mlp_flags_are_one_line_exit_2(capsys, monkeypatch, digits, argv, words):
    monkeypatch.setattr(console, "run_one", lambda *a, **k: pytest.fail("a run started"))
    base = ["run", "--backends", "numpy,torch", "--quiet", "--layers", "ReLU;Linear", "--layer-sizes", "64;16;10",
            "--load-dataset", str(digits)]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nerva-consistency: error: ") and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


LIBRARY_FORMS = ["Constant(0.01)", "TimeBased(0.1,0.25)", "StepBased(0.1,0.5,3)", "StepBased(0.2,0.5,1)",
                 "MultiStepLR(0.1;1,3,5;0.1)", "Exponential(0.1,0.3)"]


@pytest.mark.parametrize("text", LIBRARY_FORMS)
def test_schedules_give_the_libraries_rates_bit_for_bit(text):
    """The rate of every epoch as nerva-numpy's parse_learning_rate gives it in its training loop
    (called once for epoch 0 before the loop, then once per epoch), and the same text back."""
    from nerva_numpy.learning_rate import parse_learning_rate

    theirs = parse_learning_rate(text)
    theirs(0)
    expected = [theirs(epoch) for epoch in range(12)]
    mine = parse_schedule(text)
    assert mine.rates(12) == expected
    assert [mine.eta(e) for e in range(12)] == expected
    assert parse_schedule(str(mine)) == mine


def test_schedules_follow_their_formulas():
    """Against the formulas of harness.spec.schedule, evaluated in exact rationals (exp: to 1e-15)."""
    d = Fraction(1, 4)
    time_based = parse_schedule("TimeBased(0.1,0.25)").rates(8)
    for e, rate in enumerate(time_based):
        exact = Fraction(0.1) / math.prod(1 + d * k for k in range(1, e + 1))
        assert abs(Fraction(rate) - exact) <= exact * (e + 1) * Fraction(2) ** -52
    assert parse_schedule("StepBased(0.2,0.5,1)").rates(3) == [0.1, 0.05, 0.025]  # drops at epoch 0 already
    assert parse_schedule("MultiStepLR(0.1;1,3;0.5)").rates(5) == [0.1, 0.05, 0.05, 0.025, 0.025]
    assert all(math.isclose(r, 0.1 * math.exp(-0.3 * e), rel_tol=1e-15)
               for e, r in enumerate(parse_schedule("Exponential(0.1,0.3)").rates(6)))


def test_a_schedule_round_trips_through_the_run_flags(digits):
    sc = scenario_of(["--layers", "ReLU;Linear", "--layer-sizes", "64;16;10", "--load-dataset", str(digits),
                      "--learning-rate", "MultiStepLR(0.1;1,3;0.5)", "--batch-size", "500"])
    assert sc.lr == 0.1 and [sc.eta(e) for e in range(4)] == [0.1, 0.05, 0.05, 0.025]
    from harness.spec.flags import flags

    assert flags(sc)["learning-rate"] == "MultiStepLR(0.1;1,3;0.5)"
    again = scenario_of(sum(([f"--{k}", v] for k, v in flags(sc).items()), []))
    assert again == sc.with_(name="ad-hoc")


def _weights(path, shapes, **changes):
    import numpy as np

    rng = np.random.default_rng(5)
    arrays = {k: rng.standard_normal(v) for k, v in shapes.items()}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


SMALL = {"W1": (16, 64), "b1": (16,), "W2": (10, 16), "b2": (10,)}


@pytest.mark.parametrize("changes, words", [
    ({"W2": __import__("numpy").zeros((10, 17))}, ["W2 has shape (10, 17)", "needs (10, 16)"]),
    ({"b1": None}, ["no array b1"]),
    ({"W3": __import__("numpy").zeros((2, 2))}, ["holds W3"]),
    ({"b2": __import__("numpy").full(10, float("nan"))}, ["b2[0] is nan"]),
], ids=["shape", "missing", "extra", "nan"])
def test_a_bad_weights_file_is_one_line_exit_2(capsys, monkeypatch, digits, tmp_path, changes, words):
    monkeypatch.setattr(console, "run_one", lambda *a, **k: pytest.fail("a run started"))
    path = _weights(tmp_path / "w.npz", SMALL, **changes)
    assert main(["run", "--backends", "numpy,torch", "--quiet", "--layers", "ReLU;Linear", "--layer-sizes",
                 "64;16;10", "--load-dataset", str(digits), "--load-weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights file" in err and all(w in err for w in words), err


def test_load_weights_sets_the_initial_parameters_in_both_builds(digits, tmp_path):
    import numpy as np

    from harness.spec.data import weights

    path = _weights(tmp_path / "w.npz", SMALL)
    for build in ("harness", "nerva"):
        sc = scenario_of(["--layers", "ReLU;Linear", "--layer-sizes", "64;16;10", "--load-dataset", str(digits),
                          "--load-weights", str(path), "--build", build])
        got = weights(sc)
        with np.load(path) as saved:
            assert all(np.array_equal(got[k], saved[k].astype(np.float32)) for k in SMALL)
        assert sc.weights == str(path) and sc.build == build


def test_a_library_built_synthetic_run_is_bounded_by_the_rows_it_writes(capsys, monkeypatch):
    monkeypatch.setattr(console, "run_one", lambda *a, **k: pytest.fail("a run started"))
    assert main(["run", "--backends", "numpy,torch", "--quiet", "--layers", "ReLU;Linear", "--sizes", "4,8,3",
                 "--build", "nerva", "--steps", "100000", "--batch-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "100000 x 16 rows is more than 1048576" in err and err.count("\n") == 1
