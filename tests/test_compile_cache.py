"""JAX's persistent compilation cache (harness.core.process.jax_compilation_cache): where it is
kept, that a user's choice is left alone, and that a process which loads nerva-jax's executables
from it computes the same trace as the process that compiled them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.process import jax_compilation_cache

VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "XDG_CACHE_HOME")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch):
    """None of the cache's variables set (each restored after the test)."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_the_cache_is_kept_per_user_and_keeps_every_executable(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path))
    jax_compilation_cache()
    path = tmp_path / "nerva-consistency" / "jax"
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(path)
    assert path.is_dir()
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] == "-1"


def test_a_directory_and_threshold_the_user_set_are_left_alone(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path))
    clean_env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    clean_env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2.5")
    jax_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "mine")
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2.5"
    assert not (tmp_path / "nerva-consistency").exists()


def test_without_a_writable_directory_no_cache_is_set(clean_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    clean_env.setenv("XDG_CACHE_HOME", str(blocker))
    jax_compilation_cache()
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


STEP = """
import json, sys
import numpy as np
import adapters
import scenarios
from harness.spec.data import batches
from harness.spec.state import initial_state

hits = []
jax = adapters.load("jax")
jax.setup()
from jax import monitoring
monitoring.register_event_listener(lambda event, **_: hits.append(event) if event.endswith("cache_hits") else None)
sc = scenarios.get("relu-softmax", steps=2)
jax.build(sc, initial_state(sc))
traces = [jax.step(X, T, sc.lr) for X, T in batches(sc)]
json.dump({"hits": len(hits), "trace": [{k: v.tolist() for k, v in t.items()} for t in traces]}, sys.stdout)
"""


@pytest.mark.backends
def test_a_process_that_loads_the_executables_computes_the_same_trace(installed, tmp_path):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"), JAX_ENABLE_COMPILATION_CACHE="true",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=str(ROOT))
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", STEP], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout))
    assert runs[0]["hits"] == 0 and any((tmp_path / "cache").iterdir())  # the first compiled and kept them
    assert runs[1]["hits"] > 0  # the second loaded them
    assert runs[1]["trace"] == runs[0]["trace"]  # every traced element, exactly
