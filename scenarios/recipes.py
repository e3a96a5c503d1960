"""Shape-free recipes for the arrays of a Hypothesis example (scenarios.strategies).

Arrays are drawn as *recipes* that do not depend on shapes (a pattern, a seed, a scale and a few
special elements at positions taken modulo the size); they become arrays once the shapes are
known. So deleting a layer or a step deletes its recipes with it, and the rest of the example
stays aligned while Hypothesis shrinks. Targets have recipes of their own, that suit the loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st

from harness.spec.state import as_dtype

TINY = {"float32": 1e-6, "float64": 1e-9}  # the "tiny" special element (never subnormal)


def many(draw: Any, element: st.SearchStrategy[Any], at_least: int, cap: int) -> list[Any]:
    """A list of ``at_least`` to ``cap`` elements, each further one with probability about 3/5.

    Unlike ``st.lists`` at its ``max_size``, a "more?" choice is drawn after the last element too,
    so deleting an element never shifts the meaning of the choices after the list.
    """
    items = [draw(element) for _ in range(at_least)]
    while True:
        more = draw(st.integers(0, 4)) >= 2
        if not more or len(items) >= cap:
            return items
        items.append(draw(element))


SPECIAL = ("zero", "one", "minus-one", "half", "tiny", "minus-tiny", "large", "minus-large", "two", "eighth")
POSITION = st.integers(0, 2**16 - 1)


class Recipe(NamedTuple):
    pattern: str
    seed: int
    scale: float
    specials: tuple[tuple[int, str], ...]  # (position modulo the size, special value)
    constant: float = 0.0


def recipe(patterns: tuple[str, ...], scales: tuple[float, ...]) -> st.SearchStrategy[Recipe]:
    @st.composite
    def draw_recipe(draw: Any) -> Recipe:
        pattern = draw(st.sampled_from(patterns))
        constant = draw(st.sampled_from([0.0, 1.0, 0.5, -1.0, 0.1]))  # the "constant" pattern's value
        seed = draw(st.integers(0, 2**16 - 1))
        scale = draw(st.sampled_from(scales))
        specials = tuple(many(draw, st.tuples(POSITION, st.sampled_from(SPECIAL)), 0, 3))
        return Recipe(pattern, seed, scale, specials, constant)

    return draw_recipe()


def special(name: str, dtype: str, large: float) -> float:
    return {"zero": 0.0, "one": 1.0, "minus-one": -1.0, "half": 0.5, "tiny": TINY[dtype], "minus-tiny": -TINY[dtype],
            "large": large, "minus-large": -large, "two": 2.0, "eighth": 0.125}[name]


def array(recipe: Recipe, shape: tuple[int, ...], dtype: str, large: float,
           init: tuple[str, float] | None = None) -> np.ndarray:
    """The array a recipe makes for ``shape``, exact in ``dtype`` (see the module docstring)."""
    rng = np.random.default_rng(recipe.seed)
    pattern = recipe.pattern
    if pattern == "init":  # the layer's weight initializer, as harness.spec.state draws it
        dist, s = init or ("normal", 1.0)
        a = rng.normal(0.0, s, shape) if dist == "normal" else rng.uniform(-s, s, shape) if dist == "uniform" \
            else np.zeros(shape)
    elif pattern == "normal":
        a = rng.standard_normal(shape)
    elif pattern == "uniform":
        a = rng.uniform(-1.0, 1.0, shape)
    elif pattern == "grid":  # quarters in [-2, 2]: exact sums, exact zeros, ties
        a = rng.integers(-8, 9, shape) / 4.0
    elif pattern == "integers":  # -2..2: many exact zeros and cancellations
        a = rng.integers(-2, 3, shape).astype(np.float64)
    elif pattern == "constant":
        a = np.full(shape, recipe.constant)
    elif pattern == "zeros":
        a = np.zeros(shape)
    elif pattern == "ones":
        a = np.ones(shape)
    else:
        raise ValueError(pattern)
    a = np.array(a * recipe.scale, dtype=np.float64)
    if a.size:
        flat = a.reshape(-1)
        for position, name in recipe.specials:
            flat[position % flat.size] = special(name, dtype, large)
    return as_dtype(a, dtype)


class TargetRecipe(NamedTuple):
    choice: int  # which of the loss's target kinds (modulo)
    seed: int
    alpha: float  # soft targets: the Dirichlet concentration
    scale: float  # real targets


TARGET = st.builds(TargetRecipe, st.integers(0, 2), st.integers(0, 2**16 - 1), st.sampled_from([1.0, 0.3, 5.0]),
                    st.sampled_from([1.0, 0.1, 10.0]))


def target_kinds(loss: str) -> tuple[str, ...]:
    """The targets that suit a loss (first = what shrinking reaches)."""
    if loss in ("CrossEntropy", "NegativeLogLikelihood", "SoftmaxCrossEntropy"):
        return ("onehot", "soft")
    if loss == "LogisticCrossEntropy":
        return ("binary", "soft", "onehot")
    return ("real", "onehot", "soft")


def targets(recipe: TargetRecipe, loss: str, N: int, K: int, dtype: str) -> tuple[np.ndarray, str]:
    kinds = target_kinds(loss)
    kind = kinds[recipe.choice % len(kinds)]
    rng = np.random.default_rng(recipe.seed)
    if kind == "onehot":
        T = np.eye(K)[rng.integers(0, K, size=N)]
    elif kind == "soft":  # rows of a Dirichlet draw (alpha 0.3: many near-zero entries)
        T = rng.dirichlet(np.full(K, recipe.alpha), size=N)
    elif kind == "binary":
        T = rng.integers(0, 2, size=(N, K)).astype(np.float64)
    else:
        T = rng.standard_normal((N, K)) * recipe.scale
    return as_dtype(T, dtype), kind
