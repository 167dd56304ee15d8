"""A run's first optimiser steps in float64: what the code computes, apart from the CPU's rounding.

Some training is chaotic: domain-adversarial training at the study's settings ends anywhere
between 0.27 and 0.59 test accuracy for one seed, depending only on how the CPU's kernels round
float32 sums.  Its stored accuracy cannot be re-checked across kinds of CPU, but its first steps
can: in float64 with deterministic algorithms two CPUs agree to about 1e-11 over the first hundred
steps, while a changed sign, weight or skipped step moves them by orders of magnitude more.  A
:class:`Trajectory` rides along such a run, records the loss and the trainable parameters' sum
and sum of squares after each step, and stops it after ``steps``, or at the first step that leaves
a ``reference`` trajectory (the rest could only repeat that the run has changed).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

# a step's values agree within this fraction of max(1, |value|) when only the CPU differs (measured
# between AVX-512 and AVX2 kernels on DANN: 3e-15 at the first step, 2e-11 by step 100)
TOLERANCE = 1e-8


@dataclass
class Trajectory:
    """Loss, parameter sum and sum of squares after each of the first ``steps`` optimiser steps."""

    steps: int
    points: list = field(default_factory=list)
    dtype: torch.dtype = torch.float64
    reference: list | None = None

    def record(self, loss: float, params) -> bool:
        """Keep one step's values; False once ``steps`` are kept or the step leaves the reference
        (the run stops there)."""
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            point = [float(loss), float(flat.sum()), float(flat.square().sum())]
        self.points.append(point)
        step = len(self.points) - 1
        if self.reference is not None and step < len(self.reference) and _differs(self.reference[step], point):
            return False
        return len(self.points) < self.steps


def _differs(old: list, new: list, tolerance: float = TOLERANCE) -> bool:
    return any(abs(a - b) > tolerance * max(1.0, abs(a)) for a, b in zip(old, new))


def first_difference(stored: list, again: list, tolerance: float = TOLERANCE) -> int | None:
    """The first step (0-based) at which ``again`` leaves ``stored``; None when they agree
    (a trajectory cut short or run longer differs at the step where one of them ends)."""
    for step, (old, new) in enumerate(zip(stored, again)):
        if _differs(old, new, tolerance):
            return step
    return None if len(stored) == len(again) else min(len(stored), len(again))


@contextmanager
def deterministic():
    """Deterministic algorithms for the block, as they were afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
