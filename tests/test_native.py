"""Runs built as the libraries build them (``--build nerva``, adapters/nerva_native.py).

The libraries' own examples/train_mnist_cli.sh command line runs through ``nerva-consistency
run`` on scikit-learn's digits in the libraries' .npz format, and a bug planted in one library's
loader, weights loading or scheduler is caught and blamed on it alone (the corpus,
tests/mutants/native.py, has one of each, the initializer parser's too).
"""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from harness.cli.main import main
from harness.run.runner import run
from test_mlp_cli import MNIST_CLI, digits, scenario_of  # noqa: F401  (digits: the fixture)

THREE = ["numpy", "torch", "jax"]  # a majority that can outvote one planted bug


def test_the_mnist_example_runs_for_a_few_steps_and_passes(digits, tmp_path, installed):  # noqa: F811
    report = tmp_path / "report.json"
    argv = ["run", *shlex.split(MNIST_CLI.format(D=64, dataset=digits)), "--steps", "3", "--quiet",
            "--json", str(report), "--bundle-dir", str(tmp_path)]
    assert main(argv) == 0
    out = json.loads(report.read_text())
    assert out["spec"]["build"] == "nerva" and out["spec"]["steps"] == "3" and out["passed"] is True
    assert sorted(out["backends"]) == sorted(installed)


def small(digits, *extra: str):  # noqa: F811
    return scenario_of(["--layers", "ReLU;Linear", "--layer-sizes", "64;16;10", "--load-dataset", str(digits),
                        "--batch-size", "500", "--optimizers", "Momentum(0.9)", *extra])


def test_every_backend_holds_the_initializing_librarys_parameters(digits, installed):  # noqa: F811
    from adapters import nerva_native

    sc = small(digits, "--steps", "1", "--init-from", "torch")
    state = nerva_native.initial_state(sc)
    assert sorted(state) == ["W1", "W2", "b1", "b2"] and np.all(state["b1"] == 0)
    assert state["W1"].std() == pytest.approx((2 / (64 + 16)) ** 0.5, rel=0.2)  # XavierNormal, torch's draw
    again = nerva_native.initial_state(sc)
    assert all(np.array_equal(state[k], again[k]) for k in state)  # the seed fixes the draw
    other = nerva_native.initial_state(sc.with_(init_from="numpy"))
    assert not np.array_equal(state["W1"], other["W1"])
    result = run(sc, THREE, oracle="none")
    assert result.passed and not result.failures
    assert all(np.array_equal(result.inputs[0][k], state[k]) for k in state)


def test_epochs_and_a_schedule_run_through_the_loaders(digits):  # noqa: F811
    sc = small(digits, "--epochs", "3", "--learning-rate", "TimeBased(0.05,0.5)")
    assert sc.steps == 9  # 1438 rows in batches of 500: 3 per epoch
    result = run(sc, ["numpy", "torch"], oracle="none")
    assert result.passed and result.steps_run == 9, result.failures


def _blame(result) -> tuple[set[str], str]:
    """Who the run blames and for what: the backends that raised, else the first divergence's."""
    if result.failures:
        return set(result.failures), next(iter(result.failures.values())).message
    step, tensor = result.first_divergence
    return set(tensor.blamed), f"step {step} {tensor.key}"


def _shifted_rows(original):
    def __iter__(self):
        for X, T in original(self):
            yield X.roll(1, 0), T  # the targets stay: rows and targets no longer belong together
    return __iter__


def test_a_loader_that_yields_other_rows_is_blamed_alone(digits, monkeypatch):  # noqa: F811
    import nerva_torch.datasets as datasets

    monkeypatch.setattr(datasets.DataLoader, "__iter__", _shifted_rows(datasets.DataLoader.__iter__))
    result = run(small(digits, "--steps", "2"), THREE, oracle="none")
    blamed, what = _blame(result)
    assert blamed == {"torch"} and what == "step 0 ('X', None)", what


def test_loaded_weights_that_differ_from_the_file_are_blamed_alone(digits, monkeypatch):  # noqa: F811
    import nerva_jax.multilayer_perceptron as mlp

    original = mlp.MultilayerPerceptron.load_weights_and_bias

    def load_and_nudge(self, filename):
        original(self, filename)
        self.layers[1].b = self.layers[1].b.at[3].add(1e-3)

    monkeypatch.setattr(mlp.MultilayerPerceptron, "load_weights_and_bias", load_and_nudge)
    result = run(small(digits, "--steps", "1"), THREE, oracle="none")
    blamed, what = _blame(result)
    assert blamed == {"jax"} and "b2 differs from the weights file" in what and "(3,)" in what, what


