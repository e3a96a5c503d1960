"""Repro bundles: one file that reruns a failure anywhere, without any RNG.

A bundle (``.npz``) holds the exact initial parameters (``state/<name>``), every batch
(``data/<step>/X``, ``data/<step>/T``) and one JSON document (``meta``) with the spec (the
complete flags of ``nerva-consistency run``), the backends, the oracle, the seed, the versions
of Python, NumPy, every framework, the Nerva libraries and Hypothesis, the platform
(:func:`harness.platform.describe`: CPU model and flags, BLAS kernels, torch's CPU capability,
the variables that force kernels), the findings, the verdict, and the numbers the run produced
(every step's ratio per tensor and backend, and the first divergence).

``nerva-consistency replay FILE`` rebuilds the scenario and runs it on exactly those arrays.
The last bits of a result depend on the CPU (BLAS, oneDNN and XLA pick kernels by CPU), so:

- same platform and versions as the recording: the numbers are compared bit for bit;
- otherwise (or a schema-1 bundle, which does not say its platform): the *verdict* is compared
  (passed or not, the finding classes with the backends they blame, the first divergence's
  step, tensor and layer), and the replay says which platform fields or versions differ.
  Kink events (which side of a kink a value lands on) are decided by rounding, so a
  ``kink``/``convention`` finding that appears or vanishes is a note, not a difference.

A bundle holds the batches of the steps the run judged (a run that stopped at its first
failure needs no more to stop there again). Its name is the scenario's (or ``stem``) and a
digest of the failure: the spec, backends, oracle, inputs and verdict. A rerun that fails the
same way therefore writes the same file and replaces it (:func:`bundle_path`, and the command
line says so); a different failure gets its own. A bundle is validated before it is read
(:func:`harness.validate.bundle`) and is never unpickled.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from harness import validate
from harness.classify import classify
from harness.platform import describe, explain
from harness.report import flags, reproduce, to_json, versions
from harness.runner import RunResult, run
from harness.spec import Scenario

SCHEMA = "nerva-consistency/bundle/2"
READS = validate.BUNDLE_READS  # schema 1: no platform, no verdict (derived on load)
assert SCHEMA in READS
DEFAULT_DIR = Path("nerva-consistency-failures")
KINK_CLASSES = ("kink", "convention")  # which side of a kink a value lands on: decided by rounding


class Differences(list):
    """What a replay found different from the recording: the list itself holds the real
    differences ([] = the recording reproduced), as before; besides it

    ``compared``  "numbers" (bit for bit), "verdict", or None (other backends: nothing compared);
    ``reasons``   why the verdict was compared: the platform fields or versions that differ, or
                  a recording that does not say its platform ([] for numbers);
    ``notes``     what differs without making the replay differ (kink events; after numbers
                  that differ, whether the verdict did too).
    """

    def __init__(self, items: Iterable[str] = (), compared: str | None = None, reasons: Iterable[str] = (),
                 notes: Iterable[str] = ()):
        super().__init__(items)
        self.compared = compared
        self.reasons = list(reasons)
        self.notes = list(notes)

    @property
    def reproduced(self) -> bool:
        """The recording reproduced: nothing but notes differs (False when nothing was compared)."""
        return self.compared is not None and not self


def _numbers(doc: dict[str, Any]) -> dict[str, Any]:
    """The part of a report that a replay on the same platform must reproduce exactly."""
    return {"per_step": [{"step": s["step"], "ratio": s["ratio"]} for s in doc["per_step"]],
            "first_divergence": doc["first_divergence"], "failures": doc["failures"]}


def verdict(result: RunResult) -> dict[str, Any]:
    """The part of a run that must reproduce on any platform: passed or not, each finding's
    class and the backends it names, and where the first divergence is (not which element)."""
    first = result.first_divergence
    return {
        "passed": result.passed,
        "findings": [{"class": f.cls, "backends": list(f.backends)} for f in classify(result)],
        "first_divergence": None if first is None else
        {"step": first[0], "tensor": first[1].key[0], "layer": first[1].key[1]},
    }


def recorded_verdict(meta: dict[str, Any]) -> dict[str, Any]:
    """A bundle's verdict (schema 1 bundles: derived from their findings and numbers)."""
    if "verdict" in meta:
        return meta["verdict"]
    numbers = meta["numbers"]
    first = numbers["first_divergence"]
    return {
        "passed": first is None and not numbers["failures"],
        "findings": [{"class": f["cls"], "backends": list(f["backends"])} for f in meta["findings"]],
        "first_divergence": None if first is None else {k: first[k] for k in ("step", "tensor", "layer")},
    }


