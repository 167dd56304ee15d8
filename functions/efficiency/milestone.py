"""The benchmark's rules, free of any model: the seeded stream every method sees, the milestone
(samples seen when validation accuracy has stayed at or above a threshold for a window of
evaluations) and the relative efficiency of two milestones."""
from __future__ import annotations

import numpy as np


def stream_order(seed: int, pool_size: int, max_samples: int) -> np.ndarray:
    """The training samples every method sees, in order: a seeded draw without replacement."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    return rng.permutation(pool_size)[:max_samples]


def milestone(samples, accuracy, threshold: float = 0.8, window: int = 10) -> int | None:
    """Samples seen at the END of the first run of ``window`` consecutive evaluations with accuracy
    ``>= threshold``; None if no such run.  A dip below the threshold restarts the count."""
    run = 0
    for seen, acc in zip(samples, accuracy):
        run = run + 1 if acc >= threshold else 0
        if run == window:
            return int(seen)
    return None


def relative_efficiency(baseline_milestone: int | None, method_milestone: int | None) -> float | None:
    if baseline_milestone is None or method_milestone is None:
        return None
    return baseline_milestone / method_milestone
