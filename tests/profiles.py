"""Hypothesis settings profiles for the property tests (tests/test_properties.py).

- ``dev``: quick, about 10 examples, the default for a bare ``pytest``;
- ``ci``: deterministic (derandomized, no example database), 25 examples; ``tox -e py`` and
  ``.ci/run`` use it (tox.ini sets HYPOTHESIS_PROFILE=ci unless it is set already);
- ``nightly``: 3000 examples per property test (11 minutes here), random (pin a night's search with
  ``--hypothesis-seed=N``), failures kept in ``.hypothesis/examples`` - the nightly workflow
  stores that directory as an artifact, and a later run replays what it holds first.

Chosen by the environment variable HYPOTHESIS_PROFILE (default: ``ci`` when CI is set, else
``dev``). Every profile prints the ``@reproduce_failure`` blob of a failure, skips Hypothesis's
"explain" phase (it reruns an example many times) and has no deadline (a run takes seconds and
its first call imports the frameworks).
"""

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
COMMON = dict(deadline=None, suppress_health_check=HEALTH, phases=PHASES, print_blob=True)

settings.register_profile("dev", max_examples=10, **COMMON)
settings.register_profile("ci", max_examples=25, derandomize=True, database=None, **COMMON)
settings.register_profile("nightly", max_examples=3000, database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
                          **COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
if PROFILE not in ("dev", "ci", "nightly"):
    raise SystemExit(f"HYPOTHESIS_PROFILE={PROFILE!r}: use dev, ci or nightly")
settings.load_profile(PROFILE)
