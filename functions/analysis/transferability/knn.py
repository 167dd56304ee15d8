"""A plain baseline every transferability score should beat: how often a frozen model's nearest
training images share an image's label.

``knn_accuracy`` is the leave-one-out accuracy of a k-nearest-neighbour vote on the target's
training images, by cosine similarity of the features, each neighbour's vote weighted by
``exp(similarity / temperature)`` (the weighting self-supervised papers evaluate features with,
k = 20 and temperature 0.07 in DINO).  It needs no fitting and no source head, and large
benchmarks find it ranks models as well as most published scores, so a score that does not beat
it adds little.
"""
from __future__ import annotations

import numpy as np

from ...core.errors import DataError
from .scores import check_features, check_labels

NEIGHBOURS = 20
TEMPERATURE = 0.07
CHUNK = 1024  # query rows at a time: the similarity block is CHUNK x n


def knn_accuracy(features, labels, k: int = NEIGHBOURS, temperature: float = TEMPERATURE) -> float:
    """Leave-one-out accuracy (0..1) of the weighted ``k``-nearest-neighbour vote by cosine
    similarity (fewer neighbours where the task has fewer other images).  A vote tied between
    classes goes to the lowest class index, so the score is deterministic."""
    f = check_features(features).astype(np.float64)
    y, num_classes = check_labels(labels, len(f))
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise DataError(f"k must be a positive integer (neighbours per vote); got {k!r}")
    if not temperature > 0:
        raise DataError(f"temperature must be positive; got {temperature!r}")
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    k = min(int(k), len(f) - 1)
    correct = 0
    for start in range(0, len(f), CHUNK):
        similarity = f[start:start + CHUNK] @ f.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # leave the image itself out
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.exp((similarity[rows[:, None], nearest] - 1.0) / temperature)  # shifted: no overflow
        votes = np.zeros((len(similarity), num_classes))
        np.add.at(votes, (np.repeat(rows, k), y[nearest].ravel()), weights.ravel())
        correct += int((votes.argmax(1) == y[start:start + CHUNK]).sum())
    return correct / len(f)
