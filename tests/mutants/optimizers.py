"""Optimizers (``optimizers``): GradientDescent, Momentum and Nesterov updates.

What a bug here changes first: the parameters after the update, in update order (``W1``,
``b1``, ``W2`` …). A bug in how the velocity carries over needs a velocity: step 0 starts from
v = 0, so it shows from the second step (step 1) on. relu-softmax's optimizers: layer 1
Momentum(0.9), layer 2 Nesterov(0.5), layer 3 GradientDescent; batchnorm-softmax-xent's: layers
1 and 2 Momentum(0.9), layer 3 Nesterov(0.5), layers 4 and 5 GradientDescent.
"""

from mutants import NOT_CAUGHT, Run, caught, mutant

RELU = Run("relu-softmax", "float32")
RELU3 = Run("relu-softmax", "float32", steps=3)


@mutant("numpy", RELU, caught(0, "W", 1))
def momentum_scales_gradient_by_mu(p):
    """Momentum's velocity ``mu * (v - eta * Dx)`` for ``mu * v - eta * Dx``: the parenthesis
    misplaced, so the gradient step is scaled by mu too."""
    opt = p.module("optimizers")

    def update(self, eta):
        self.delta_x = self.mu * (self.delta_x - eta * self.Dx)
        self.x += self.delta_x

    p.set(opt.MomentumOptimizer, "update", update)


@mutant("torch", RELU, caught(0, "W", 2))
def nesterov_with_old_velocity(p):
    """Nesterov's look-ahead with the velocity *before* its update: ``x += mu * v - eta * Dx``
    computed first, then ``v = mu * v - eta * Dx``."""
    opt = p.module("optimizers")

    def update(self, eta):
        self.x += self.mu * self.delta_x - eta * self.Dx
        self.delta_x = self.mu * self.delta_x - eta * self.Dx

    p.set(opt.NesterovOptimizer, "update", update)


@mutant("jax", Run("relu-softmax", "float32", "trajectory"), caught(1, "W", 1))
def momentum_velocity_reset(p):
    """Momentum's velocity reset at every update, ``v = -eta * Dx`` (``mu * v`` lost): plain
    gradient descent. At step 0 v is 0 anyway; from step 1 on the update is wrong."""
    opt = p.module("optimizers")

    def update(self, eta):
        x, Dx = getattr(self.obj, self.attr_x), getattr(self.obj, self.attr_Dx)
        self.delta_x = -eta * Dx
        setattr(self.obj, self.attr_x, x + self.delta_x)

    p.set(opt.MomentumOptimizer, "update", update)


@mutant("tensorflow", Run("relu-softmax", "float32", "trajectory"), caught(0, "W", 3))
def gradient_ascent(p):
    """GradientDescent's ``x.assign(x + eta * Dx)``: a sign error (ascent). Layer 3 is the first
    layer with plain gradient descent in update order."""
    opt = p.module("optimizers")
    p.set(opt.GradientDescentOptimizer, "update", lambda self, eta: self.x.assign(self.x + eta * self.Dx))


@mutant("torch", Run("batchnorm-softmax-xent", "float64"), caught(1, "W", 1))
def momentum_mu_in_float32(p):
    """Momentum's ``mu`` kept as ``torch.tensor(mu, dtype=torch.float32)``: in a float64 run the
    product with the float64 velocity is float64, but mu is 0.9 rounded to float32
    (0.89999998). It multiplies the velocity, which is 0 at step 0: the update of W1 is wrong
    from step 1 on."""
    import torch

    opt = p.module("optimizers")
    original = opt.MomentumOptimizer.__init__

    def __init__(self, x, Dx, mu):
        original(self, x, Dx, mu)
        self.mu = torch.tensor(mu, dtype=torch.float32)

    p.set(opt.MomentumOptimizer, "__init__", __init__)


@mutant("jax", RELU3, NOT_CAUGHT, benign=True)
def nesterov_bengio_form(p):
    """Nesterov in Bengio's form, ``x += (1 + mu) * v_new - mu * v_old``: algebraically equal to
    ``x += mu * v_new - eta * Dx`` (since ``-eta * Dx = v_new - mu * v_old``), rounded
    differently."""
    opt = p.module("optimizers")

    def update(self, eta):
        x, Dx = getattr(self.obj, self.attr_x), getattr(self.obj, self.attr_Dx)
        v_old = self.delta_x
        self.delta_x = self.mu * v_old - eta * Dx
        setattr(self.obj, self.attr_x, x + ((1 + self.mu) * self.delta_x - self.mu * v_old))

    p.set(opt.NesterovOptimizer, "update", update)


@mutant("numpy", RELU3, NOT_CAUGHT, benign=True)
def momentum_fused_multiply_add(p):
    """Momentum's ``mu * v - eta * Dx`` with one rounding instead of two, as a compiler's
    fused multiply-add contraction computes it: the float32 product ``mu * v`` is exact in
    float64, the sum is rounded once to float32."""
    import numpy as np

    opt = p.module("optimizers")

    def update(self, eta):
        step = eta * self.Dx  # rounded to the buffer's dtype, as released
        dtype = self.delta_x.dtype
        mu = np.asarray(self.mu, dtype=dtype).astype(np.float64)
        self.delta_x = (mu * self.delta_x.astype(np.float64) - step.astype(np.float64)).astype(dtype)
        self.x += self.delta_x

    p.set(opt.MomentumOptimizer, "update", update)
