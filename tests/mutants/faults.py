"""Faults: a backend that raises in the middle of a run, and one that returns NaN from one step
on. The runner reports the first as that backend's failure (the others go on), the comparator
the second as a non-finite value where the exact one is finite.
"""

from mutants import RAISED, Run, caught, mutant


@mutant("tensorflow", Run("relu-softmax", "float32", "trajectory"), caught(1, RAISED))
def nesterov_previous_velocity_not_a_variable(p):
    """Nesterov keeps the previous velocity for a restart heuristic: ``self.previous =
    self.delta_x`` at the first update, ``self.previous.assign(self.delta_x)`` afterwards. But
    ``delta_x`` is a ``tf.Tensor``, not a ``tf.Variable``: the second update (step 1) raises
    AttributeError."""
    opt = p.module("optimizers")
    original = opt.NesterovOptimizer.update

    def update(self, eta):
        if hasattr(self, "previous"):
            self.previous.assign(self.delta_x)
        else:
            self.previous = self.delta_x
        original(self, eta)

    p.set(opt.NesterovOptimizer, "update", update)


@mutant("torch", Run("srelu-nll", "float64", "trajectory"), caught(1, "Y"))
def softmax_layer_nan_from_second_step(p):
    """From the second call on, the Softmax layer divides by a cached normalizer that was made
    with ``torch.empty`` (uninitialised; here NaN) where ``torch.zeros`` and a first-step fill
    were meant: the first step is right, the output Y is NaN from step 1 on."""
    import torch

    layers = p.module("layers")
    original = layers.SoftmaxLayer.feedforward

    def feedforward(self, X):
        Y = original(self, X)
        if getattr(self, "calls", 0) > 0:
            Y = Y / torch.full_like(Y[:, :1], float("nan"))
        self.calls = getattr(self, "calls", 0) + 1
        return Y

    p.set(layers.SoftmaxLayer, "feedforward", feedforward)
