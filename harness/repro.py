"""Repro bundles: one file that reruns a failure anywhere, without any RNG.

A bundle (``.npz``) holds the exact initial parameters (``state/<name>``), every batch
(``data/<step>/X``, ``data/<step>/T``) and one JSON document (``meta``) with the spec (the
complete flags of ``nerva-consistency run`` plus tolerances), the backends, the oracle, the seed,
the versions of Python, NumPy, every framework, the Nerva libraries and Hypothesis, the
findings, and the numbers the run produced (every step's error/tolerance per tensor and
backend, and the first divergence). ``nerva-consistency replay FILE`` rebuilds the scenario,
runs it on exactly those arrays and compares the numbers with the recording bit for bit; when
the package versions differ from the recording it says which, since bits may then differ.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.classify import classify
from harness.errors import SpecError
from harness.report import flags, reproduce, to_json, versions
from harness.runner import RunResult, run
from harness.spec import DataSpec, Scenario, build_scenario

SCHEMA = "nerva-consistency/bundle/1"
DEFAULT_DIR = Path("nerva-consistency-failures")


def _numbers(doc: dict[str, Any]) -> dict[str, Any]:
    """The part of a report that a replay must reproduce exactly."""
    return {"per_step": [{"step": s["step"], "ratio": s["ratio"]} for s in doc["per_step"]],
            "first_divergence": doc["first_divergence"], "failures": doc["failures"]}


def save(result: RunResult, directory: Path | str = DEFAULT_DIR, hypothesis: dict | None = None,
         stem: str | None = None, commands: Callable[[Path], dict[str, str]] | None = None) -> Path:
    """Write ``result``'s bundle into ``directory``; returns its path.

    ``hypothesis``: how a Hypothesis search found it (seed, reproduce blob, …); ``commands(path)``:
    the commands that reproduce it (given the bundle's path), when the ``run`` command would not (an example drawn by
    Hypothesis holds explicit arrays that no ``run`` seed regenerates: there, the ``explore``
    command with its seed and the replay of this bundle are the equivalents). ``stem``: the file
    name without its time stamp (default: scenario, seed, dtype and mode)."""
    if result.inputs is None:
        raise ValueError("this result does not carry its inputs")
    sc = result.scenario
    state0, data = result.inputs
    doc = to_json(result)
    meta = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scenario": sc.name,
        "spec": flags(sc),
        "tolerance": {k: list(v) for k, v in sc.tolerance},
        "growth": sc.growth,
        "description": sc.description,
        "backends": result.backends,
        "oracle": result.oracle if result.oracle else "none",
        "seed": sc.seed,
        "versions": versions(),
        "hypothesis": hypothesis,
        "findings": [f.__dict__ | {"backends": list(f.backends)} for f in classify(result)],
        "numbers": _numbers(doc),
    }
    arrays = {f"state/{k}": v for k, v in state0.items()}
    for i, (X, T) in enumerate(data):
        arrays[f"data/{i}/X"], arrays[f"data/{i}/T"] = X, T
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = directory / f"{stem or f'{sc.name}-seed{sc.seed}-{sc.dtype}-{sc.mode}'}-{stamp}.npz"
    n = 1
    while path.exists():
        path = path.with_name(path.stem.rsplit("~", 1)[0] + f"~{n}.npz")
        n += 1
    meta["reproduce"] = commands(path) if commands else reproduce(sc, result.backends, result.oracle)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load(path: Path | str) -> tuple[dict, Scenario, dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"bundle {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            state0 = {k[len("state/"):]: f[k] for k in f.files if k.startswith("state/")}
            steps = sorted({int(k.split("/")[1]) for k in f.files if k.startswith("data/")})
            data = [(f[f"data/{i}/X"], f[f"data/{i}/T"]) for i in steps]
    except (OSError, ValueError, KeyError) as e:
        raise SpecError(f"{str(path)!r} is not a nerva-consistency bundle ({e})") from None
    if meta.get("schema") != SCHEMA:
        raise SpecError(f"{str(path)!r} is a bundle of schema {meta.get('schema')!r}; this version reads {SCHEMA}")
    s = meta["spec"]
    scenario = build_scenario(
        name=meta["scenario"], layers=s["layers"], sizes=s["sizes"], optimizers=s["optimizers"],
        init_weights=s["init-weights"] or None, loss=s["loss"], lr=s["learning-rate"], batch_size=int(s["batch-size"]),
        steps=int(s["steps"]), data=DataSpec("synthetic", s["targets"]), dtype=s["dtype"], mode=s["mode"],
        seed=int(s["seed"]), tolerance=meta["tolerance"], growth=meta["growth"], description=meta["description"])
    return meta, scenario, state0, data


def replay(path: Path | str, backends: list[str] | None = None) -> tuple[RunResult, list[str]]:
    """Rerun a bundle; returns the result and the differences from the recording ([] = identical)."""
    meta, scenario, state0, data = load(path)
    names = backends or meta["backends"]
    result = run(scenario, names, oracle=meta["oracle"], state0=state0, data=data)
    differences = []
    if names == meta["backends"]:
        recorded, now = meta["numbers"], _numbers(to_json(result))
        for key in recorded:
            if json.dumps(recorded[key], sort_keys=True) != json.dumps(now[key], sort_keys=True):
                differences.append(key)
    else:
        differences.append("backends differ from the recording, numbers not compared")
    changed = {k: (v, versions().get(k)) for k, v in meta["versions"].items() if versions().get(k) != v}
    if changed:
        differences.append("versions differ: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    return result, differences
