"""nerva-torch: tensors updated in place; float64 needs torch's default dtype while it runs."""

import contextlib
import warnings

import numpy as np

from adapters.nerva_driver import NervaAdapter
from harness.core.process import cpu_only


class TorchAdapter(NervaAdapter):
    name, package, framework = "torch", "nerva_torch", "torch"

    def setup(self):
        cpu_only()
        import torch

        self.torch = torch
        # nerva-torch 1.0.0's BatchNormalization transposes a vector (`R.T` on 1-D); torch warns
        # on every call. The result is right; the warning is noise in a consistency report.
        warnings.filterwarnings("ignore", message="The use of `x.T` on tensors of dimension other than 2",
                                category=UserWarning)

    def array(self, a, dtype):
        return self.torch.tensor(np.asarray(a), dtype=getattr(self.torch, dtype))

    def write(self, obj, attr, a):
        target = getattr(obj, attr)
        with self.torch.no_grad():
            target.copy_(self.torch.as_tensor(np.asarray(a), dtype=target.dtype))

    def copy(self, x, dtype=None):
        return np.array(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=dtype)

    @contextlib.contextmanager
    def precision(self, dtype):
        # identity(N), ones(N, N) and friends follow the default dtype (docs/nerva-api.md).
        previous = self.torch.get_default_dtype()
        self.torch.set_default_dtype(getattr(self.torch, dtype))
        try:
            yield
        finally:
            self.torch.set_default_dtype(previous)
