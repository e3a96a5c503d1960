"""The bounds of the libraries' epoch statistics: ``compute_loss`` and ``compute_accuracy``.

Both run the model over a data loader batch by batch (nerva_*.training). ``compute_loss`` adds
each batch's loss (the sum over its rows, as the training step computes it) to a running total in
the dtype and divides by the number of examples N; its bound is the sum of the batches' bounds
(harness.judge.bounds.step_bounds, ``loss``), the rounding of each addition after the first (at
most ``u`` times the partial sum), and the rounding of the division, all divided by N as the
value is. ``compute_accuracy`` counts the rows whose largest output is the target's class: it is
exact where the outputs' bounds separate the largest output from the others, and where they do
not (a near tie), either answer is correct, so the bound is a range of counts.
"""

from __future__ import annotations

import numpy as np

from harness.judge.arithmetic import Arithmetic


def mean_loss_bound(dtype: str, losses: list[float], bounds: list[float], N: int) -> float:
    """The bound of ``sum(losses) / N`` accumulated in ``dtype``, each term within its bound."""
    ar = Arithmetic(dtype)
    partial = np.cumsum(np.abs(np.asarray(losses, dtype=np.float64)))  # |running sum| after each
    accumulate = float(np.sum(ar.local(partial[1:], random=False).worst)) if len(losses) > 1 else 0.0
    quotient = float(ar.local(abs(float(np.sum(losses))) / N, random=False).worst)
    return (float(np.sum(bounds)) + accumulate) / N + quotient


def accuracy_range(Y: np.ndarray, bound: np.ndarray, T: np.ndarray) -> tuple[int, int]:
    """(fewest, most) rows a correct implementation can count as right: Y the exact outputs,
    ``bound`` their rounding bounds, T the targets (the class is each row's argmax). A class
    *contends* in a row when its output's upper end reaches the largest lower end of the row."""
    Y, bound = np.asarray(Y, dtype=np.float64), np.broadcast_to(np.asarray(bound, dtype=np.float64), np.shape(Y))
    target = np.argmax(np.asarray(T), axis=1)
    contends = (Y + bound) >= np.max(Y - bound, axis=1, keepdims=True)
    rows = np.arange(Y.shape[0])
    possible = contends[rows, target]
    certain = possible & (contends.sum(axis=1) == 1)
    return int(certain.sum()), int(possible.sum())
