"""Plug-in backends: the contract (harness.run.contract), opt-in, provenance, and the two worked
examples of examples/plugins/ run through the real entry-point mechanism (tests/plugins.py: a
``.dist-info`` on the PYTHONPATH of a subprocess).

What is asserted is the verdict each run must reach: the examples pass against the exact oracle
and beside the four libraries; a faulty variant is blamed alone, at the tensor its fault is in;
one that does not provide the minimum is refused with exit 2 before any step; one that breaks
the contract in a step is a finding about it (exit 1), never a harness error (exit 3).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import scenarios
from harness.core.backend import lacks_components, minimum
from harness.core.errors import SpecError
from harness.core.keys import Key
from harness.run import contract
from harness.run.conventions import not_implemented
from harness.spec.state import initial_state
from plugins import cli, site

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def where(tmp_path_factory):
    return site(tmp_path_factory.mktemp("plugins"))


def report(where, name):
    return json.loads((where / name).read_text())


def judged(doc, backend):
    """The tensors judged for ``backend`` in a report, and its worst ratio over them."""
    ratios = {t: row[backend] for step in doc["per_step"] for t, row in step["ratio"].items() if backend in row}
    return set(ratios), max(ratios.values())


RUN = ("run", "--scenario", "relu-softmax", "--quiet")
LOCKSTEP = (*RUN, "--mode", "lockstep", "--oracle", "sympy", "--steps", "3")


# -- the two examples pass -------------------------------------------------------------------

def test_the_numpy_plugin_passes_lockstep_against_sympy_with_every_tensor_judged(where):
    done = cli(where, *LOCKSTEP, "--backends", "numpy,mymlp", "--json", "numpy.json")
    assert done.returncode == 0, done.stderr
    doc = report(where, "numpy.json")
    tensors, worst = judged(doc, "mymlp")
    everything = {Key(*k).name for k in contract.tensor_order(scenarios.get("relu-softmax"))}
    assert tensors == everything and worst <= 1
    assert doc["not_judged"] == {} and doc["oracle"] == "sympy"
    version = doc["versions"]["plugin mymlp"]
    assert version.startswith("nerva-consistency-numpy-mlp 0.1.0 (numpy_mlp.py sha256 ")


def test_the_torch_plugin_passes_lockstep_and_every_output_names_what_it_does_not_provide(where):
    from harness.reports.pages import run_page

    done = cli(where, *LOCKSTEP, "--backends", "numpy,mytorch", "--json", "torch.json")
    assert done.returncode == 0, done.stderr
    assert "not judged for mytorch: DZ3, DZ2, DZ1" in done.stdout
    doc = report(where, "torch.json")
    assert doc["not_judged"] == {"mytorch": ["DZ3", "DZ2", "DZ1"]}
    tensors, worst = judged(doc, "mytorch")
    assert {"DW1", "Db1", "DX1", "W3", "Y", "loss"} <= tensors and not tensors & {"DZ1", "DZ2", "DZ3"} and worst <= 1
    assert "DZ1" in judged(doc, "numpy")[0]  # judged for the backends that provide it
    html = run_page(doc, None)
    assert "not judged for mytorch" in html and "DZ3, DZ2, DZ1" in html


def test_both_plugins_pass_in_trajectory_mode_beside_the_four_libraries(where):
    done = cli(where, *RUN, "--backends", "all", "--json", "all.json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = report(where, "all.json")
    assert set(doc["backends"]) == {"numpy", "torch", "jax", "tensorflow", "mymlp", "mytorch"}
    assert doc["steps_run"] == 10 and doc["mode"] == "trajectory" and doc["failures"] == {}


# -- a wrong variant is blamed alone ------------------------------------------------------------

def test_a_wrong_db_in_the_numpy_plugin_is_blamed_on_it_alone(where):
    done = cli(where, *RUN, "--backends", "numpy,torch,mymlp", "--json", "db.json", "--bundle-dir", "bundles",
               NUMPY_MLP_FAULT="db")
    assert done.returncode == 1, done.stderr
    fd = report(where, "db.json")["first_divergence"]
    assert (fd["step"], fd["tensor"], fd["layer"], fd["backends"]) == (0, "Db", 3, ["mymlp"])
    assert fd["ratio"]["mymlp"] > 1 >= max(fd["ratio"]["numpy"], fd["ratio"]["torch"])


def test_a_wrong_relu_in_the_torch_plugin_is_blamed_on_it_alone(where):
    done = cli(where, *LOCKSTEP, "--backends", "numpy,mytorch", "--json", "relu.json", "--bundle-dir", "bundles",
               TORCH_AUTOGRAD_FAULT="relu")
    assert done.returncode == 1, done.stderr
    fd = report(where, "relu.json")["first_divergence"]
    assert (fd["step"], fd["tensor"], fd["layer"], fd["backends"]) == (0, "X", 2, ["mytorch"])  # ReLU(Z1)'s output


# -- refused before any step: the minimum ---------------------------------------------------------

@pytest.mark.parametrize("fault,missing", [("NUMPY_MLP_FAULT=omit-db", "Db3, Db2, Db1"),
                                           ("TORCH_AUTOGRAD_FAULT=omit-dx", "DX3, DX2, DX1")])
def test_a_variant_without_a_tensor_of_the_minimum_is_refused_with_exit_2(where, fault, missing):
    variable, value = fault.split("=")
    backend = "mymlp" if variable.startswith("NUMPY") else "mytorch"
    done = cli(where, *RUN, "--backends", f"numpy,{backend}", "--json", "refused.json", **{variable: value})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"backend '{backend}' does not provide {missing}:" in done.stderr and "docs/plugins.md" in done.stderr
    assert not (where / "refused.json").exists()  # no step ran


# -- a broken contract in a step is the backend's finding -------------------------------------------

@pytest.mark.parametrize("fault,says", [
    ("raise", "step 0: FloatingPointError: a fault injected by NUMPY_MLP_FAULT=raise (numpy_mlp.py:"),
    ("drop", "step 0: broken contract: its trace lacks DW1, which it provides"),
    ("float32", "step 0: broken contract: Y is float32, not float64 (return float64 copies;"),  # in a float64 run
    ("shape", "step 0: broken contract: DW1 has shape (64, 32), the scenario's is (32, 64)"),
])
def test_a_plugin_that_breaks_the_contract_in_a_step_is_blamed_with_exit_1(where, fault, says):
    dtype = ("--dtype", "float64") if fault == "float32" else ()  # float32 is the run's dtype in a float32 run
    done = cli(where, *RUN, *dtype, "--backends", "numpy,mymlp", "--steps", "1", "--json", f"{fault}.json",
               "--bundle-dir", "bundles", "--debug", NUMPY_MLP_FAULT=fault)
    assert done.returncode == 1, done.stderr
    doc = report(where, f"{fault}.json")
    assert list(doc["failures"]) == ["mymlp"] and doc["failures"]["mymlp"].startswith(says)
    assert "internal error" not in done.stderr
    assert ("Traceback" in done.stderr) == (fault == "raise")  # --debug shows where it raised


# -- opt-in, list, conventions ------------------------------------------------------------------------

def test_installed_plugins_change_nothing_without_backends_and_list_shows_them(where):
    done = cli(where, *RUN, "--steps", "1", "--json", "default.json")
    assert done.returncode == 0, done.stderr
    assert report(where, "default.json")["backends"] == ["numpy", "torch", "jax", "tensorflow"]
    listed = cli(where, "list")
    assert listed.returncode == 0
    assert "mymlp: nerva-consistency-numpy-mlp 0.1.0 (numpy_mlp.py sha256" in listed.stdout
    assert "mytorch: nerva-consistency-torch-autograd 0.1.0 (torch_autograd.py sha256" in listed.stdout


def test_conventions_run_a_plugin_with_the_optional_part_and_name_one_without(where):
    done = cli(where, "conventions", "--backends", "numpy,mymlp,mytorch", "--json", "conv.json")
    assert done.returncode == 0, done.stderr
    rows = {r["kink"]: r["backends"] for r in report(where, "conv.json")}
    assert rows["ReLU'(0)"]["mymlp"] == 0.0  # its own ReLU'(0), the one-sided limit from the left
    assert rows["ELU(0.1)'(0)"]["mymlp"] == "NotImplementedError: mymlp has no ELU activation"
    assert {r["mytorch"] for r in rows.values()} == {"not implemented by mytorch"}
    default = cli(where, "conventions", "--json", "conv-default.json")
    assert set(report(where, "conv-default.json")[0]["backends"]) == {"numpy", "torch", "jax", "tensorflow"}
    assert default.returncode == 0


# -- provenance: replay says when the plug-in changed ---------------------------------------------------

def test_replay_says_when_the_plugin_differs_from_the_recording(tmp_path):
    where = site(tmp_path / "site")
    done = cli(where, *RUN, "--backends", "numpy,mymlp", "--steps", "2", "--bundle-dir", "b", NUMPY_MLP_FAULT="db")
    assert done.returncode == 1, done.stderr
    bundle, = (where / "b").glob("*.npz")
    same = cli(where, "replay", str(bundle), NUMPY_MLP_FAULT="db")
    assert same.returncode == 0 and "plugin mymlp" not in same.stdout, same.stdout
    module = where / "numpy_mlp.py"
    module.write_text(module.read_text() + "\n# changed\n")
    changed = cli(where, "replay", str(bundle), NUMPY_MLP_FAULT="db")
    assert "versions differ: plugin mymlp nerva-consistency-numpy-mlp 0.1.0 (numpy_mlp.py sha256 " in changed.stdout


# -- the contract's pure parts ---------------------------------------------------------------------------

class Declares:
    def __init__(self, provides=None):
        if provides is not None:
            self.provides = frozenset(provides)


FULL = {"X", "T", "Y", "DY", "loss", "Z", "DZ", "DW", "Db", "DX", "W", "b"}


def test_the_minimum_is_every_step_tensor_and_each_layer_s_dx_parameters_and_gradients():
    sc = scenarios.get("batchnorm-softmax-xent")
    must = [Key(*k).name for k in contract.tensor_order(sc) if minimum(Key(*k))]
    assert [k for k in must if k[-1] not in "0123456789"] == ["X", "T", "Y", "loss", "DY"]
    assert {"Dgamma2", "Dbeta2", "gamma2", "beta2", "DX2", "DW5", "Db5", "W5", "b5"} <= set(must)
    assert not {"X1", "Z1", "DZ1"} & set(must)


def test_omitted_names_what_a_backend_leaves_out_and_refuses_the_minimum():
    sc = scenarios.get("relu-softmax")
    assert contract.omitted(sc, {"a": Declares(), "b": Declares(FULL)}, None) == {}
    assert contract.omitted(sc, {"a": Declares(), "b": Declares(FULL - {"DZ", "Z"})}, None) == \
        {"b": ["Z1", "Z2", "Z3", "DZ3", "DZ2", "DZ1"]}
    with pytest.raises(SpecError, match=r"backend 'b' does not provide W1, W2, W3:"):
        contract.omitted(sc, {"a": Declares(), "b": Declares(FULL - {"W"})}, None)
    no_dz = {"a": Declares(FULL - {"DZ"}), "b": Declares(FULL - {"DZ"})}
    with pytest.raises(SpecError, match=r"no backend of this run provides DZ3, DZ2, DZ1, which the rounding bound"):
        contract.omitted(sc, no_dz, None)
    assert contract.omitted(sc, no_dz, "sympy")["a"] == ["DZ3", "DZ2", "DZ1"]  # the oracle's trace has them


def test_trace_problem_names_the_first_thing_wrong():
    sc = scenarios.get("relu-softmax")
    state = initial_state(sc)
    X, T = np.zeros((4, 64)), np.zeros((4, 10))
    shapes = contract.shapes(sc, state, X, T)
    assert shapes["DW2"] == (16, 32) and shapes["Db2"] == (16,) and shapes["Z2"] == (4, 16) and shapes["DX1"] == (4, 64)
    good = {name: np.zeros(shape) for name, shape in shapes.items()}
    want = list(shapes)
    assert contract.trace_problem(good, want, shapes) is None
    assert contract.trace_problem([], want, shapes).startswith("step() returned a list, not a dict")
    assert contract.trace_problem({**good, "Y": good["Y"].tolist()}, want, shapes) == \
        "Y is a builtins.list, not a NumPy array (return float64 copies)"
    # each tensor in float64 or in the run's dtype (the built-in adapters keep what they computed)
    mixed = {**good, "Y": good["Y"].astype(np.float32), "DW2": good["DW2"].astype(np.float32)}
    assert sc.dtype == "float32" and contract.check(mixed, sc, want, state, X, T) is None
    assert contract.trace_problem(mixed, want, shapes) == \
        "Y is float32, not float64 (return float64 copies; say the dtype computed in `dtypes`)"
    assert contract.trace_problem({**good, "Y": good["Y"].astype(np.float16)}, want, shapes, "float32") == \
        "Y is float16, not float64 or the run's float32 (return float64 or float32 copies; say the dtype computed in `dtypes`)"
    state_v = {**state, **{f"{k}.v": v for k, v in state.items() if k in ("W1", "b1", "W2", "b2")}}
    assert contract.state_problem(state_v, sc, state) is None
    assert contract.state_problem(state, sc, state) == \
        "get_state() lacks W1.v, b1.v, W2.v, b2.v (parameters and the velocities of Momentum/Nesterov ones)"


def test_lacks_components_and_the_message_for_a_backend_without_them():
    assert lacks_components(Declares()) == ["activation", "loss_function", "array", "to_numpy", "precision"]
    assert not_implemented("mymlp") == "not implemented by mymlp"


@pytest.mark.parametrize("name", [n for n in scenarios.catalog() if n != "upstream"])
def test_a_nerva_library_s_trace_keeps_the_contract_in_every_catalog_scenario(name):
    import adapters
    from harness.spec.data import batches

    sc = scenarios.get(name)
    state = initial_state(sc)
    numpy = adapters.load("numpy")
    numpy.build(sc, state)
    X, T = next(iter(batches(sc)))
    assert contract.check(numpy.step(X, T, sc.lr), sc, contract.provided(sc, numpy), state, X, T) is None
    assert contract.state_problem(numpy.get_state(), sc, state) is None


def test_the_component_suite_runs_a_plugin_s_functions_and_names_what_it_does_not_implement(where):
    import subprocess
    import sys

    from plugins import ROOT, environment

    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-v",
                           str(ROOT / "tests" / "test_components.py"), "-k", "mymlp or mytorch"],
                          cwd=ROOT, env=environment(where, NERVA_CONSISTENCY_PLUGINS="mymlp,mytorch"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
    for case in ("mymlp-ReLU-derivative-float32", "mymlp-HyperbolicTangent-value-float64"):
        assert f"test_activation_value_and_derivative[{case}] PASSED" in done.stdout
    assert "not implemented by mytorch: no activation" in done.stdout
    assert "not implemented by mymlp: mymlp has no ELU activation" in done.stdout
    assert " failed" not in done.stdout.splitlines()[-1]


def test_a_plugin_whose_module_raises_on_import_is_blamed_not_a_harness_error(tmp_path):
    where = site(tmp_path / "site")
    info = where / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[nerva_consistency.adapters]\nbroken = broken_plugin:Broken\n")
    (where / "broken_plugin.py").write_text('raise RuntimeError("broken at import")\n')
    done = cli(where, *RUN, "--backends", "numpy,broken", "--steps", "1", "--json", "broken.json", "--bundle-dir", "b")
    assert done.returncode == 1, done.stderr
    assert report(where, "broken.json")["failures"] == {"broken": "build: RuntimeError: broken at import (broken_plugin.py:1)"}
