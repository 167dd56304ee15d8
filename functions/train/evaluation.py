"""Test-set scores shared by both pipelines: accuracy, mean per-class accuracy, and ten-crop votes."""
from __future__ import annotations

import numpy as np

TOP_K = 5


def scores(y_true: np.ndarray, predicted: np.ndarray, prefix: str = "test") -> dict:
    """``<prefix>_acc`` and ``<prefix>_mean_class_acc`` (the mean over classes of each class's
    recall: it does not reward a classifier for favouring the larger classes)."""
    y_true, predicted = np.asarray(y_true), np.asarray(predicted)
    recalls = [float(np.mean(predicted[y_true == c] == c)) for c in np.unique(y_true)]
    return {f"{prefix}_acc": float(np.mean(predicted == y_true)), f"{prefix}_mean_class_acc": float(np.mean(recalls))}


def ranked_scores(y_true: np.ndarray, probabilities: np.ndarray, prefix: str = "test") -> dict:
    """Top-k accuracy (k = 5, or classes - 1 with 5 classes or fewer, named so: top-5 of 5 classes
    is always 1) and macro F1 (the mean of each class's F1: small classes count as much as large)."""
    from sklearn.metrics import f1_score, top_k_accuracy_score  # imported where used: it is slow to import

    classes = probabilities.shape[1]
    k = min(TOP_K, classes - 1)
    labels = np.arange(classes)
    return {f"{prefix}_top{k}_acc": float(top_k_accuracy_score(y_true, probabilities, k=k, labels=labels)),
            f"{prefix}_macro_f1": float(f1_score(y_true, probabilities.argmax(1), labels=labels, average="macro",
                                                 zero_division=0))}


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
