"""nerva-tensorflow: tf.Variables assigned in place; float64 rebinds the float32 constructors."""

import contextlib
import functools

import numpy as np

from adapters.nerva_driver import NervaAdapter
from harness.core.process import cpu_only, quiet_stderr


class TensorflowAdapter(NervaAdapter):
    name, package, framework = "tensorflow", "nerva_tensorflow", "tensorflow"

    def setup(self):
        cpu_only()
        with quiet_stderr():
            import tensorflow as tf

        self.tf = tf

    def array(self, a, dtype):
        return self.tf.constant(np.asarray(a, dtype=dtype))

    def buffer(self, a, dtype):
        return self.tf.Variable(self.array(a, dtype))

    def write(self, obj, attr, a):
        target = getattr(obj, attr)
        target.assign(np.asarray(a, dtype=target.dtype.as_numpy_dtype))

    def copy(self, x, dtype=None):
        return np.array(x.numpy() if hasattr(x, "numpy") else x, dtype=dtype)

    @contextlib.contextmanager
    def precision(self, dtype):
        # BatchNormalization's backward builds identity(N) and ones(N, N) as float32 constants.
        import nerva_tensorflow.layers as layers
        import nerva_tensorflow.matrix_operations as ops

        saved = {name: getattr(layers, name) for name in ("identity", "ones", "zeros")}
        if dtype == "float64":
            for name in saved:
                setattr(layers, name, functools.partial(getattr(ops, name), dtype=self.tf.float64))
        try:
            yield
        finally:
            for name, fn in saved.items():
                setattr(layers, name, fn)
