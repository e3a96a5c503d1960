"""Shared fixtures: which backends are installed, and a guard that they all are in CI."""

import os

import pytest

import adapters

ALL = ("numpy", "torch", "jax", "tensorflow")


@pytest.fixture(scope="session")
def installed() -> list[str]:
    """The backends this environment can run. Under tox/CI (NERVA_CONSISTENCY_REQUIRE_ALL=1)
    a missing backend is an error, not a skip, so a broken install cannot pass quietly."""
    missing = {b: adapters.why_unavailable(b) for b in ALL if adapters.why_unavailable(b)}
    if missing:
        if os.environ.get("NERVA_CONSISTENCY_REQUIRE_ALL") == "1":
            pytest.fail("; ".join(missing.values()))
        pytest.skip("; ".join(missing.values()))
    return list(ALL)


# Hypothesis settings profiles (dev | ci | nightly): tests/profiles.py
import profiles  # noqa: E402,F401  (registers and loads the profile)
