"""Loss functions (``loss_functions``): the matrix forms the loss objects call at run time.

What a bug here changes first: a wrong gradient ``DY`` (the last forward tensor; the loss value
before it is right), a wrong value ``loss``.
"""

from mutants import NOT_CAUGHT, Run, caught, mutant


@mutant("numpy", Run("leaky-logsoftmax", "float32", "trajectory"), caught(0, "DY"))
def squared_error_gradient_sign(p):
    """SquaredError's gradient ``2 * (T - Y)`` for ``2 * (Y - T)``: a sign error."""
    losses = p.module("loss_functions")
    p.set(losses, "Squared_error_loss_gradient", lambda Y, T: 2 * (T - Y))


@mutant("torch", Run("nll-soft", "float64"), caught(0, "DY"))
def nll_gradient_one_hot_shortcut(p):
    """NegativeLogLikelihood's gradient as ``-T / Y``: right for one-hot targets (where
    ``rows_sum(Y * T)`` is the one Y a target picks) but not for soft targets, which it ignores."""
    losses = p.module("loss_functions")
    p.set(losses, "Negative_log_likelihood_loss_gradient", lambda Y, T: -T / Y)


@mutant("tensorflow", Run("sigmoid-logistic", "float32"), caught(0, "DY"))
def logistic_gradient_of_binary_cross_entropy(p):
    """LogisticCrossEntropy's gradient written as the familiar ``sigmoid(Y) - T`` of binary
    cross-entropy, not of Nerva's loss ``-T log(sigmoid(Y))``, whose gradient is
    ``T * sigmoid(Y) - T``: they agree only where T is 1."""
    losses = p.module("loss_functions")
    p.set(losses, "Logistic_cross_entropy_loss_gradient", lambda Y, T: losses.Sigmoid(Y) - T)


@mutant("jax", Run("relu-softmax", "float64"), caught(0, "DY"))
def cross_entropy_gradient_epsilon(p):
    """CrossEntropy's gradient ``-T / (Y + 1e-7)``: an epsilon "for safety" in the division, a
    relative error of 1e-7 / Y (about 1e-6 for the probabilities of an untrained network). In
    float32 that is within the rounding Y carries from the layers below (docs/mutants.md); the
    float64 run sees it."""
    losses = p.module("loss_functions")
    p.set(losses, "Cross_entropy_loss_gradient", lambda Y, T: -T / (Y + 1e-7))


@mutant("numpy", Run("kink-ties", "float32"), NOT_CAUGHT, benign=True)
def absolute_error_gradient_right_at_ties(p):
    """AbsoluteError's gradient with ``where(Y - T >= 0, 1, -1)`` for ``sign(Y - T)``: the
    right-hand derivative +1 exactly at Y = T instead of sign(0) = 0, another convention at the
    kink. kink-ties starts with Y = 0 against one-hot targets, so most of Y - T is exactly 0:
    the comparator reports conventions there, never a failure. (AbsoluteError is the harness's
    custom loss: the patch replaces nerva-numpy's implementation in its declaration,
    ``adapters.extensions.ABSOLUTE_ERROR``.)"""
    import numpy as np

    from adapters import extensions

    original = extensions.ABSOLUTE_ERROR["numpy"]

    def right_hand():
        class RightHand(type(original())):
            def gradient(self, Y, T):
                return np.where(Y - T >= 0, 1.0, -1.0).astype(Y.dtype)

        return RightHand()

    p.set(extensions, "ABSOLUTE_ERROR", {**extensions.ABSOLUTE_ERROR, "numpy": right_hand})
