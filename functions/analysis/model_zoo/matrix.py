"""The model x task matrix read: every transferability score of one model on one task, and the
matrix of one score (:mod:`functions.runs.zoo_matrix` measures the records)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..transferability import hscore, knn_accuracy, leep, logme, nce, nleep, sfda

SCORES = ("logme", "leep", "nce", "hscore", "hscore_shrinkage", "sfda", "nleep", "knn")


def scores(features: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> dict:
    """Every score of one model on one task's training images."""
    return {"logme": logme(features, labels), "leep": leep(probs, labels), "nce": nce(probs.argmax(1), labels),
            "hscore": hscore(features, labels), "hscore_shrinkage": hscore(features, labels, shrinkage=True),
            "sfda": sfda(features, labels), "nleep": nleep(features, labels), "knn": knn_accuracy(features, labels)}


def score_matrix(records: pd.DataFrame, score: str = "logme") -> pd.DataFrame:
    """Models (rows) x tasks (columns) of one score or of ``accuracy``, tasks grouped by dataset."""
    order = records.drop_duplicates("task").sort_values(["source_dataset", "num_classes", "n_train"], kind="stable")
    return records.pivot(index="model", columns="task", values=score)[list(order.task)]
