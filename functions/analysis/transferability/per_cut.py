"""Scores of a source model at every cut point: the activation entering each block, scored in one pass.

The blocks run once per chunk of images (:mod:`functions.runs.cut_passes`), which hands each
cut point's activation to :class:`CutScores`: scored global-average pooled and flattened, from
running sums when there are more images than dimensions.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...core.errors import DataError
from .scores import (FEATURE_KINDS, check_labels, FeatureStats, hscore_spectrum_from_samples,
                     hscore_spectrum_from_stats, hscore_value, log_evidence, logme_spectrum_from_samples,
                     logme_spectrum_from_stats, leep, nce)


def _flat_grid(shape, max_dim: int):
    """Spatial size to average-pool an activation to before flattening, so that at most
    ``max_dim`` values remain (None: flatten as is)."""
    channels, height, width = shape
    if channels * height * width <= max_dim:
        return None
    side = max(1, math.isqrt(max_dim // channels))
    return min(height, side), min(width, side)


def _scores_of(sink, y: np.ndarray, num_classes: int) -> dict:
    """LogME and both H-scores of collected rows (few samples) or of running sums (many)."""
    if isinstance(sink, FeatureStats):
        log_spec, h_spec = logme_spectrum_from_stats(sink), hscore_spectrum_from_stats(sink)
    else:
        f = np.concatenate(sink)
        log_spec = logme_spectrum_from_samples(f, y, num_classes)
        h_spec = hscore_spectrum_from_samples(f, y, num_classes)
    return {"logme": float(log_evidence(*log_spec).mean()), "hscore": hscore_value(*h_spec, shrink=False),
            "hscore_shrink": hscore_value(*h_spec, shrink=True)}


class CutScores:
    """Transferability of the activations entering each block of a source model, for the target
    labels ``y``: fed chunk by chunk by the pass over the network (:func:`functions.runs.cut_passes.pass_per_cut`,
    which :func:`functions.notebooks.study.cut_scores` runs), scored by :meth:`table`.

    Row k of the table describes the activation entering block k (0: the image; depth: the last
    block's output), both global-average-pooled (``*_gap``) and flattened (``*_flat``; activations
    with more than ``max_dim`` values are first average-pooled to the finest spatial grid that
    fits, and ``flat_dim`` says what was scored), each scored with LogME, H-score and shrinkage
    H-score.  ``leep`` and ``nce`` come from the source head's softmax on the same images; they
    describe the whole source model, so they are equal in every row.
    """

    def __init__(self, shapes: list[tuple], y, max_dim: int = 4096):
        self.y, self.num_classes = check_labels(y, len(y), "split.y")
        if not (isinstance(max_dim, int) and max_dim >= 1):
            raise DataError(f"max_dim={max_dim!r} must be a positive integer")
        self.grids = [_flat_grid(shape, max_dim) for shape in shapes]
        self.dims = {"gap": [s[0] for s in shapes],
                     "flat": [s[0] * (g[0] * g[1] if g else s[1] * s[2]) for s, g in zip(shapes, self.grids)]}
        # many samples: running sums (streamed); few: the rows themselves (one SVD later)
        self.sinks = {kind: [FeatureStats(d, self.num_classes) if len(self.y) > d else [] for d in self.dims[kind]]
                      for kind in FEATURE_KINDS}

    @staticmethod
    def _add(sink, x: torch.Tensor, labels: np.ndarray):
        x = x.flatten(1).cpu().numpy()
        sink.update(x, labels) if isinstance(sink, FeatureStats) else sink.append(x.astype(np.float64))

    def feed(self, rows: slice, k: int, h: torch.Tensor):
        """Images ``rows``' activation ``h`` entering block ``k``."""
        self._add(self.sinks["gap"][k], h.mean((2, 3)), self.y[rows])
        self._add(self.sinks["flat"][k], F.adaptive_avg_pool2d(h, self.grids[k]) if self.grids[k] else h, self.y[rows])

    def table(self, probs: np.ndarray) -> pd.DataFrame:
        """One row per cut point, once every chunk was fed; ``probs``: the source head's softmax."""
        source_scores = {"leep": leep(probs, self.y), "nce": nce(probs.argmax(1), self.y)}
        rows = []
        for k in range(len(self.dims["gap"])):
            row = {"cut_point": k, "gap_dim": self.dims["gap"][k], "flat_dim": self.dims["flat"][k]}
            for kind in FEATURE_KINDS:
                row.update({f"{name}_{kind}": value
                            for name, value in _scores_of(self.sinks[kind][k], self.y, self.num_classes).items()})
            rows.append({**row, **source_scores})
        return pd.DataFrame(rows)
