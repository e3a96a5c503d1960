"""Bad input through the command line: exit code 2 and one clear line on stderr, no traceback.

Every case here is rejected before a backend is built: ``_run_one`` (the only way to a run) is
replaced by a tripwire, and no framework may be imported.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from harness.cli import console
from harness.cli.main import main

FRAMEWORKS = ("torch", "jax", "tensorflow", "nerva_torch", "nerva_jax", "nerva_tensorflow")
ADHOC = ["run", "--backends", "numpy,torch", "--quiet"]


class RunStarted(BaseException):
    """Raised by the tripwire when the command line got as far as starting a run (a BaseException:
    the command line reports any Exception as a harness bug)."""


@pytest.fixture(autouse=True)
def no_backend_runs(monkeypatch):
    """Fail loudly if a run is started, and check that no framework got imported."""
    before = {m for m in FRAMEWORKS if m in sys.modules}
    calls = []

    def tripwire(scenario, backends, *args, **kw):
        calls.append((scenario, backends))
        raise RunStarted(scenario.name)

    monkeypatch.setattr(console, "run_one", tripwire)
    yield calls
    assert {m for m in FRAMEWORKS if m in sys.modules} == before


def one_error_line(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    err = captured.err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    line = err.rstrip("\n")
    assert line.startswith("nerva-consistency: error: "), line
    assert len(line) > len("nerva-consistency: error: ") + 5
    assert "Traceback" not in err and "Traceback" not in captured.out
    return line


def test_unknown_layer(capsys):
    line = one_error_line(capsys, ADHOC + ["--layers", "Foo;Linear", "--sizes", "3,4,2"])
    assert "'Foo'" in line and "ReLU" in line


def test_sizes_that_do_not_fit(capsys):
    line = one_error_line(capsys, ADHOC + ["--layers", "ReLU;BatchNormalization;Linear", "--sizes", "3,4,4,2"])
    assert "3,4,4,2" in line and "give 3 sizes" in line


def test_non_numeric_sizes(capsys):
    line = one_error_line(capsys, ADHOC + ["--layers", "ReLU;Linear", "--sizes", "3,four,2"])
    assert "sizes" in line


def test_unknown_backend(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--backends", "numpy,caffe"])
    assert "'caffe'" in line and "numpy" in line and "torch" in line


def test_backend_listed_twice(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--backends", "numpy,torch,numpy"])
    assert "twice" in line


def test_only_one_backend(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--backends", "numpy"])
    assert "at least two" in line and "numpy" in line


def test_missing_dataset_file_ad_hoc(capsys, tmp_path):
    missing = str(tmp_path / "nope.npz")
    line = one_error_line(capsys, ADHOC + ["--layers", "ReLU;Linear", "--sizes", "3,4,2", "--dataset", missing])
    assert missing in line and "does not exist" in line


def test_missing_dataset_file_with_named_scenario(capsys, tmp_path, monkeypatch):
    # A named scenario's dataset is only read by the runner: let the real runner start (it reads
    # the data before it loads any backend), but make loading a backend an error.
    import adapters

    def no_load(name):
        raise AssertionError(f"backend {name} loaded")

    def run_one(scenario, backends, args, out, err):
        from harness.run.runner import run

        return run(scenario, backends)

    monkeypatch.setattr(adapters, "load", no_load)
    monkeypatch.setattr(console, "run_one", run_one)
    missing = str(tmp_path / "nope.npz")
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--dataset", missing,
                                   "--backends", "numpy,torch", "--quiet"])
    assert missing in line and "does not exist" in line


def test_unknown_scenario(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "nope", "--backends", "numpy,torch"])
    assert "'nope'" in line


def test_unknown_optimizer(capsys):
    line = one_error_line(capsys, ADHOC + ["--layers", "ReLU;Linear", "--sizes", "3,4,2", "--optimizers", "Adam(0.9)"])
    assert "'Adam'" in line and "Momentum" in line


def test_unknown_optimizer_overriding_a_named_scenario(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--optimizers", "Adam", "--backends", "numpy,torch"])
    assert "'Adam'" in line


def test_unknown_loss(capsys):
    line = one_error_line(capsys, ADHOC + ["--layers", "ReLU;Linear", "--sizes", "3,4,2", "--loss", "Hinge"])
    assert "'Hinge'" in line


def test_learning_rate_schedule(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--learning-rate", "Exponential(0.1)",
                                   "--backends", "numpy,torch"])
    assert "Exponential(0.1)" in line


def test_ad_hoc_without_sizes(capsys):
    line = one_error_line(capsys, ADHOC + ["--layers", "ReLU;Linear"])
    assert "--sizes" in line


def test_non_numeric_steps(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--steps", "ten"])
    assert "--steps" in line and "'ten'" in line


def test_bad_choice(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--dtype", "float16"])
    assert "float16" in line


def test_unknown_flag(capsys):
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--colour"])
    assert "--colour" in line


def test_no_subcommand(capsys):
    line = one_error_line(capsys, [])
    assert "command" in line


def test_unknown_subcommand(capsys):
    line = one_error_line(capsys, ["frobnicate"])
    assert "frobnicate" in line


def test_unavailable_backend(capsys, monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kw):
        if name.split(".")[0] in ("jax", "nerva_jax"):
            return None
        return real(name, *args, **kw)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    line = one_error_line(capsys, ["run", "--scenario", "relu-softmax", "--backends", "numpy,jax"])
    assert "jax" in line and "not installed" in line


def test_valid_named_scenario_reaches_the_run(capsys, no_backend_runs):
    # the control case: the same command line with good input gets past validation
    with pytest.raises(RunStarted):
        main(["run", "--scenario", "relu-softmax", "--steps", "3", "--backends", "numpy,torch", "--quiet"])
    (scenario, backends), = no_backend_runs
    assert scenario.name == "relu-softmax" and scenario.steps == 3 and backends == ["numpy", "torch"]


def test_valid_ad_hoc_model_reaches_the_run(capsys, no_backend_runs):
    with pytest.raises(RunStarted):
        main(ADHOC + ["--layers", "ReLU;Linear", "--sizes", "3,4,2"])
    (scenario, _), = no_backend_runs
    assert scenario.lr == 0.01 and scenario.sizes == (3, 4, 2)


def test_list(capsys):
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert "upstream" in captured.out
    assert captured.err == ""


def test_list_shows_every_catalog_name_on_a_wide_console(capsys, monkeypatch):
    import scenarios

    monkeypatch.setenv("COLUMNS", "400")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in scenarios.catalog():
        assert f" {name} " in out


EXPLORE = ["explore", "--backends", "numpy,torch", "--quiet"]


@pytest.fixture
def no_search(monkeypatch):
    """A tripwire for explore's search, like the one for runs."""
    import harness.search.explore

    def tripwire(*args, **kw):
        raise RunStarted("explore")

    monkeypatch.setattr(harness.search.explore, "explore", tripwire)


