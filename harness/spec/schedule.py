"""Learning-rate schedulers as the Nerva libraries parse and evaluate them (``learning_rate.py``).

``--learning-rate`` takes what ``tools/mlp.py`` takes: a number (an extension: the same as
``Constant(number)``) or one of the libraries' five schedulers, written as their
``parse_learning_rate`` reads them (positional numbers only; MultiStepLR's three parts are
separated by ``;``, its milestones by ``,``):

    Constant(lr)                          eta(e) = lr
    TimeBased(lr,decay)                   eta(e) = eta(e-1) / (1 + decay * e), eta(0) = lr
    StepBased(lr,drop_rate,change_rate)   eta(e) = lr * drop_rate ** floor((1 + e) / change_rate)
    MultiStepLR(lr;m1,m2,...;gamma)       eta(e) = lr * gamma ** (number of leading milestones <= e)
    Exponential(lr,change_rate)           eta(e) = lr * exp(-change_rate * e)

``e`` is the epoch, counted from 0. The libraries' training loop asks for the rate once at the
start of every epoch (and once more for epoch 0 before the first): :meth:`Schedule.eta` makes
exactly the same Python floats in the same order (TimeBased keeps its rate between calls, so
epoch e's rate is the running quotient, not a closed form; StepBased already drops at epoch 0
when ``change_rate`` is 1, as the libraries do). Numbers are checked here: every one finite, the
rate above 0, ``decay`` and ``change_rate`` at least 0 (a negative one makes the rate grow
without bound or divides by zero), StepBased's ``change_rate`` above 0, ``drop_rate`` and
``gamma`` above 0, milestones whole numbers in increasing order (the libraries stop at the
first milestone not yet reached, so an unsorted list silently skips the later ones).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from harness.core.errors import SpecError
from harness.spec import rules

SCHEDULERS = {
    "Constant": ("lr",),
    "TimeBased": ("lr", "decay"),
    "StepBased": ("lr", "drop_rate", "change_rate"),
    "MultiStepLR": ("lr", "milestones", "gamma"),
    "Exponential": ("lr", "change_rate"),
}
EXAMPLE = "0.01, Constant(0.01), TimeBased(0.1,0.001), StepBased(0.1,0.5,10), MultiStepLR(0.1;1,3,5;0.1) " \
          "or Exponential(0.1,0.05)"
_TEXT = re.compile(r"^\s*([A-Za-z]+)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Schedule:
    """One scheduler: its name, rate and numbers (MultiStepLR: its milestones apart)."""

    name: str
    lr: float
    args: tuple[float, ...] = ()
    milestones: tuple[int, ...] = ()

    def __str__(self) -> str:
        lr = number_text(self.lr)
        if self.name == "MultiStepLR":
            return f"MultiStepLR({lr};{','.join(map(str, self.milestones))};{number_text(self.args[0])})"
        return f"{self.name}(" + ",".join([lr, *map(number_text, self.args)]) + ")"

    def rates(self, epochs: int) -> list[float]:
        """The rate of each of the first ``epochs`` epochs, made as the libraries make them."""
        out, lr = [], self.lr
        for epoch in range(epochs):
            if self.name == "TimeBased":
                lr = lr / (1 + self.args[0] * float(epoch))
                out.append(lr)
            else:
                out.append(self._closed(epoch))
        return out

    def eta(self, epoch: int) -> float:
        """The rate of epoch ``epoch`` (0-based), bit for bit the libraries' float."""
        return self.rates(epoch + 1)[-1] if self.name == "TimeBased" else self._closed(epoch)

    def _closed(self, epoch: int) -> float:
        if self.name == "Constant":
            return self.lr
        if self.name == "StepBased":
            drop, change = self.args
            return self.lr * math.pow(drop, math.floor((1.0 + epoch) / change))
        if self.name == "MultiStepLR":
            eta = self.lr
            for milestone in self.milestones:
                if epoch < milestone:
                    break
                eta *= self.args[0]
            return eta
        return self.lr * math.exp(-self.args[0] * float(epoch))


def number_text(value: float) -> str:
    """A number as the schedule's text writes it (``repr``: it reads back to the same float)."""
    return repr(float(value))


def _number(text: str, what: str, param: str) -> float:
    """One number of a scheduler; ``param=number`` is read too (an extension: the libraries take
    positional numbers only)."""
    key, eq, value_text = text.partition("=")
    if eq and key.strip() == param:
        text = value_text
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"learning rate {what!r}: {text.strip()!r} is not a number; write e.g. {EXAMPLE}") from None
    return rules.finite(value, f"learning rate {what!r}", EXAMPLE)


def parse_schedule(text: str) -> Schedule:
    """A ``--learning-rate`` value: a number or a scheduler, checked (module docstring)."""
    text = str(text)
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        return Schedule("Constant", rules.learning_rate(value, text))
    m = _TEXT.match(text)
    if not m or m.group(1) not in SCHEDULERS:
        raise SpecError(f"learning rate {text!r} is not a number or a scheduler; write e.g. {EXAMPLE}")
    name, inner = m.group(1), m.group(2)
    params = SCHEDULERS[name]
    parts = inner.split(";") if name == "MultiStepLR" else inner.split(",")
    if len(parts) != len(params):
        sep = ";" if name == "MultiStepLR" else ","
        raise SpecError(f"learning rate {text!r}: {name} takes {len(params)} part(s) separated by {sep!r} "
                        f"({sep.join(params)}), as the libraries parse it")
    lr = rules.learning_rate(_number(parts[0], text, "lr"), text)
    if name == "MultiStepLR":
        milestones = tuple(_milestones(parts[1], text))
        return Schedule(name, lr, (_positive(_number(parts[2], text, "gamma"), "gamma", text),), milestones)
    args = [_number(p, text, param) for p, param in zip(parts[1:], params[1:])]
    for param, value in zip(params[1:], args):
        if param == "drop_rate" or (name == "StepBased" and param == "change_rate"):
            _positive(value, param, text)
        elif value < 0:
            raise SpecError(f"learning rate {text!r}: {param} = {value!r} is negative; give 0 or more")
    return Schedule(name, lr, tuple(args))


def _positive(value: float, param: str, text: str) -> float:
    if not value > 0:
        raise SpecError(f"learning rate {text!r}: {param} = {value!r} must be above 0")
    return value


def _milestones(part: str, text: str) -> list[int]:
    out: list[int] = []
    for item in rules.items(part, part.split(","), f"milestones of learning rate {text!r}", ",", "1,3,5"):
        if not re.fullmatch(r"\d+", item):
            raise SpecError(f"learning rate {text!r}: milestone {item!r} is not a whole number of epochs (0 or more)")
        if out and int(item) <= out[-1]:
            raise SpecError(f"learning rate {text!r}: milestones must increase (the libraries stop at the first "
                            f"one not yet reached, so {item} after {out[-1]} would never count)")
        out.append(int(item))
    return out
