"""The example plug-ins of examples/plugins/ registered through the real entry-point mechanism.

:func:`site` writes, for each example, the ``.dist-info`` directory that ``pip install`` would
write (METADATA and entry_points.txt, taken from the example's pyproject.toml) into a directory;
:func:`environment` puts it and the examples' modules on ``PYTHONPATH``, so that a subprocess
finds the plug-ins with ``importlib.metadata.entry_points`` as it would installed ones (no
monkeypatched registry). The directory has no RECORD, as a checkout beside a .dist-info, so the
plug-ins' reports carry their module's hash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plugins"
GROUP = "nerva_consistency.adapters"


def site(into: Path, examples: Path = EXAMPLES) -> Path:
    """A directory holding one ``NAME-VERSION.dist-info`` per example plug-in and a copy of its
    module (a copy, so that a test may change it)."""
    into.mkdir(parents=True, exist_ok=True)
    for example in sorted(p for p in examples.iterdir() if (p / "pyproject.toml").exists()):
        project = tomllib.loads((example / "pyproject.toml").read_text())["project"]
        info = into / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
        points = project["entry-points"][GROUP]
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
        for module in example.glob("*.py"):
            shutil.copy(module, into / module.name)
    return into


def environment(where: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that sees the plug-ins of ``where`` (a :func:`site`)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_FAULT")}
    env["PYTHONPATH"] = os.pathsep.join([str(where), str(ROOT)])
    env.update(extra)
    return env


def cli(where: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """``nerva-consistency ARGS`` in a subprocess that sees the plug-ins, in ``where``."""
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=where, env=environment(where, **extra),
                          capture_output=True, text=True, timeout=600)


PLUGINS = tuple(n for n in os.environ.get("NERVA_CONSISTENCY_PLUGINS", "").split(",") if n)
"""The plug-ins the component suite also runs (``NERVA_CONSISTENCY_PLUGINS=mymlp``; none by
default: installing a plug-in changes nothing about the suite)."""


class Optional:
    """A plug-in as the component suite sees it: a method it does not have, or one that raises
    NotImplementedError (a function it lacks) or SpecError (``build`` of a layer kind it lacks),
    skips the test with "not implemented by NAME" (the optional part,
    harness.core.backend.Components)."""

    def __init__(self, name: str, backend):
        self._name, self._backend = name, backend

    def __getattr__(self, attr: str):
        import pytest

        from harness.core.errors import SpecError
        from harness.run.conventions import not_implemented

        value = getattr(self._backend, attr, None)
        if value is None:
            pytest.skip(f"{not_implemented(self._name)}: no {attr}")
        if not callable(value):
            return value

        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except (NotImplementedError, SpecError) as e:
                pytest.skip(f"{not_implemented(self._name)}: {e}")

        return call


def optional(name: str, backend):
    """``backend`` itself for a Nerva library, an :class:`Optional` view of a plug-in."""
    return Optional(name, backend) if name in PLUGINS else backend