def describe_verdict(v: dict[str, Any]) -> str:
    """One short text: ``FAIL: bug (jax); first divergence at step 0, DX of layer 2``."""
    findings = ", ".join(f"{f['class']} ({', '.join(f['backends'])})" for f in v["findings"])
    first = v["first_divergence"]
    where = "" if first is None else \
        f"first divergence at step {first['step']}, {first['tensor']}" + \
        ("" if first["layer"] is None else f" of layer {first['layer']}")
    return ("PASS" if v["passed"] else "FAIL") + ": " + ("; ".join(x for x in (findings, where) if x) or "no findings")


def compare_verdicts(recorded: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(differences, notes) between two verdicts; kink-side findings only make notes."""
    differences, notes = [], []
    if bool(recorded["passed"]) != bool(now["passed"]):
        differences.append(f"passed: recorded {'PASS' if recorded['passed'] else 'FAIL'}, "
                           f"replay {'PASS' if now['passed'] else 'FAIL'}")

    def findings(v: dict, kink: bool) -> list[str]:
        return sorted(f"{f['class']} ({', '.join(sorted(f['backends']))})" for f in v["findings"]
                      if (f["class"] in KINK_CLASSES) == kink)

    for kink in (False, True):
        a, b = findings(recorded, kink), findings(now, kink)
        if a != b:
            text = f"recorded {'; '.join(a) or 'none'}, replay {'; '.join(b) or 'none'}"
            if kink:
                notes.append(f"kink events differ (rounding decides the side of a kink): {text}")
            else:
                differences.append(f"findings: {text}")

    def where(v: dict) -> str:
        f = v["first_divergence"]
        return "none" if f is None else \
            f"step {f['step']}, {f['tensor']}" + ("" if f["layer"] is None else f" of layer {f['layer']}")

    if where(recorded) != where(now):
        differences.append(f"first divergence: recorded {where(recorded)}, replay {where(now)}")
    return differences, notes


def _saved_data(result: RunResult) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of the steps the run judged (at least one), one at a time: all a replay needs
    to stop where the run stopped. Lazily made batches are not made beyond them."""
    _, data = result.inputs
    n = len(data) if not result.stopped_early else max(1, result.steps_run)
    return itertools.islice(iter(data), min(n, len(data)))


def bundle_path(result: RunResult, directory: Path | str = DEFAULT_DIR, stem: str | None = None) -> Path:
    """Where :func:`save` writes ``result``'s bundle: the same absolute path for the same failure
    (spec, backends, oracle, inputs and verdict), so a rerun replaces its bundle."""
    sc = result.scenario
    state0, _ = result.inputs
    digest = hashlib.sha256(json.dumps([flags(sc), result.backends, result.oracle, verdict(result)],
                                       sort_keys=True, default=str).encode())
    for key in sorted(state0):
        digest.update(key.encode() + np.ascontiguousarray(state0[key]).tobytes())
    for X, T in _saved_data(result):
        digest.update(np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(T).tobytes())
    name = f"{stem or f'{sc.name}-seed{sc.seed}-{sc.dtype}-{sc.mode}'}-{digest.hexdigest()[:10]}.npz"
    return Path(os.path.abspath(directory)) / name


def save(result: RunResult, directory: Path | str = DEFAULT_DIR, hypothesis: dict | None = None,
         stem: str | None = None, commands: Callable[[Path], dict[str, str]] | None = None) -> Path:
    """Write ``result``'s bundle into ``directory``; returns its path.

    ``hypothesis``: how a Hypothesis search found it (seed, reproduce blob, …); ``commands(path)``:
    the commands that reproduce it (given the bundle's path), when the ``run`` command would not (an example drawn by
    Hypothesis holds explicit arrays that no ``run`` seed regenerates: there, the ``explore``
    command with its seed and the replay of this bundle are the equivalents). ``stem``: the file
    name without its digest (default: scenario, seed, dtype and mode). The path is
    :func:`bundle_path`'s: a bundle of the same failure is replaced (atomically)."""
    if result.inputs is None:
        raise ValueError("this result does not carry its inputs")
    sc = result.scenario
    state0, _ = result.inputs
    doc = to_json(result)
    findings = classify(result)
    meta = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scenario": sc.name,
        "spec": flags(sc),
        "description": sc.description,
        "backends": result.backends,
        "oracle": result.oracle if result.oracle else "none",
        "seed": sc.seed,
        "versions": versions(),
        "platform": describe(),  # after the run: the libraries its backends loaded are seen
        "hypothesis": hypothesis,
        "findings": [f.__dict__ | {"backends": list(f.backends)} for f in findings],
        "verdict": verdict(result),
        "numbers": _numbers(doc),
    }
    path = bundle_path(result, directory, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta["reproduce"] = commands(path) if commands else reproduce(sc, result.backends, result.oracle)

    def arrays() -> Iterator[tuple[str, np.ndarray]]:  # one at a time: a long run's batches are never all held
        yield "meta", np.array(json.dumps(meta))
        yield from ((f"state/{k}", v) for k, v in state0.items())
        for i, (X, T) in enumerate(_saved_data(result)):
            yield f"data/{i}/X", X
            yield f"data/{i}/T", T

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # written whole, then renamed over the old one
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:  # np.savez_compressed's format
            for name, a in arrays():
                with z.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: Path | str) -> tuple[dict, Scenario, dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """(meta, scenario, initial state, batches) of a bundle of schema 1 or 2, validated
    (:func:`harness.validate.bundle`: a damaged bundle is a SpecError that says so). A schema-1
    bundle's ``platform`` is None (unknown); its ``tolerance`` and ``growth`` are ignored."""
    return validate.bundle(str(path))


def replay(path: Path | str, backends: list[str] | None = None,
           compare: str = "auto", loaded: tuple | None = None) -> tuple[RunResult, Differences]:
    """Rerun a bundle; returns the result and its :class:`Differences` from the recording
    (a list: [] = reproduced; ``.compared`` and ``.reasons`` say what was compared and why).

    ``compare``: "auto" compares the numbers bit for bit when the platform and the versions
    are the recording's, else the verdict; "numbers" or "verdict" forces one (a test that must
    not depend on the CPU asks for the verdict)."""
    if compare not in ("auto", "numbers", "verdict"):
        raise ValueError(f"compare must be auto, numbers or verdict, not {compare!r}")
    meta, scenario, state0, data = loaded or load(path)
    names = backends or meta["backends"]
    result = run(scenario, names, oracle=meta["oracle"], state0=state0, data=data)
    if names != meta["backends"]:
        return result, Differences(["backends differ from the recording, nothing compared"])
    reasons = []
    if meta["platform"] is None:
        reasons.append(f"the recording does not say its platform: schema {meta['schema']}")
    else:
        changed = explain(meta["platform"], describe())
        if changed:
            reasons.append("platform differs: " + "; ".join(changed))
    now_versions = versions()
    changed_versions = {k: (v, now_versions.get(k)) for k, v in meta["versions"].items() if now_versions.get(k) != v}
    if changed_versions:
        reasons.append("versions differ: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed_versions.items()))
    mode = compare if compare != "auto" else ("verdict" if reasons else "numbers")
    if mode == "verdict" and not reasons:
        reasons.append("the verdict was asked for")
    out = Differences(compared=mode, reasons=reasons)
    recorded, now = recorded_verdict(meta), verdict(result)
    verdict_differences, kink_notes = compare_verdicts(recorded, now)
    if mode == "numbers":
        numbers_then, numbers_now = meta["numbers"], _numbers(to_json(result))
        out += [key for key in numbers_then
                if json.dumps(numbers_then[key], sort_keys=True) != json.dumps(numbers_now.get(key), sort_keys=True)]
        if out:
            out.notes.append("the verdict " + ("differs too: " + "; ".join(verdict_differences)
                                               if verdict_differences else "is the same"))
    else:
        out += verdict_differences
        out.notes += kink_notes
    return result, out
