"""The k-NN leave-one-out score against a direct computation, and its refusals."""
import numpy as np
import pytest

from functions.analysis.transferability.knn import knn_accuracy
from functions.core.errors import DataError


def direct(features, labels, k, temperature):
    """One image at a time, written from the definition."""
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    correct = 0
    for i in range(len(f)):
        others = [j for j in range(len(f)) if j != i]
        similarity = {j: float(f[i] @ f[j]) for j in others}
        nearest = sorted(others, key=lambda j: -similarity[j])[:k]
        votes = np.zeros(labels.max() + 1)
        for j in nearest:
            votes[labels[j]] += np.exp(similarity[j] / temperature)
        correct += int(np.argmax(votes) == labels[i])
    return correct / len(f)


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (3, 0.07), (5, 1.0), (50, 0.5)])
def test_knn_accuracy_matches_the_definition(k, temperature):
    rng = np.random.default_rng(k)
    labels = rng.integers(0, 3, 40)
    features = rng.normal(size=(40, 6)) + 0.8 * np.eye(6)[labels]
    assert knn_accuracy(features, labels, k, temperature) == direct(features, labels, k, temperature)


def test_knn_accuracy_sees_directions_not_lengths_and_separates_clusters_from_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    clustered = np.eye(8)[labels * 4] + 0.05 * rng.normal(size=(60, 8))
    assert knn_accuracy(clustered, labels) == 1.0
    assert knn_accuracy(clustered * rng.uniform(0.1, 10, (60, 1)), labels) == 1.0
    noise = rng.normal(size=(60, 8))
    assert knn_accuracy(noise, labels) < 0.75


def test_knn_accuracy_refuses_what_it_cannot_score():
    with pytest.raises(DataError, match="at least two samples"):
        knn_accuracy(np.ones((1, 3)), np.array([0]))
    with pytest.raises(DataError, match="k must be a positive integer"):
        knn_accuracy(np.ones((4, 3)), np.array([0, 1, 0, 1]), k=0)
    with pytest.raises(DataError, match="temperature must be positive"):
        knn_accuracy(np.ones((4, 3)), np.array([0, 1, 0, 1]), temperature=0)
