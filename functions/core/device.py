"""Which device and how many CPU threads a computation uses, decided in one place."""
from __future__ import annotations

import os

import torch


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` or None: CUDA when present, else the CPU; any other name as torch spells it."""
    if name is None or (isinstance(name, str) and name == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_threads() -> int:
    """Use no more intra-op threads than this process may run on; containers often report the
    host's cores, and oversubscribed threads are slower than fewer.  ``OMP_NUM_THREADS`` wins."""
    if "OMP_NUM_THREADS" not in os.environ and hasattr(os, "sched_getaffinity"):
        available = len(os.sched_getaffinity(0))
        if torch.get_num_threads() > available:
            torch.set_num_threads(available)
    return torch.get_num_threads()
