"""What a run costs: FLOPs counted by torch, wall time, peak memory, energy and emissions per phase.

Energy comes from codecarbon's offline tracker: read from power counters where the machine has
them (RAPL, powermetrics, NVML for NVIDIA GPUs), otherwise estimated from the CPU's TDP scaled by
its load plus a RAM model; :attr:`CostMeter.energy_source` says which.  Emissions are that energy
times the carbon intensity of the country's grid, from codecarbon's bundled tables (no network).
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from contextlib import contextmanager

import psutil
import torch
from codecarbon import OfflineEmissionsTracker
from codecarbon.input import DataSource
from torch.utils.flop_counter import FlopCounterMode

from ..core.errors import DataError

MB = 2 ** 20
SAMPLE_INTERVAL_S = 0.01
# CPU modes in which codecarbon reads energy counters instead of estimating from the TDP
MEASURED_CPU_MODES = {"intel_rapl": "RAPL power counters", "windows_emi": "the Windows Energy Meter (RAPL)",
                      "intel_power_gadget": "Intel Power Gadget"}


def count_flops(fn, *args, **kwargs) -> int:
    """Floating-point operations of one call ``fn(*args, **kwargs)``, counted by torch's
    FlopCounterMode (matrix products and convolutions, forward and any backward inside)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def fine_tuning_passes(backbone, net) -> tuple[int, int, int]:
    """FLOPs per image of a fine-tuning network's three passes: through its frozen prefix, forward
    through the trainable stages and head, and a forward and backward step of them."""
    x = backbone.adapt(torch.zeros(1, backbone.channels, 8, 8))
    with torch.no_grad():
        prefix = count_flops(backbone.run, x, 0, net.frozen)
        h = backbone.run(x, 0, net.frozen)
        forward = count_flops(net.from_stage, h, net.frozen)
    step = count_flops(lambda v: net.from_stage(v, net.frozen).sum().backward(), h)
    net.zero_grad(set_to_none=True)
    return prefix, forward, step


def fine_tuning_flops(passes: tuple[int, int, int], n_train: int, n_val: int, epochs: int,
                      passes_per_epoch: int = 1) -> int:
    """What fine-tuning costs, from :func:`fine_tuning_passes`: the frozen prefix once per training
    and validation image; a forward and backward step per training image, pass over them and
    epoch; a forward pass per validation image and epoch and per training image at the end."""
    prefix, forward, step = passes
    return (prefix * (n_train + n_val) + step * n_train * passes_per_epoch * epochs +
            forward * (n_val * epochs + n_train))


def _describe_hardware(hardware: list) -> tuple[str, bool]:
    """A sentence saying where codecarbon's energy numbers come from, and whether the CPU's
    share is an estimate rather than a reading (codecarbon tells this only through its hardware
    objects' attributes)."""
    parts, estimated = [], False
    for device in hardware:
        kind, mode = type(device).__name__, getattr(device, "_mode", None)
        if kind == "CPU" and mode in MEASURED_CPU_MODES:
            parts.append(f"CPU measured by {MEASURED_CPU_MODES[mode]}")
        elif kind == "CPU":
            estimated = True
            scaling = "scaled by its load" if mode == "cpu_load" else "as constant power"
            parts.append(f"CPU estimated from its TDP ({device._tdp} W, {device._model}) {scaling}, "
                         f"no power counters on this machine")
        elif kind == "GPU":
            parts.append("GPU measured by its driver (NVML or AMD SMI)")
        elif kind == "AppleSiliconChip":
            parts.append(f"{device.chip_part} measured by powermetrics")
        elif kind == "Raspberry":
            parts.append(f"{device.chip_part} measured by the board's power chip")
        elif kind == "RAM":
            parts.append("RAM estimated from its size")
    return "; ".join(parts), estimated


class _Swallowed(logging.Filter):
    """Keeps, unprinted, what codecarbon logs while it starts, and the exception its constructor
    logs instead of raising."""

    error: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            self.error = record.exc_info[1]
        return False


