"""Reports: the JSON document, the console table and the command that reproduces a run.

JSON schema ``nerva-consistency/report/2`` (documented in docs/report-schema.md):

    passed            bool: every backend ran every step and agreed
    scenario          name ("ad-hoc" for flag-only runs); spec: the full flags of the run
    seed, backends, dtype, mode, steps (steps asked), steps_run, steps_folded (judged, in summary only)
    seconds           wall time of the run
    failures          {backend: "step 3: RuntimeError: … (file:line)"} for backends that raised
    dtype_mismatches  {backend: [tensor, …]} tensors a backend held in another dtype than asked
    not_judged        {backend: [tensor, …]} the scenario's tensors a backend does not provide
    resyncs           [step, …] trajectory steps after which backends were re-anchored (a kink flip)
    unit              {name: "rounding bound", unit_roundoff, lambda, function_ulps, reference_factor}:
                      what a ratio of 1 means (harness.judge.bounds, docs/rounding.md)
    oracle            "sympy" | "autodiff" | null (backends judged against each other); oracle_note: why
    per_step          (the first 1000 steps, then the first failing and first flipping one)
                      [{step, near_kinks (values on both sides of a kink or on it), flips, ratio: {tensor: {backend: error/bound}},
                        kinks: {tensor: {backend: count}} (only non-zero),
                        ulps: {tensor: {backend: worst error in ulps of the dtype at the tensor's
                        largest magnitude}} (with an oracle)}]
    summary           {tensor: {backend: {"worst": max ratio, "kinks": total count, "ulps": max ulps}}}
    kink_events       [{step, site, tensor, index, point, flipped, values: {backend: v},
                        gradient: {backend: dv}}]  (at most 20 per step)
    first_divergence  null, or {step, tensor, layer, index, backends (blamed), majority,
                        ratio: {backend: r}, values: {backend: v, "consensus": v}, allowed: the bound there,
                        outside: {blamed backend: elements outside the bound}, elements: the tensor's size}
    non_finite        null, or {step, tensor, layer, values: {backend: its first NaN/Inf}}: the first tensor
                      a backend held NaN or Inf in (the run fails, even when every backend agrees)
    interrupted       bool: the run was stopped by Ctrl-C, SIGTERM or SIGHUP (per_step holds the steps judged until then)
    reproduce         {run: "nerva-consistency run …", tox: "tox -e consistency -- run …"}; a failing run
                      that wrote a repro bundle also {bundle: its path, replay: "nerva-consistency replay
                      PATH", tox_replay: "tox -e consistency -- replay PATH"}
    versions          {python, numpy, torch, jax, tensorflow, nerva-…: version or null;
                      "plugin NAME": distribution, version and module hash of each plug-in run}
"""

from __future__ import annotations

import platform
import shlex
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness.judge.arithmetic import LAMBDA, Arithmetic
from harness.judge.compare import key_name
from harness.run.component_files import loaded_files
from harness.run.runner import RunResult
from harness.spec.flags import flags
from harness.spec.scenario import Scenario

SCHEMA = "nerva-consistency/report/2"
FRAMEWORKS = ("numpy", "torch", "jax", "jaxlib", "tensorflow")
NERVA = ("nerva-numpy", "nerva-torch", "nerva-jax", "nerva-tensorflow")
PACKAGES = FRAMEWORKS + ("sympy", "mpmath", "hypothesis") + NERVA + ("nerva-consistency",)
"""The versions a report records."""
SHOWN = FRAMEWORKS + ("keras",) + NERVA
"""The versions a merged summary shows per cell (a cell manifest holds every installed package)."""


def versions(backends: list[str] | tuple[str, ...] = ()) -> dict[str, str | None]:
    """The :data:`PACKAGES`' versions, and ``plugin NAME``: what each plug-in among ``backends`` is
    (:func:`adapters.provenance`)."""
    import adapters

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out.update({f"plugin {b}": adapters.provenance(b) for b in backends if b in adapters.plugins()})
    return out


def reproduce_args(scenario: Scenario, backends: list[str], oracle: str | None = None) -> list[str]:
    """The shortest ``run`` arguments that rebuild exactly this scenario on these backends."""
    import scenarios

    mine = flags(scenario)
    base: dict[str, str] = {}
    args = ["run"]
    if scenario.name in scenarios.catalog():
        base = flags(scenarios.get(scenario.name))
        args += ["--scenario", scenario.name]
    for key, value in mine.items():
        if (base.get(key) != value or key == "seed") and value != "":  # "": a flag not given (--load-weights)
            args += [f"--{key}", value]
    args += components_args()
    if scenario.mode == "lockstep":
        args += ["--oracle", oracle or "none"]
    return args + ["--backends", ",".join(backends)]


def components_args() -> list[str]:
    """``--components FILE`` for every components file the run's names came from."""
    return [arg for path in loaded_files() for arg in ("--components", path)]


def reproduce(scenario: Scenario, backends: list[str], oracle: str | None = None,
              bundle: str | None = None) -> dict[str, str]:
    """The ``run`` command that rebuilds the run and its tox form; with the run's repro
    ``bundle``, also its path and the ``replay`` command (no RNG: the recorded inputs) in both forms."""
    args = reproduce_args(scenario, backends, oracle)
    out = {"run": shlex.join(["nerva-consistency", *args]),
           "tox": shlex.join(["tox", "-e", "consistency", "--", *args])}
    if bundle:
        out.update(bundle=bundle, replay=shlex.join(["nerva-consistency", "replay", bundle, *components_args()]),
                   tox_replay=shlex.join(["tox", "-e", "consistency", "--", "replay", bundle, *components_args()]))
    return out


