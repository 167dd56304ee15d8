"""The model x task matrix, measured: every zoo model's frozen features of every bank task, a
linear head's accuracy on them and the transferability scores, one record per (model, task).

Empirical transferability is the test accuracy of a logistic-regression head trained on the
frozen model's features of the task's training images, averaged over seeded draws of those
images.  The scores see only the first draw's training images (and, for LEEP and NCE, the
source head's predictions on them): what a user would have before training anything.  Which
scores, is the caller's ``score`` function (the analysis layer's maths), so this module runs
networks and heads and leaves the maths where it lives.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..data.task_bank import SPLIT_PROTOCOL, TaskSpec, pool, task_labels, task_metadata, task_rows
from ..train.classifiers import FeatureClassifier
from .executors import InProcess
from .units import run_units
from ..models.zoo_catalog import ZOO_VERSION, ZooModel, zoo_model
from .zoo import PoolFeatures, metadata, network, pool_features

SEEDS = 3


PROBE = "logistic"  # the head whose accuracy is a model's empirical transferability


def linear_probe(feats: PoolFeatures, task: TaskSpec, seed: int, data=None) -> tuple[float, int]:
    """Test accuracy of a logistic-regression head on the task's training draw ``seed`` (``data``:
    the task's pool, default its bank dataset's), and the iterations its solver took."""
    data = data or pool(task.dataset)
    train, test = task_rows(task, seed, data)
    head = FeatureClassifier(PROBE, seed=seed).fit(feats.train[train], task_labels(task, data.train_y[train], data))
    accuracy = float((head.predict(feats.test[test]) == task_labels(task, data.test_y[test], data)).mean())
    return accuracy, int(np.max(head.model.n_iter_))


def protocol(seeds: int) -> dict:
    """How a record's accuracy and scores were obtained, kept beside them so that anyone can
    measure a ranking again: the split, the draws' seeds, the head and its solver's settings."""
    head = ", ".join(f"{k} {v}" for k, v in FeatureClassifier(PROBE).protocol().items())
    return {"split": SPLIT_PROTOCOL, "probe": head, "probe_seeds": " ".join(map(str, range(seeds))),
            "scores_on": "draw 0's training images (LEEP and NCE: with the source head's probabilities)"}


@dataclass
class Timing:
    """Where the matrix's time went: extraction per model, and all linear fits and all scores."""

    extraction_s: dict = field(default_factory=dict)
    fits_s: float = 0.0
    scores_s: float = 0.0

    def add(self, other: "Timing") -> None:
        self.extraction_s.update(other.extraction_s)
        self.fits_s, self.scores_s = self.fits_s + other.fits_s, self.scores_s + other.scores_s

    def as_dict(self) -> dict:
        return {"feature_extraction_s_per_model": {k: round(v, 2) for k, v in self.extraction_s.items()},
                "feature_extraction_s": round(sum(self.extraction_s.values()), 1),
                "linear_fits_s": round(self.fits_s, 1), "scores_s": round(self.scores_s, 1)}


def model_records(model: ZooModel, tasks: list[TaskSpec], score: Callable, seeds: int = SEEDS,
                  timing: Timing | None = None, log=print, pools: dict | None = None) -> list[dict]:
    """One record per task for ``model``: its metadata, the task's, ``score(features, source
    probabilities, labels)`` (a dict of scores) and the measured accuracy (mean and std over
    ``seeds`` draws; ``seeds=0``: scores only, accuracy NaN).  ``pools``: by dataset name, the pools
    of tasks drawn from users' datasets (:class:`~functions.data.task_bank.DatasetPool`); the bank's
    own datasets need none."""
    timing = timing if timing is not None else Timing()
    net = network(model, log=log)
    row = metadata(model, net)
    records = []
    for dataset in dict.fromkeys(t.dataset for t in tasks):
        began = time.perf_counter()
        source = (pools or {}).get(dataset) or pool(dataset)
        feats = pool_features(net, source)
        timing.extraction_s[model.name] = timing.extraction_s.get(model.name, 0.0) + time.perf_counter() - began
        labels = source.train_y
        for task in (t for t in tasks if t.dataset == dataset):
            began = time.perf_counter()
            probes = [linear_probe(feats, task, seed, source) for seed in range(seeds)]
            accuracies = [accuracy for accuracy, _ in probes]
            timing.fits_s += time.perf_counter() - began
            began = time.perf_counter()
            train = task_rows(task, 0, source)[0]
            measured = score(feats.train[train], feats.train_probs[train], task_labels(task, labels[train], source))
            timing.scores_s += time.perf_counter() - began
            records.append({**row, **task_metadata(task, source), **measured,
                            "extraction_ms_per_image": round(feats.seconds_per_image * 1000, 3),
                            "accuracy": float(np.mean(accuracies)) if seeds else float("nan"),
                            "accuracy_std": float(np.std(accuracies)) if seeds else float("nan"), "seeds": seeds,
                            "probe_iterations": max((n for _, n in probes), default=0), **protocol(seeds),
                            "zoo_version": ZOO_VERSION})
    return records


def _model_unit(name: str, tasks: list[TaskSpec], score: Callable, seeds: int,
                pools: dict | None) -> tuple[list[dict], Timing]:
    """One model's records and timing: the unit an executor runs (in this process or as a Ray task)."""
    timing = Timing()
    return model_records(zoo_model(name), tasks, score, seeds, timing, log=lambda *_: None, pools=pools), timing


def build(models: list[ZooModel], tasks: list[TaskSpec], score: Callable, seeds: int = SEEDS, log=print,
          executor=None, pools: dict | None = None) -> tuple[pd.DataFrame, Timing]:
    """The records of every model on every task (in the zoo's order, whatever order the models
    finish in), and where the time went.  ``executor`` (default: this process) runs one unit per
    model; the task bank goes to a Ray cluster's object store once.  ``pools``: as for
    :func:`model_records`, for tasks drawn from users' datasets."""
    done, timing = {}, Timing()

    def save(name: str, outcome: tuple) -> None:
        done[name], spent = outcome
        timing.add(spent)
        log(f"{name}: {len(tasks)} tasks")

    executor = executor or InProcess()
    shared = executor.share(tasks)
    summary = run_units([m.name for m in models], _model_unit, save, args=(shared, score, seeds, pools), executor=executor)
    summary.raise_failures("model(s) failed",
                           "the others are measured, and re-running reuses their cached features")
    return pd.DataFrame([r for model in models for r in done[model.name]]), timing
