"""The judgement: the rounding bound (docs/rounding.md), the kink scan and the verdict of every tensor of a step, as pure functions."""
