"""Trace keys, typed: a tensor name and the 1-based layer it belongs to, written once.

A trace (:data:`Trace`) maps key names to NumPy arrays: ``"Y"``, ``"DW2"``, ``"srelu3"``. Code
that needs the parts of a name asks :func:`parse` (never ``rstrip`` of digits); code that shows
a key to a person uses :attr:`Key.label` ("DW of layer 2"); code that stores one uses
:attr:`Key.name` ("DW2"). :data:`GRADIENT` maps each trainable parameter to its gradient's tensor.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

Trace = dict[str, np.ndarray]
"""One participant's tensors of one step, by key name, as NumPy copies in float64 or the run's dtype
(the judge reads them as float64: harness.judge.compare.float64)."""

GRADIENT = {"W": "DW", "b": "Db", "gamma": "Dgamma", "beta": "Dbeta", "srelu": "Dsrelu"}
"""The gradient of every trainable parameter (``W`` -> ``DW``)."""

_NAME = re.compile(r"^(.*?)(\d*)$")


class Key(NamedTuple):
    """A traced tensor: ``tensor`` ("DW", "Y", "W.v") and its layer (1-based; None for X, T, Y,
    DY, the loss)."""

    tensor: str
    layer: int | None = None

    @property
    def name(self) -> str:
        """The trace's key: ``DW2``, ``Y``."""
        return self.tensor if self.layer is None else f"{self.tensor}{self.layer}"

    @property
    def label(self) -> str:
        """What a person reads: ``DW of layer 2``, ``Y``."""
        return self.tensor if self.layer is None else f"{self.tensor} of layer {self.layer}"


def parse(name: str) -> Key:
    """The key of a trace name: ``"DW2"`` -> Key("DW", 2), ``"Y"`` -> Key("Y", None)."""
    tensor, digits = _NAME.match(name).groups()
    return Key(tensor, int(digits) if digits else None)


def key_name(key: tuple[str, int | None]) -> str:
    """The trace name of a (tensor, layer) pair."""
    return Key(*key).name
