"""Named scenarios: the catalog (``catalog.toml``, data) and how a table becomes a Scenario.

A catalog entry uses the same keys as the command-line flags of ``nerva-consistency run``
(``layers``, ``sizes``, ``optimizers``, ``init-weights``, ``loss``, ``learning-rate``,
``batch-size``, ``steps``, ``dataset``, ``targets``, ``dtype``, ``mode``, ``seed``), plus
``description``, ``check`` (part of the main job), ``variants`` (the dtype/mode pairs the main
job runs it in, default all four), ``known`` (the ids of the documented defects its runs show,
from harness/run/known.py: ``check`` expects exactly them) and ``base`` (start from another entry
and change some keys).
There are no tolerances to set: every element is judged in units of its rounding bound
(harness.judge.bounds).
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from harness.core.errors import SpecError
from harness.spec.flags import NAMES
from harness.spec.scenario import DataSpec, Scenario, build_scenario

KEYS = {*NAMES, "description", "check", "known", "variants", "base"}
ALL_VARIANTS = ("float32/trajectory", "float32/lockstep", "float64/trajectory", "float64/lockstep")


def catalog() -> dict[str, dict[str, Any]]:
    """Every named scenario as a flat table of flags (``base`` already applied)."""
    raw = tomllib.loads(resources.files(__name__).joinpath("catalog.toml").read_text())

    def resolve(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if name not in raw or name in seen:
            raise SpecError(f"catalog entry {seen[-1]!r} has base {name!r}, which is unknown or circular")
        table = raw[name]
        unknown = set(table) - KEYS
        if unknown:
            raise SpecError(f"catalog entry {name!r} has unknown key(s) {', '.join(sorted(unknown))}")
        entry = resolve(table["base"], (*seen, name)) if "base" in table else {}
        entry.pop("check", None)  # each entry decides for itself whether it is in the main job
        entry.pop("variants", None)
        entry.update(table)
        entry.pop("base", None)
        return entry

    return {name: resolve(name) for name in raw}


def from_table(name: str, table: dict[str, Any]) -> Scenario:
    """A Scenario from a table of flags (a catalog entry, possibly with overrides)."""
    return build_scenario(
        name=name,
        layers=table["layers"],
        sizes=table["sizes"],
        optimizers=table["optimizers"],
        init_weights=table.get("init-weights"),
        loss=table["loss"],
        lr=table["learning-rate"],
        batch_size=int(table["batch-size"]),
        steps=int(table["steps"]),
        data=DataSpec(_source(table.get("dataset", "synthetic")), table.get("targets", "onehot")),
        dtype=table.get("dtype", "float32"),
        mode=table.get("mode", "trajectory"),
        seed=int(table.get("seed", 0)),
        description=table.get("description", ""),
        build=table.get("build", "harness"),
        init_from=table.get("init-from", "numpy"),
        weights=table.get("load-weights", ""),
    )


def _source(dataset: str) -> str:
    """A data source; a file's path is made absolute, so the reproduce commands work from any folder."""
    dataset = str(dataset)
    if dataset in ("synthetic", "digits", "digits784"):
        return dataset
    path = dataset[4:] if dataset.startswith("npz:") else dataset
    return f"npz:{os.path.abspath(path)}" if path.strip() else f"npz:{path}"


def get(name: str, **overrides: Any) -> Scenario:
    entries = catalog()
    if name not in entries:
        raise SpecError(f"unknown scenario {name!r}; `nerva-consistency list` shows the catalog")
    table = dict(entries[name])
    table.update({k: v for k, v in overrides.items() if v is not None})
    return from_table(name, table)
