"""What a run built by the libraries themselves (``--build nerva``, adapters/nerva_native.py)
exercises and the harness's own build never calls: the data loader, the weights file, the
initializer parser and the learning-rate scheduler. Each bug is in one library; the run takes
every backend's batches from its own ``create_npz_dataloaders``, its parameters through its own
``load_weights_and_bias`` (checked against the file), its model from its own parser and its
rates from its own scheduler (checked against the formula), so each is blamed on that library.
"""

from mutants import RAISED, Run, caught, mutant

NATIVE = Run("relu-softmax", "float32", "trajectory", 2, build="nerva")


@mutant("torch", NATIVE, caught(0, "X"))
def loader_skips_the_first_batch(p):
    """``DataLoader.__iter__`` starts at the second batch: ``range(self.batch_size, N,
    self.batch_size)`` where ``range(0, N, self.batch_size)`` was meant, so every epoch begins
    one batch late (and is one batch short)."""
    datasets = p.module("datasets")

    def __iter__(self):
        N = self.Xdata.shape[0]
        for start in range(self.batch_size, N, self.batch_size):
            batch = slice(start, min(start + self.batch_size, N))
            T = self.Tdata[batch]
            yield self.Xdata[batch], datasets.to_one_hot(T, self.num_classes) if self.num_classes else T

    p.set(datasets.DataLoader, "__iter__", __iter__)


@mutant("tensorflow", NATIVE, caught(None, RAISED))
def load_weights_skips_softmax_layers(p):
    """``load_weights_and_bias`` tests ``isinstance(layer, ActivationLayer)`` where ``LinearLayer``
    was meant: a Softmax (or Linear) output layer is not an ActivationLayer, so it keeps the
    weights its own initializer drew instead of the file's."""
    mlp, layers = p.module("multilayer_perceptron"), p.module("layers")
    original = mlp.MultilayerPerceptron.load_weights_and_bias

    def load_weights_and_bias(self, filename):
        every = self.layers
        self.layers = [layer for layer in every if isinstance(layer, layers.ActivationLayer)]
        try:
            original(self, filename)
        finally:
            self.layers = every

    p.set(mlp.MultilayerPerceptron, "load_weights_and_bias", load_weights_and_bias)


@mutant("jax", NATIVE, caught(None, RAISED))
def initializer_name_misspelt(p):
    """``set_layer_weights`` compares ``func.name == 'HeUnifrom'``: the spec string
    ``HeUniform``, which the other three libraries accept, falls through the if/elif chain to
    "Could not parse weight initializer" (the released libraries have a bug of this kind for
    ``Uniform(…)`` and ``Normal(…)``: an ``if`` where ``elif`` was meant)."""
    layers = p.module("layers")
    original = layers.set_layer_weights

    def set_layer_weights(layer, text):
        if text == "HeUniform":
            raise RuntimeError(f'Could not parse weight initializer "{text}"')
        return original(layer, text)

    p.set(layers, "set_layer_weights", set_layer_weights)


@mutant("numpy", NATIVE, caught(0, RAISED))
def constant_rate_rounded_to_float32(p):
    """``ConstantScheduler.__call__`` returns ``np.float32(self.lr)``: the rate the optimizers get
    is the float32 nearest to 0.05, not the Python float the spec gives (the others' updates use
    the double)."""
    import numpy as np

    learning_rate = p.module("learning_rate")
    p.set(learning_rate.ConstantScheduler, "__call__", lambda self, epoch: float(np.float32(self.lr)))
