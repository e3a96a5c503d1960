"""Process-wide settings applied before a framework is first imported: CPU only, quiet logs."""

import contextlib
import os
import sys
from typing import Iterator


def cpu_only() -> None:
    """The harness runs on the CPU by default (set NERVA_CONSISTENCY_GPU=1 to leave devices alone)."""
    if os.environ.get("NERVA_CONSISTENCY_GPU") == "1":
        return
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence what C++ libraries write to file descriptor 2 while importing (TensorFlow's
    absl and CUDA probing lines); Python exceptions still propagate normally."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
