"""What the run leaves out or shares to be fast gives the numbers the full computation gives.

One BLAS and OpenMP thread for a run (unless the user set a count); the new velocities' bounds
only when asked; a trajectory step's point taken from the previous step's reference and the
traced parameters (the backends read for their velocities only); the non-finite scan's one-pass
test, and the non-finite values found by the judge's ratios. Each is checked against the
computation it replaces, on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import harness.run.runner as runner
from harness.core.process import THREAD_VARIABLES, run_threads
from harness.judge.compare import KERNEL_SIZE
from harness.judge.bounds import step_bounds
from harness.spec.scenario import build_scenario
from harness.spec.state import initial_state
from harness.spec.data import batches


def _threads() -> dict[str, int]:
    return {f"{i['user_api']} {i['filepath']}": i["num_threads"] for i in threadpool_info()}


def test_a_run_has_one_blas_thread_and_the_pools_are_restored_after_it(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = _threads()
    assert any(k.startswith("blas") for k in before)  # NumPy's BLAS at least
    with run_threads():
        inside = _threads()
    assert inside.keys() == before.keys() and set(inside.values()) == {1}
    assert _threads() == before


@pytest.mark.parametrize("variable", THREAD_VARIABLES)
def test_a_thread_count_the_user_set_is_left_alone(monkeypatch, variable):
    monkeypatch.setenv(variable, "2")
    before = _threads()
    with run_threads():
        assert _threads() == before


def _scenario(**kw):
    spec = dict(name="t", layers="ReLU;Softmax", sizes="6,5,3", optimizers="Momentum(0.9);Nesterov(0.5)",
                init_weights=None, loss="CrossEntropy", lr=0.05, batch_size=4, steps=4)
    return build_scenario(**{**spec, **kw})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_bounds_of_a_step_do_not_depend_on_whether_the_new_velocities_are_asked_for(dtype):
    """The runner does not ask for the new state's bounds; the trace's bounds are the same."""
    import adapters

    sc = _scenario(dtype=dtype)
    state, (X, T) = initial_state(sc), batches(sc)[0]
    numpy_ = adapters.load("numpy")
    numpy_.build(sc, state)
    start = numpy_.get_state()
    trace = numpy_.step(X, T, sc.lr)
    carried = {k: np.abs(v) * 2.0 ** -30 for k, v in start.items()}  # a trajectory's spread
    alone, none = step_bounds(sc, trace, start, carried)
    whole, new = step_bounds(sc, trace, start, carried, new_state=True)
    assert none == {} and {"W1.v", "b1.v", "W2.v", "b2.v"} <= new.keys()
    assert alone.keys() == whole.keys()
    for k in whole:
        np.testing.assert_array_equal(alone[k], whole[k])
    assert all(np.all(alone[k] > 0) for k in ("W1", "DW1", "Y"))


def test_a_trajectory_point_from_the_previous_reference_and_velocity_reads_judges_as_the_full_reads(monkeypatch):
    """The point of a trajectory step: the previous step's reference for the parameters (their
    consensus), the backends read only for their velocities; the verdicts equal those of the
    point recomputed from every backend's full state, ratio for ratio."""
    sc = _scenario(dtype="float32", mode="trajectory")
    reads: list[bool] = []
    from adapters.nerva_driver import NervaAdapter

    read = NervaAdapter.get_state

    def spy(self, parameters=True):
        reads.append(parameters)
        return read(self, parameters)

    monkeypatch.setattr(NervaAdapter, "get_state", spy)
    shared = runner.run(sc, ["numpy", "torch"], oracle="none")
    assert reads and not any(reads)  # velocities only, at every step
    assert len(reads) == 2 * sc.steps

    def full(self, step):  # the point as it was: every backend's whole state, the consensus recomputed
        return runner._Start([m.get_state() for m in self.active.values()], False)

    monkeypatch.setattr(runner._Session, "_start", full)
    recomputed = runner.run(sc, ["numpy", "torch"], oracle="none")
    assert shared.steps_run == recomputed.steps_run == sc.steps and shared.passed == recomputed.passed
    assert any(w > 0 for t in shared.steps[-1].tensors for w in t.worst.values())
    for a, b in zip(shared.steps, recomputed.steps):
        assert [(t.key, t.worst, t.blamed) for t in a.tensors] == [(t.key, t.worst, t.blamed) for t in b.tensors]


def test_the_one_pass_non_finite_test_finds_what_the_element_test_finds():
    sc = _scenario()
    big = np.full((4, 3), np.finfo(np.float64).max)  # finite, but its sum overflows
    clean = {"numpy": {"Y": big, "loss": np.float64(1.0)}, "torch": {"Y": big.copy(), "loss": np.float64(1.0)}}
    assert runner.first_nonfinite(sc, 0, clean) is None
    for bad in (np.inf, -np.inf, np.nan):
        dirty = {b: {k: np.array(v) for k, v in t.items()} for b, t in clean.items()}
        dirty["torch"]["Y"][2, 1] = bad
        found = runner.first_nonfinite(sc, 3, dirty)
        assert found is not None and found.step == 3 and found.name == "Y" and found.backends == ["torch"]
        assert found.values["torch"] == bad or (np.isnan(bad) and np.isnan(found.values["torch"]))


@pytest.mark.parametrize("keep_going", [False, True])
@pytest.mark.parametrize("tensor", ["DW1", "DW2"])  # judged in the compiled pass, and in NumPy
def test_a_non_finite_value_found_by_the_judge_stops_the_run_where_a_scan_of_the_traces_did(monkeypatch, keep_going,
                                                                                              tensor):
    """The judge's ratios find a step's NaN (first_nonfinite only localises it), after the
    backends have gone on to the next step: the run stops at the non-finite step as before, and
    a failure in the step after it is not kept; with keep_going every step runs and it is."""
    import adapters.torch_adapter as torch_adapter

    sc = _scenario(sizes="200,200,3", batch_size=4, steps=4)
    assert 200 * 200 >= KERNEL_SIZE > 200 * 3
    real, calls = torch_adapter.TorchAdapter.step, []

    def step(self, X, T, lr):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a step after the NaN")
        trace = real(self, X, T, lr)
        if len(calls) == 2:
            trace[tensor][1, 2] = np.nan
        return trace

    monkeypatch.setattr(torch_adapter.TorchAdapter, "step", step)
    result = runner.run(sc, ["numpy", "torch"], oracle="none", keep_going=keep_going)
    found = result.nonfinite
    assert (found.step, found.name, found.backends) == (1, tensor, ["torch"]) and np.isnan(found.values["torch"])
    if keep_going:
        assert result.steps_run == 4 and list(result.failures) == ["torch"] and result.failures["torch"].step == 2
    else:
        assert result.steps_run == 2 and result.stopped_early and result.failures == {} and not result.passed
