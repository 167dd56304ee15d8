"""Classical classifiers on frozen features, behind one interface, and the feature post-processing.

The feature-extraction pipeline trains one of scikit-learn's classifiers on pooled activations.
Features are standardised per dimension with statistics of the training set only (fitting them
on the test set, as some published code did, leaks the test distribution into the model).  The
full-network embedding (Garcia-Gasulla et al. 2018) then discretises each standardised value to
-1 / 0 / +1 at the thresholds -0.25 and +0.15.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import DataError

HEADS = ("linear_svc", "logistic", "svc", "knn", "ridge")
EMBEDDINGS = ("standard", "fne")
FNE_LOW, FNE_HIGH = -0.25, 0.15


@dataclass
class Standardiser:
    """Per-feature mean and standard deviation of a training set (constant features keep scale 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def ternary(z: np.ndarray) -> np.ndarray:
    """The full-network embedding's discretisation of standardised features."""
    return np.where(z > FNE_HIGH, 1.0, np.where(z < FNE_LOW, -1.0, 0.0)).astype(np.float32)


def _estimator(head: str, C: float, seed: int, n_train: int, neighbours: int):
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC, LinearSVC

    if head == "linear_svc":
        return LinearSVC(C=C, random_state=seed, max_iter=5000)
    if head == "logistic":
        return LogisticRegression(C=C, max_iter=2000, random_state=seed)
    if head == "svc":
        return SVC(C=C, kernel="rbf", random_state=seed)
    if head == "knn":
        return KNeighborsClassifier(n_neighbors=min(neighbours, n_train))
    if head == "ridge":
        return RidgeClassifier(alpha=1.0 / C)
    raise DataError(f"unknown classifier {head!r}; choose one of {list(HEADS)}")


class FeatureClassifier:
    """Post-processing fitted on the training features, then one scikit-learn classifier.

    ``predict_proba`` gives class probabilities where the classifier has them (logistic, k-NN)
    and None otherwise, so ten-crop evaluation can average probabilities when it can."""

    def __init__(self, head: str = "linear_svc", C: float = 1.0, embedding: str = "standard", seed: int = 0,
                 neighbours: int = 5):
        if head not in HEADS:
            raise DataError(f"unknown classifier {head!r}; choose one of {list(HEADS)}")
        if embedding not in EMBEDDINGS:
            raise DataError(f"unknown embedding {embedding!r}; choose one of {list(EMBEDDINGS)}")
        if not C > 0:
            raise DataError(f"C={C} must be positive (inverse regularisation strength)")
        self.head, self.C, self.embedding, self.seed, self.neighbours = head, float(C), embedding, seed, neighbours

    def protocol(self) -> dict:
        """What a fit of this classifier does, for records that must say how an accuracy was
        obtained: the head, its post-processing and the estimator's settings that change the fit."""
        estimator = _estimator(self.head, self.C, self.seed, 1, self.neighbours).get_params()
        settings = {k: estimator[k] for k in ("solver", "max_iter", "tol", "kernel", "alpha") if k in estimator}
        post = {"standard": "standardised on the training images",
                "fne": "standardised on the training images, then ternary (full-network embedding)"}
        return {"head": self.head, "features": post[self.embedding], "C": self.C, **settings}

    def _post(self, x: np.ndarray) -> np.ndarray:
        z = self.standardiser(x)
        return ternary(z) if self.embedding == "fne" else z

    def fit(self, x: np.ndarray, y: np.ndarray) -> "FeatureClassifier":
        self.standardiser = Standardiser.fit(x)
        self.model = _estimator(self.head, self.C, self.seed, len(y), self.neighbours)
        self.model.fit(self._post(x), y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(self._post(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        if not hasattr(self.model, "predict_proba"):
            return None
        return self.model.predict_proba(self._post(x))
