"""Process-wide settings applied before a framework is first imported: CPU only, quiet logs."""

import os


def cpu_only() -> None:
    """The harness runs on the CPU by default (set NERVA_CONSISTENCY_GPU=1 to leave devices alone)."""
    if os.environ.get("NERVA_CONSISTENCY_GPU") == "1":
        return
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