def explore_args(examples: int, seed: int, backends: list[str], oracle: str = "auto") -> list[str]:
    """The ``explore`` arguments that repeat a search (the same seed, budget and backends draw the
    same examples, so the same defects are found and shrunk again)."""
    args = ["explore", "--examples", str(examples), "--seed", str(seed), "--backends", ",".join(backends)]
    args += components_args()
    return args + (["--oracle", oracle] if oracle != "auto" else [])


def reproduce_explored(bundle: str, examples: int, seed: int, backends: list[str], oracle: str = "auto",
                       round_seed: int | None = None, blob: str | None = None) -> dict[str, str]:
    """How to reproduce a defect an ``explore`` search found: replay its bundle (the smallest
    example, no RNG), repeat the search with its seed (the ``run`` equivalent: a drawn example's
    arrays come from Hypothesis, not from a ``run`` seed), both under tox, and the Hypothesis
    seed and reproduce blob of the round that found it."""
    args = explore_args(examples, seed, backends, oracle)
    replay = ["replay", bundle, *components_args()]
    out = {"replay": shlex.join(["nerva-consistency", *replay]),
           "explore": shlex.join(["nerva-consistency", *args]),
           "tox": shlex.join(["tox", "-e", "consistency", "--", *replay]),
           "tox_explore": shlex.join(["tox", "-e", "consistency", "--", *args])}
    if round_seed is not None:
        out["hypothesis_seed"] = str(round_seed)
    if blob:
        out["hypothesis_blob"] = blob
    return out


def summary(result: RunResult) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for verdict in result.verdicts:  # the folded steps of a long run too
        for tv in verdict.tensors:
            row = out.setdefault(key_name(tv.key), {})
            for b, w in tv.worst.items():
                cell = row.setdefault(b, {"worst": 0.0, "kinks": 0})
                cell["worst"] = max(cell["worst"], w)
                cell["kinks"] += tv.kinks.get(b, 0)
                if tv.ulps is not None:
                    cell["ulps"] = max(cell.get("ulps", 0.0), tv.ulps[b])
    return out


def _num(x: float) -> float | str:
    return x if x == x and abs(x) != float("inf") else str(x)


def unit(sc: Scenario, oracle: str | None) -> dict[str, Any]:
    """What a ratio of 1 means in this run (the rounding model of harness.judge.bounds)."""
    ar = Arithmetic(sc.dtype)
    return {"name": "rounding bound", "unit_roundoff": ar.u, "lambda": LAMBDA,
            "function_ulps": ar.function_ulps,
            "reference_factor": 1 if oracle else 2,
            "carried": sc.mode == "trajectory" and not oracle}


def to_json(result: RunResult, bundle: str | None = None) -> dict[str, Any]:
    """The JSON report of a run (schema above); ``bundle``: the path of its repro bundle, if one was written."""
    sc = result.scenario
    first = result.first_divergence
    fd = None
    if first is not None:
        step, tv = first
        fd = {"step": step, "tensor": tv.key[0], "layer": tv.key[1], "index": list(tv.index or ()),
              "backends": tv.blamed, "majority": tv.majority,
              "ratio": {b: _num(r) for b, r in tv.worst.items()},
              "values": {b: _num(v) for b, v in (tv.values or {}).items()},
              "allowed": _num(tv.allowed) if tv.allowed is not None else None,
              "outside": dict(tv.outside), "elements": tv.elements}
    return {
        "schema": SCHEMA,
        "passed": result.passed,
        "scenario": sc.name,
        "description": sc.description,
        "spec": flags(sc),
        "seed": sc.seed,
        "backends": result.backends,
        "dtype": sc.dtype,
        "mode": sc.mode,
        "oracle": result.oracle,
        "oracle_note": result.oracle_note,
        "steps": sc.steps,
        "steps_run": result.steps_run,
        "steps_folded": result.folded_steps,
        "seconds": round(result.seconds, 3),
        "failures": {b: str(f) for b, f in result.failures.items()},
        "dtype_mismatches": result.dtype_mismatches,
        "not_judged": result.omitted,
        "resyncs": result.resyncs,
        "unit": unit(sc, result.oracle),
        "per_step": [
            {"step": v.step, "near_kinks": v.near_kinks, "flips": v.flips,
             "ratio": {key_name(t.key): {b: _num(r) for b, r in t.worst.items()} for t in v.tensors},
             "kinks": {key_name(t.key): {b: n for b, n in t.kinks.items() if n}
                       for t in v.tensors if any(t.kinks.values())},
             **({"ulps": {key_name(t.key): {b: _num(u) for b, u in t.ulps.items()} for t in v.tensors}}
                if result.oracle else {})}
            for v in result.steps
        ],
        "summary": {k: {b: {key: _num(v) for key, v in c.items()} for b, c in row.items()}
                    for k, row in summary(result).items()},
        "kink_events": [e for v in result.steps for e in v.kink_events],
        "first_divergence": fd,
        "non_finite": None if result.nonfinite is None else
        {"step": result.nonfinite.step, "tensor": result.nonfinite.key[0], "layer": result.nonfinite.key[1],
         "values": {b: _num(v) for b, v in result.nonfinite.values.items()}},
        "interrupted": result.interrupted,
        "reproduce": reproduce(sc, result.backends, result.oracle, bundle),
        "versions": versions(result.backends),
    }