def test_explore_without_examples(capsys, no_search):
    line = one_error_line(capsys, EXPLORE + ["--examples", "0"])
    assert "--examples must be at least 1, not 0" in line


def test_explore_negative_seed(capsys, no_search):
    line = one_error_line(capsys, EXPLORE + ["--seed", "-3"])
    assert "--seed must be 0 or more, not -3" in line


def test_explore_database_that_is_a_file(capsys, no_search, tmp_path):
    db = tmp_path / "db"
    db.write_text("")
    line = one_error_line(capsys, EXPLORE + ["--database", str(db)])
    assert str(db) in line and "directory" in line


def test_explore_non_numeric_examples(capsys, no_search):
    line = one_error_line(capsys, EXPLORE + ["--examples", "many"])
    assert "'many'" in line


def test_valid_explore_reaches_the_search(capsys, no_search):
    with pytest.raises(RunStarted):
        main(EXPLORE + ["--examples", "3", "--seed", "7"])


def test_the_flag_table_makes_the_run_parser_and_the_catalog_keys():
    import scenarios
    from harness.cli.parser import parser
    from harness.spec.flags import AD_HOC_DEFAULTS, FLAGS, NAMES

    run = parser()._subparsers._group_actions[0].choices["run"]
    options = {spelling: a for a in run._actions for spelling in a.option_strings}
    for flag in FLAGS:
        action = options[f"--{flag.name}"]
        assert (action.dest, action.type, action.choices, action.default) == (flag.attr, flag.type, flag.choices, None)
    assert set(NAMES) <= scenarios.KEYS
    assert AD_HOC_DEFAULTS == {"optimizers": "GradientDescent", "loss": "SquaredError", "learning-rate": "0.01",
                               "batch-size": 16, "steps": 10, "dataset": "synthetic"}
