"""The libraries' weight initializers on their own (part of the component suite).

For every initializer spec string any of the four libraries accepts (and a few that none does):

- **parsing**: does each library's ``set_layer_weights`` accept it? A library that refuses a
  string another accepts is a finding (docs/findings.md #30), listed in ``REFUSED`` and expected to fail strictly, so a fix is noticed;
- **the draws**: do the weights follow the distribution the libraries document (the docstrings of
  weight_initializers.py: Uniform on [a, b), Normal with mean a and standard deviation b,
  Xavier/Glorot with sqrt(6 / (D + K)) and sqrt(2 / (D + K)), He/Kaiming with sqrt(6 / D) and
  sqrt(2 / D), Zero), and are the biases zero? Where a library refuses the string, its documented
  function (``set_weights_uniform`` ...) is drawn from directly. Each check
  (harness.judge.distributions.check_draws: mean, variance, Kolmogorov-Smirnov) has false-alarm
  probability ``ALPHA = per_check(CHECKS)``, CHECKS = backends x random strings + 1 (the
  calibration test below): 4 x 9 + 1 = 37 checks, each at 1e-6 / 37 = 2.7e-8, so the suite fails
  on correct draws with probability under 1e-6 (Bonferroni: at most the sum of the 37);
- **power**: the same checks against a law whose variance is off by a factor 1.5 either way
  catch it (D != K too, so a fan-in/fan-out mix-up, a factor D / K = 2, would be caught);
- **calibration**: at a per-check probability of 0.05, correct draws fail no more often than
  that (a binomial bound at the calibration test's own share of the budget);
- **seeds**: the same seed gives the same draw, another seed another draw; nerva-jax draws from
  NumPy's global generator, so it draws exactly what nerva-numpy draws for the same seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.judge.distributions import Law, check_draws, per_check
from libraries import BACKENDS, module, seed, to_numpy

pytestmark = pytest.mark.symbolic

D, K = 96, 48  # W is K x D: 4608 draws; D != K, so fan-in and fan-out differ by a factor 2

# Every string, with the documented law of the weights (None: no library should accept it).
LAWS = {
    "Uniform(a=-0.1,b=0.1)": Law.uniform(-0.1, 0.1),
    "Uniform(a=0.25, b=0.75)": Law.uniform(0.25, 0.75),
    "Normal(a=0.5,b=2)": Law.normal(0.5, 2.0),  # a: the mean, b: the standard deviation
    "Normal(a=1)": Law.normal(1.0, 1.0),  # b's default: 1
    "XavierUniform": Law.uniform(-math.sqrt(6 / (D + K)), math.sqrt(6 / (D + K))),
    "XavierNormal": Law.normal(0.0, math.sqrt(2 / (D + K))),
    "HeUniform": Law.uniform(-math.sqrt(6 / D), math.sqrt(6 / D)),
    "HeNormal": Law.normal(0.0, math.sqrt(2 / D)),
    "Zero": Law("zero"),
    "XavierNormal()": Law.normal(0.0, math.sqrt(2 / (D + K))),
    "Uniform(0.5)": Law.uniform(0.5, 0.5),  # one unnamed value binds both a and b
    "Uniform": None,  # a's default 0 cannot be used (docs/findings.md #31)
    "Uniform(b=0.5)": None,
    "Normal(mean=0,std=1)": None,  # the keys are a and b
    "Glorot": None,
}
RANDOM = [s for s, law in LAWS.items() if law is not None and (law.kind == "normal" or law.kind == "uniform" and law.lo < law.hi)]
CHECKS = len(BACKENDS) * len(RANDOM) + 1  # + the calibration test
ALPHA = per_check(CHECKS)

# docs/findings.md #30: in nerva-numpy, nerva-torch and
# nerva-jax set_layer_weights tests ``if func.name == 'XavierUniform'`` after the Uniform and
# Normal branches where ``elif`` was meant, so after drawing Uniform or Normal weights it falls
# through to ``else: raise RuntimeError('Could not parse weight initializer ...')``; nerva-tensorflow
# has the elif.
REFUSED = {spec: ("numpy", "torch", "jax") for spec in LAWS if spec.startswith(("Uniform(a", "Normal(a", "Uniform(0"))}
DIRECT = {"uniform": "weights_uniform", "normal": "weights_normal"}  # the documented draw functions


def outcome(name: str, spec: str):
    """(the layer after set_layer_weights, None) or (None, the message it raised)."""
    layer = module(name, "layers").LinearLayer(D, K)
    try:
        module(name, "weight_initializers").set_layer_weights(layer, spec)
    except Exception as e:  # the libraries raise RuntimeError; anything else is as much a refusal
        return None, f"{type(e).__name__}: {e}"
    return layer, None


def draw(name: str, spec: str, value: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) as the library initializes them from ``spec`` after seeding its generator with
    ``value``; where it refuses the string (``REFUSED``), W from its documented function."""
    seed(name, value)
    layer, refused = outcome(name, spec)
    if layer is not None:
        return to_numpy(layer.W), to_numpy(layer.b)
    law = LAWS[spec]
    fn = DIRECT[law.kind]
    init = module(name, "weight_initializers")
    W = module(name, "layers").LinearLayer(D, K).W
    seed(name, value)
    if name == "jax":  # JAX's arrays are immutable: its functions return the new values
        return to_numpy(getattr(init, fn)(W, law.lo, law.hi)), np.zeros(K)
    getattr(init, "set_" + fn)(W, law.lo, law.hi)
    return to_numpy(W), np.zeros(K)


