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


# Images per chunk of a forward pass that only infers (evaluation, feature extraction, frozen
# prefixes).  Measured with 2 threads on this project's 2-core CPU VM (eval mode, no grad, images
# per second at chunks of 16 / 64 / 256 / 1024): the quick study CNN on 28 px, 1601 / 1567 / 1152 /
# 1113; EfficientNet-Lite0 on 96 px, 418 / 373 / 259 / 215, and on 224 px, 76 / 42 / 28 / 15:
# small chunks keep the activations in the processor's caches.  CUDA is not measured here: a
# GPU needs large batches to fill it, so it takes the largest size measured.
FORWARD_CHUNK = {"cpu": 16, "cuda": 1024}


def forward_chunk(device: str | torch.device) -> int:
    """Images per chunk of an inference pass on ``device`` (see :data:`FORWARD_CHUNK`).  The
    outputs do not depend on it: in eval mode an image's outputs are the same, bit for bit, at
    chunks of 16 to 1024 (checked on this CPU for the study CNN, EfficientNet-Lite0 and ResNet-18)."""
    return FORWARD_CHUNK.get(torch.device(device).type, FORWARD_CHUNK["cpu"])