@contextmanager
def _swallowed():
    """Silence codecarbon while it starts; afterwards it prints errors only."""
    logger, swallowed = logging.getLogger("codecarbon"), _Swallowed()
    logger.setLevel(logging.WARNING)
    logger.addFilter(swallowed)
    try:
        yield swallowed
    finally:
        logger.removeFilter(swallowed)
        logger.setLevel(logging.ERROR)


class PeakRss:
    """Peak resident memory of this process, sampled by a background thread."""

    def __init__(self):
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._process.memory_info().rss) / MB


class Phase:
    """One measured stretch of a run.  Set :attr:`flops` inside the block when it is known."""

    def __init__(self, name: str):
        self.name = name
        self.flops: int | None = None
        self._measured: dict | None = None

    def record(self) -> dict:
        """``<name>_seconds``, ``_peak_memory_mb``, ``_energy_kwh``, ``_emissions_kg``, ``_flops``
        (and ``_peak_cuda_memory_mb`` when CUDA is in use)."""
        if self._measured is None:
            raise DataError(f"phase {self.name!r} has not ended: call record() after its with-block")
        return {f"{self.name}_{key}": value for key, value in {**self._measured, "flops": self.flops}.items()}


class CostMeter:
    """One per process, held by the driver: codecarbon measures the whole machine, so two meters
    in one process would count the same watts twice.  Use it as a context manager, or call
    :meth:`stop`."""

    def __init__(self, country_iso_code: str = "FRA"):
        """``country_iso_code``: the grid whose carbon intensity turns energy into emissions
        (France's is about 56 gCO2/kWh, the world average several times more)."""
        if country_iso_code not in DataSource().get_global_energy_mix_data():
            raise DataError(f"codecarbon has no carbon intensity for country {country_iso_code!r}; "
                            f"give a 3-letter ISO code such as FRA, DEU or USA")
        # explicit settings win over any .codecarbon.config: nothing is written, no lock file
        # (its lock also replaces the SIGINT handler), and hardware files go to the temp folder
        with _swallowed() as swallowed:
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=country_iso_code, output_methods=[], log_level="warning",
                allow_multiple_runs=True, output_dir=tempfile.gettempdir())
        if swallowed.error is not None:
            raise DataError(f"codecarbon's tracker failed to start ({swallowed.error!r}); check "
                            f"~/.codecarbon.config, ./.codecarbon.config and CODECARBON_* "
                            f"environment variables") from swallowed.error
        self._tracker.get_detected_hardware()
        self.country_iso_code = country_iso_code
        self.energy_source, self.estimated = _describe_hardware(self._tracker._hardware)
        self._active: str | None = None
        self._stopped = False

    @contextmanager
    def phase(self, name: str):
        """Measure the block: wall time, peak memory, energy and emissions; yields a :class:`Phase`."""
        if self._stopped:
            raise DataError(f"phase {name!r} asked of a stopped CostMeter; make a new one")
        if self._active is not None:
            raise DataError(f"phase {name!r} started inside phase {self._active!r}; phases run one "
                            f"after another, not nested")
        phase, cuda = Phase(name), torch.cuda.is_available() and torch.cuda.is_initialized()
        self._active = name
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        memory = PeakRss()
        self._tracker.start_task(name)
        start = time.perf_counter()
        try:
            yield phase
        finally:
            seconds = time.perf_counter() - start
            energy = self._tracker.stop_task()  # None when codecarbon could not start the task
            phase._measured = {"seconds": seconds, "peak_memory_mb": memory.stop(),
                               "energy_kwh": energy.energy_consumed if energy else None,
                               "emissions_kg": energy.emissions if energy else None}
            if cuda:
                phase._measured["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated() / MB
            self._active = None

    def stop(self) -> None:
        """Stop codecarbon's threads; the meter measures nothing after this."""
        if not self._stopped:
            self._stopped = True
            self._tracker.stop()

    def __enter__(self) -> CostMeter:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
