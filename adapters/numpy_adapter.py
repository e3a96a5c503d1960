"""nerva-numpy: ndarrays updated in place; the optimizers hold the arrays themselves."""

import numpy as np

from harness.nerva_driver import NervaAdapter


class NumpyAdapter(NervaAdapter):
    name, package, framework, xp = "numpy", "nerva_numpy", "numpy", np

    def array(self, a, dtype):
        return np.array(a, dtype=dtype)

    def write(self, obj, attr, a):
        getattr(obj, attr)[...] = a
