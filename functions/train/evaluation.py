"""Test-set scores shared by both pipelines: accuracy, mean per-class accuracy, and ten-crop votes."""
from __future__ import annotations

import numpy as np


def scores(y_true: np.ndarray, predicted: np.ndarray, prefix: str = "test") -> dict:
    """``<prefix>_acc`` and ``<prefix>_mean_class_acc`` (the mean over classes of each class's
    recall: it does not reward a classifier for favouring the larger classes)."""
    y_true, predicted = np.asarray(y_true), np.asarray(predicted)
    recalls = [float(np.mean(predicted[y_true == c] == c)) for c in np.unique(y_true)]
    return {f"{prefix}_acc": float(np.mean(predicted == y_true)), f"{prefix}_mean_class_acc": float(np.mean(recalls))}


def majority_vote(predictions: list[np.ndarray], num_classes: int) -> np.ndarray:
    """The class most views predicted; a tie goes to the lowest class index."""
    votes = np.zeros((len(predictions[0]), num_classes), dtype=np.int64)
    for p in predictions:
        votes[np.arange(len(p)), p] += 1
    return votes.argmax(1)


def mean_probability(probabilities: list[np.ndarray]) -> np.ndarray:
    """The class with the highest probability averaged over views."""
    return np.mean(probabilities, axis=0).argmax(1)


def crop_scores(y_true: np.ndarray, predictions: list[np.ndarray], probabilities: list[np.ndarray] | None,
                num_classes: int) -> dict:
    """Ten-crop scores: by majority vote (``test_*``, the headline), and by mean probability
    (``test_prob_*``) where the classifier gives probabilities."""
    out = scores(y_true, majority_vote(predictions, num_classes))
    if probabilities is not None:
        out.update(scores(y_true, mean_probability(probabilities), prefix="test_prob"))
    return out
