"""Scores of a source model at every cut point: the activation entering each block, scored in one pass.

The blocks run once per chunk of images (:mod:`functions.runs.cut_passes`); each cut point's
activation is scored global-average pooled and flattened, from running sums when there are more
images than dimensions.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...core.errors import DataError
from ...data.tasks import Split
from ...models.study_cnn import StudyCNN
from ...runs.cut_passes import cut_shapes, pass_per_cut
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


def cut_scores(model: StudyCNN, split: Split, *, chunk_size: int = 512, max_dim: int = 4096,
               progress: bool = True) -> pd.DataFrame:
    """Transferability of ``model``'s features for the target ``split`` at every cut point.

    Row k describes the activation entering block k (0: the image; depth: the last block's
    output), both global-average-pooled (``*_gap``) and flattened (``*_flat``; activations
    with more than ``max_dim`` values are first average-pooled to the finest spatial grid that
    fits, and ``flat_dim`` says what was scored), each scored with LogME, H-score and shrinkage
    H-score.  ``leep`` and ``nce`` come from the source head's softmax on the same images; they
    describe the whole source model, so they are equal in every row.  The blocks run once per
    chunk.  To score one percentage's data, pass ``split.subset(balanced_subset(...))``.
    """
    y, num_classes = check_labels(split.y, len(split), "split.y")
    if not (isinstance(max_dim, int) and max_dim >= 1):
        raise DataError(f"max_dim={max_dim!r} must be a positive integer")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise DataError(f"chunk_size={chunk_size!r} must be a positive integer")
    shapes = cut_shapes(model, split.x)
    grids = [_flat_grid(shape, max_dim) for shape in shapes]
    dims = {"gap": [s[0] for s in shapes],
            "flat": [s[0] * (g[0] * g[1] if g else s[1] * s[2]) for s, g in zip(shapes, grids)]}
    # many samples: running sums (streamed); few: the rows themselves (one SVD later)
    sinks = {kind: [FeatureStats(d, num_classes) if len(split) > d else [] for d in dims[kind]]
             for kind in FEATURE_KINDS}

    def add(sink, x: torch.Tensor, labels: np.ndarray):
        x = x.flatten(1).cpu().numpy()
        sink.update(x, labels) if isinstance(sink, FeatureStats) else sink.append(x.astype(np.float64))

    def feed(rows: slice, k: int, h: torch.Tensor):
        add(sinks["gap"][k], h.mean((2, 3)), y[rows])
        add(sinks["flat"][k], F.adaptive_avg_pool2d(h, grids[k]) if grids[k] else h, y[rows])

    probs = pass_per_cut(model, split.x, feed, chunk_size, progress)
    depth = len(shapes) - 1
    source_scores = {"leep": leep(probs, y), "nce": nce(probs.argmax(1), y)}
    rows = []
    for k in range(depth + 1):
        row = {"cut_point": k, "gap_dim": dims["gap"][k], "flat_dim": dims["flat"][k]}
        for kind in FEATURE_KINDS:
            row.update({f"{name}_{kind}": value
                        for name, value in _scores_of(sinks[kind][k], y, num_classes).items()})
        rows.append({**row, **source_scores})
    return pd.DataFrame(rows)

