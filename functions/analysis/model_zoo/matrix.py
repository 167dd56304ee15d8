"""The model x task matrix: measured transferability (a new linear head on frozen features) and
every transferability score, one record per (model, task).

Empirical transferability is the test accuracy of a logistic-regression head trained on the
frozen model's features of the task's training images, averaged over seeded draws of those
images.  The scores see only the first draw's training images (and, for LEEP and NCE, the
source head's predictions on them): what a user would have before training anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...data.task_bank import TaskSpec, pool, task_labels, task_metadata, task_rows
from ...core.errors import DataError
from ...runs.executors import Failure, InProcess
from ...runs.zoo import ZOO_VERSION, PoolFeatures, ZooModel, metadata, network, pool_features, zoo_model
from ...train.classifiers import FeatureClassifier
from ..transferability import hscore, leep, logme, nce, nleep, sfda

SEEDS = 3
SCORES = ("logme", "leep", "nce", "hscore", "hscore_shrinkage", "sfda", "nleep")


def scores(features: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> dict:
    """Every score of one model on one task's training images."""
    return {"logme": logme(features, labels), "leep": leep(probs, labels), "nce": nce(probs.argmax(1), labels),
            "hscore": hscore(features, labels), "hscore_shrinkage": hscore(features, labels, shrinkage=True),
            "sfda": sfda(features, labels), "nleep": nleep(features, labels)}


def linear_probe(feats: PoolFeatures, task: TaskSpec, seed: int) -> float:
    """Test accuracy of a logistic-regression head on the task's training draw ``seed``."""
    data = pool(task.dataset)
    train, test = task_rows(task, seed)
    head = FeatureClassifier("logistic", seed=seed).fit(feats.train[train], task_labels(task, data.train_y[train]))
    return float((head.predict(feats.test[test]) == task_labels(task, data.test_y[test])).mean())


@dataclass
class Timing:
    """Where the matrix's time went: extraction per model, and all linear fits and all scores."""

    extraction_s: dict = field(default_factory=dict)
    fits_s: float = 0.0
    scores_s: float = 0.0

    def as_dict(self) -> dict:
        return {"feature_extraction_s_per_model": {k: round(v, 2) for k, v in self.extraction_s.items()},
                "feature_extraction_s": round(sum(self.extraction_s.values()), 1),
                "linear_fits_s": round(self.fits_s, 1), "scores_s": round(self.scores_s, 1)}


def model_records(model: ZooModel, tasks: list[TaskSpec], seeds: int = SEEDS, timing: Timing | None = None,
                  log=print) -> list[dict]:
    """One record per task for ``model``: its metadata, the task's, every score and the measured
    accuracy (mean and std over ``seeds`` draws; ``seeds=0``: scores only, accuracy NaN)."""
    timing = timing if timing is not None else Timing()
    net = network(model, log=log)
    row = metadata(model, net)
    records = []
    for dataset in dict.fromkeys(t.dataset for t in tasks):
        began = time.perf_counter()
        feats = pool_features(net, dataset)
        timing.extraction_s[model.name] = timing.extraction_s.get(model.name, 0.0) + time.perf_counter() - began
        labels = pool(dataset).train_y
        for task in (t for t in tasks if t.dataset == dataset):
            began = time.perf_counter()
            accuracies = [linear_probe(feats, task, seed) for seed in range(seeds)]
            timing.fits_s += time.perf_counter() - began
            began = time.perf_counter()
            train = task_rows(task, 0)[0]
            measured = scores(feats.train[train], feats.train_probs[train], task_labels(task, labels[train]))
            timing.scores_s += time.perf_counter() - began
            records.append({**row, **task_metadata(task), **measured,
                            "accuracy": float(np.mean(accuracies)) if seeds else float("nan"),
                            "accuracy_std": float(np.std(accuracies)) if seeds else float("nan"), "seeds": seeds,
                            "zoo_version": ZOO_VERSION})
    return records


def score_matrix(records: pd.DataFrame, score: str = "logme") -> pd.DataFrame:
    """Models (rows) x tasks (columns) of one score or of ``accuracy``, tasks grouped by dataset."""
    order = records.drop_duplicates("task").sort_values(["source_dataset", "num_classes", "n_train"], kind="stable")
    return records.pivot(index="model", columns="task", values=score)[list(order.task)]


def _model_unit(name: str, tasks: list[TaskSpec], seeds: int) -> tuple[list[dict], Timing]:
    """One model's records and timing: the unit an executor runs (in this process or as a Ray task)."""
    timing = Timing()
    return model_records(zoo_model(name), tasks, seeds, timing, log=lambda *_: None), timing


def build(models: list[ZooModel], tasks: list[TaskSpec], seeds: int = SEEDS, log=print,
          executor=None) -> tuple[pd.DataFrame, Timing]:
    """The records of every model on every task (in the zoo's order, whatever order the models
    finish in), and where the time went.  ``executor`` (default: this process) runs one unit per
    model; the task bank goes to a Ray cluster's object store once."""
    executor = executor or InProcess()
    shared = executor.share(tasks)
    for model in models:
        executor.submit(_model_unit, model.name, shared, seeds)
    done, failures, timing = {}, [], Timing()
    for name, outcome in executor.completed(wait=True):
        if isinstance(outcome, Failure):
            failures.append(f"{name} ({outcome.error})")
            continue
        done[name], spent = outcome
        timing.extraction_s.update(spent.extraction_s)
        timing.fits_s, timing.scores_s = timing.fits_s + spent.fits_s, timing.scores_s + spent.scores_s
        log(f"{name}: {len(tasks)} tasks")
    if failures:
        raise DataError(f"{len(failures)} model(s) failed: {'; '.join(failures)}; the others are measured, and "
                        f"re-running reuses their cached features")
    return pd.DataFrame([r for model in models for r in done[model.name]]), timing