def test_a_scheduler_off_by_one_epoch_is_blamed_alone(digits, monkeypatch):  # noqa: F811
    import nerva_torch.learning_rate as learning_rate

    original = learning_rate.ExponentialScheduler.__call__
    monkeypatch.setattr(learning_rate.ExponentialScheduler, "__call__", lambda self, epoch: original(self, epoch + 1))
    result = run(small(digits, "--steps", "2", "--learning-rate", "Exponential(0.05,0.1)"), THREE, oracle="none")
    blamed, what = _blame(result)
    assert blamed == {"torch"} and "scheduler gave" in what and result.failures["torch"].step == 0, what


def test_a_run_starts_from_a_users_weights_file_in_both_builds(digits, tmp_path):  # noqa: F811
    """The file torch's own save_weights_and_bias wrote, loaded by every backend."""
    from adapters import nerva_native

    sc = small(digits, "--steps", "2", "--init-from", "torch")
    drawn = nerva_native.initial_state(sc)
    model = nerva_native._parse(__import__("adapters").load("torch"), sc)
    model.save_weights_and_bias(str(tmp_path / "torch.npz"))
    for build in ("nerva", "harness"):
        from_file = small(digits, "--steps", "2", "--load-weights", str(tmp_path / "torch.npz"), "--build", build)
        result = run(from_file, ["numpy", "jax"], oracle="none")
        assert result.passed, (build, result.failures)
        assert all(np.array_equal(result.inputs[0][k], drawn[k]) for k in drawn), build


def test_finding_uniform_and_normal_initializers_raise_in_three_libraries(digits, installed):  # noqa: F811
    """docs/findings.md, "Built by the libraries": set_layer_weights of nerva-numpy, -torch and -jax
    1.0.0 tests ``Uniform``/``Normal`` with ``if`` and then the other names with a new ``if``/``elif``
    chain, whose ``else`` raises for them; nerva-tensorflow's one chain accepts them."""
    sc = small(digits, "--steps", "1", "--layer-weights", "Uniform(a=-0.1,b=0.1);Normal(a=0,b=0.1)",
               "--init-from", "tensorflow")
    result = run(sc, installed, oracle="none")
    assert set(result.failures) == {"numpy", "torch", "jax"}
    assert all(f.step is None and 'Could not parse weight initializer "Uniform(a=-0.1,b=0.1)"' in f.message
               for f in result.failures.values())


def test_the_harness_build_steps_each_epoch_at_its_scheduled_rate(digits, monkeypatch):  # noqa: F811
    """--build harness: the runner hands every backend (and the oracle) the rate of the step's
    epoch; 1438 rows in batches of 500 are 3 steps an epoch."""
    from adapters.nerva_driver import NervaAdapter

    rates, original = [], NervaAdapter.step

    def step(self, X, T, lr):
        rates.append((self.name, lr))
        return original(self, X, T, lr)

    monkeypatch.setattr(NervaAdapter, "step", step)
    sc = small(digits, "--steps", "7", "--build", "harness", "--learning-rate", "MultiStepLR(0.1;1,2;0.5)")
    result = run(sc, ["numpy", "torch"], oracle="none")
    assert result.passed
    assert [lr for name, lr in rates if name == "numpy"] == [0.1] * 3 + [0.05] * 3 + [0.025]


def test_an_init_from_library_that_cannot_parse_the_spec_is_one_line_exit_2(digits, capsys):  # noqa: F811
    argv = ["run", "--layers", "ReLU;Linear", "--layer-sizes", "64;16;10", "--load-dataset", str(digits), "--quiet",
            "--layer-weights", "Uniform(a=-0.1,b=0.1);Zero", "--steps", "1", "--backends", "numpy,torch"]
    assert main(argv) == 2  # the default --init-from numpy has finding #30
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init-from numpy" in err and "Could not parse weight initializer" in err
    assert "choose another of torch, jax, tensorflow" in err


EXPRESSIBLE = ["relu-softmax", "leaky-logsoftmax", "batchnorm-softmax-xent", "srelu-nll", "square-logits"]


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_the_catalog_scenarios_the_libraries_can_express_pass_built_by_them(name):
    """README "Built as the libraries build it": the others are refused with their reason (test_mlp_cli)."""
    import scenarios
    from harness.spec.data import native_problem

    sc = scenarios.get(name, dtype="float32", mode="trajectory", steps=3, build="nerva")
    assert native_problem(sc) is None
    result = run(sc, ["numpy", "torch"], oracle="none")
    assert result.passed and result.steps_run == 3, (result.failures, result.first_divergence)


def test_the_other_catalog_scenarios_are_refused_with_their_reason():
    import scenarios
    from harness.spec.data import native_problem

    reasons = {name: native_problem(scenarios.get(name, dtype="float32", mode="trajectory", build="nerva"))
               for name in scenarios.catalog() if name not in EXPRESSIBLE}
    assert {name: reason.split(" is ")[0].split(",")[0] for name, reason in reasons.items()} == {
        "upstream": "layer ELU", "elu-absolute": "layer ELU", "kink-ties": "loss AbsoluteError",
        "sigmoid-logistic": "initializer LeCunUniform", "nll-soft": "the libraries' loaders read class labels"}
