"""Injected bugs must be caught, blamed on the right backend and localized to the right tensor.

The bugs themselves live in the mutation corpus (tests/mutants/; tests/test_mutants.py asserts
each one's verdict); these tests use its bias-gradient bug for what the corpus does not cover:
the same bug in each backend judged by the majority, the majority's limit, the CLI's output and
a repro bundle.

A 0.1 % error in Db is caught against the majority in lockstep (37 times the bound) but not in
trajectory mode, whose bound is the worst case even at step 0 (docs/mutants.md, "Comparator";
the corpus's ``bias-gradient-off-by-1e-3-in-trajectory``). The tests that need *a* caught bug in
trajectory mode, the default of ``run``, plant 5 % (``TRAJECTORY_FACTOR``: 17-40 times the
bound there)."""

import importlib

import numpy as np
import pytest

import scenarios
from mutants import break_bias_gradient
from harness.run.runner import run

pytestmark = pytest.mark.backends
TRAJECTORY_FACTOR = 1.05


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax", "tensorflow"])
def test_broken_backward_is_blamed_on_its_backend(backend, installed, monkeypatch):
    break_bias_gradient(monkeypatch, backend)
    # relu-softmax: ReLU;ReLU;Softmax. The Softmax layer is not an ActivationLayer, so the
    # first wrong tensor in backward order is Db of layer 2 (the upper ReLU layer). Lockstep
    # without an oracle: every backend at the same point, judged against the majority.
    result = run(scenarios.get("relu-softmax", steps=3, mode="lockstep"), installed, oracle="none")
    assert not result.passed
    step, verdict = result.first_divergence
    assert step == 0
    assert verdict.key == ("Db", 2)
    assert verdict.blamed == [backend] and verdict.majority
    assert verdict.worst[backend] > 1
    assert all(verdict.worst[b] < 1 for b in installed if b != backend)


def test_same_wrong_formula_in_three_backends_leaves_no_majority_for_the_right_one(installed, monkeypatch):
    """Blame follows the majority: three wrong backends outvote the correct one. (Finding such
    bugs needs the exact oracle; this test documents the limit of backend-vs-backend comparison.)"""
    for backend in ("torch", "jax", "tensorflow"):
        break_bias_gradient(monkeypatch, backend, factor=TRAJECTORY_FACTOR)
    result = run(scenarios.get("relu-softmax", steps=1), installed)
    _, verdict = result.first_divergence
    assert verdict.blamed == ["numpy"]


def test_cli_exit_1_names_the_backend_and_prints_the_reproduction(installed, monkeypatch, capsys, tmp_path):
    import json

    from harness.cli.main import main

    break_bias_gradient(monkeypatch, "jax", factor=TRAJECTORY_FACTOR)
    report = tmp_path / "r.json"
    code = main(["run", "--scenario", "relu-softmax", "--steps", "3", "--seed", "4", "--quiet", "--json", str(report),
                 "--bundle-dir", str(tmp_path / "bundles")])
    assert code == 1
    out = capsys.readouterr().out
    bundles = list((tmp_path / "bundles").glob("*.npz"))
    assert len(bundles) == 1 and f"nerva-consistency replay {bundles[0]}" in out
    assert "first divergence" in out and "jax" in out
    assert "nerva-consistency run --scenario relu-softmax --steps 3 --seed 4 --backends numpy,torch,jax,tensorflow" in out
    assert "tox -e consistency -- run --scenario relu-softmax" in out
    doc = json.loads(report.read_text())
    fd = doc["first_divergence"]
    assert doc["passed"] is False and fd["step"] == 0
    assert (fd["tensor"], fd["layer"], fd["backends"]) == ("Db", 2, ["jax"])
    assert fd["ratio"]["jax"] > 1 > max(fd["ratio"][b] for b in ("numpy", "torch", "tensorflow"))
    assert set(fd["values"]) == {"numpy", "torch", "jax", "tensorflow", "consensus"}


def test_a_bundle_replays_bit_for_bit_without_any_rng(installed, monkeypatch, tmp_path):
    from harness.reports.bundle import load, replay, save

    original = break_bias_gradient(monkeypatch, "tensorflow", factor=TRAJECTORY_FACTOR)
    layers = importlib.import_module("nerva_tensorflow.layers")
    result = run(scenarios.get("relu-softmax", steps=2, seed=9), installed)
    assert not result.passed
    path = save(result, tmp_path)
    meta, scenario, state0, data = load(path)
    assert meta["findings"][0]["cls"] == "bug" and meta["findings"][0]["backends"] == ["tensorflow"]
    assert set(meta["versions"]) >= {"python", "numpy", "torch", "jax", "tensorflow", "nerva-numpy", "hypothesis"}
    assert all(np.array_equal(state0[k], result.inputs[0][k]) for k in state0)
    import harness.spec.data

    monkeypatch.setattr(harness.spec.data, "batches", lambda *a: pytest.fail("a replay must not draw data"))
    again, differences = replay(path)
    assert differences == []  # the same numbers, bit for bit
    assert again.first_divergence[1].key == result.first_divergence[1].key
    monkeypatch.setattr(layers.ActivationLayer, "backpropagate", original)  # the bug fixed:
    fixed, differences = replay(path)
    assert fixed.passed and "first_divergence" in differences