@pytest.mark.parametrize("spec", list(LAWS))
def test_every_library_parses_what_another_accepts(spec, request):
    if spec in REFUSED:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{', '.join(REFUSED[spec])} refuse {spec!r}"))
    results = {name: outcome(name, spec)[1] for name in BACKENDS}
    refused = {name: msg for name, msg in results.items() if msg is not None}
    if LAWS[spec] is None:
        assert set(refused) == set(BACKENDS), f"{spec!r} accepted by {sorted(set(BACKENDS) - set(refused))}"
    else:
        assert not refused, f"{spec!r} refused by " + "; ".join(f"{n}: {m}" for n, m in refused.items())


@pytest.mark.parametrize("spec", list(REFUSED))
def test_the_refusals_replay(spec):
    """docs/findings.md #30, pinned: the three libraries refuse with the message of an unknown name, and
    nerva-tensorflow accepts."""
    for name in BACKENDS:
        layer, msg = outcome(name, spec)
        if name in REFUSED[spec]:
            assert msg == f'RuntimeError: Could not parse weight initializer "{spec}"', (name, msg)
        else:
            assert layer is not None, (name, msg)


def test_a_default_of_zero_cannot_be_used():
    """docs/findings.md #31, pinned: ``Uniform(b=0.5)`` and ``Uniform`` would take a's default 0, but
    FunctionCall.as_scalar treats a default of 0 as none, in all four."""
    for name in BACKENDS:
        for spec in ("Uniform", "Uniform(b=0.5)"):
            assert outcome(name, spec)[1] == 'RuntimeError: Could not find an argument named "a"', (name, spec)


@pytest.mark.parametrize("spec", [s for s, law in LAWS.items() if law is not None])
@pytest.mark.parametrize("name", BACKENDS)
def test_draws_follow_the_documented_law(name, spec):
    W, b = draw(name, spec)
    law = LAWS[spec]
    assert W.shape == (K, D) and W.dtype == np.float32, (W.shape, W.dtype)
    assert not np.any(b), f"{name} {spec}: the bias is not zero"
    if spec not in RANDOM and law.kind == "uniform":  # degenerate: every weight is that value
        assert np.all(W == np.float32(law.lo)), f"{name} {spec}: {np.unique(W)[:5]}"
        return
    problems = check_draws(W, law, ALPHA)
    assert not problems, f"{name} {spec}: not {law}: " + "; ".join(problems)


@pytest.mark.parametrize("factor", [1.5, 1 / 1.5])
@pytest.mark.parametrize("spec", ["XavierUniform", "HeNormal", "Normal(a=0.5,b=2)"])
@pytest.mark.parametrize("name", BACKENDS)
def test_a_wrong_variance_is_caught(name, spec, factor):
    """Power: the draws against the documented law with its variance multiplied by ``factor``.
    At these sizes a relative variance error of 1/3 is many standard errors beyond what the
    thresholds allow, so a miss is as unlikely as a false alarm."""
    W, _ = draw(name, spec)
    problems = check_draws(W, LAWS[spec].scaled(factor), ALPHA)
    assert any("variance" in p for p in problems), f"{name} {spec} x{factor:.3g}: not caught ({problems})"


def test_false_alarm_rate_is_at_most_the_stated_one():
    """Calibration: 400 samples that follow their law exactly (NumPy's generator), checked at a
    per-check probability of 0.05, fail at most as often as Binomial(400, 0.05) allows at this test's
    share of the suite's budget (ALPHA)."""
    from scipy import stats

    rng, n, alpha = np.random.default_rng(20), 500, 0.05
    laws = [Law.uniform(-0.3, 0.7), Law.normal(0.5, 2.0)]
    fired = 0
    for i in range(400):
        law = laws[i % 2]
        x = rng.uniform(law.lo, law.hi, n) if law.kind == "uniform" else rng.normal(law.lo, law.hi, n)
        fired += bool(check_draws(x, law, alpha))
    limit = stats.binom.isf(ALPHA, 400, alpha)
    assert fired <= limit, f"{fired} of 400 correct samples failed at 0.05 (at most {limit:.0f} allowed)"


@pytest.mark.parametrize("name", BACKENDS)
def test_the_same_seed_gives_the_same_draw(name):
    first, again, other = draw(name, "XavierNormal", 11)[0], draw(name, "XavierNormal", 11)[0], draw(name, "XavierNormal", 12)[0]
    assert np.array_equal(first, again), f"{name}: two draws after the same seed differ"
    assert not np.array_equal(first, other), f"{name}: seeds 11 and 12 draw the same weights"


@pytest.mark.parametrize("spec", ["XavierUniform", "HeNormal"])
def test_jax_draws_what_numpy_draws(spec):
    """nerva-jax draws from NumPy's global generator and rounds to float32 as nerva-numpy does."""
    assert np.array_equal(draw("numpy", spec, 5)[0], draw("jax", spec, 5)[0])


def test_a_fan_out_mix_up_is_caught_and_blamed_on_that_library(monkeypatch):
    """A planted bug: nerva-torch's HeNormal takes its standard deviation from the fan-out K
    instead of the fan-in D (the variance doubles here). Only torch's HeNormal draws are flagged.
    The other draws are those of test_draws_follow_the_documented_law (same seed, same draw), so
    this adds no false-alarm probability to the suite's."""
    init = module("torch", "weight_initializers")

    def fan_out(W):
        K, _ = W.shape
        W.data.normal_(0.0, math.sqrt(2.0 / K))

    monkeypatch.setattr(init, "set_weights_he_normal", fan_out)
    blamed = {(n, s) for n in BACKENDS for s in ("HeNormal", "XavierNormal") if check_draws(draw(n, s)[0], LAWS[s], ALPHA)}
    assert blamed == {("torch", "HeNormal")}, sorted(blamed)
