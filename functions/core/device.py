"""Which device and how many CPU threads a computation uses, decided in one place."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np
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


def describe_machine() -> dict:
    """What a measured time depends on: the processor and its vector unit (AVX2, AVX-512: float
    results round differently between them), cores, threads, library versions, and the load when
    the measurement began."""
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
