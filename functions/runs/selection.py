"""Model selection for both pipelines on the validation set only, then one test score each.

A researcher who tunes on the test split reports an optimistic number.  Here, on one training
split of the largest N, every FE candidate (layers x classifier x C) and every FT candidate
(frozen depth x learning rate) is scored on the fixed validation set; the best of each pipeline
(first in candidate order on ties) is then scored on the test split, once.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..data.tasks import Split
from ..train.classifiers import FeatureClassifier
from ..train.evaluation import scores
from ..train.finetune import EarlyStopping, Finetuner, evaluate
from .store import ResultsFile

SELECTION_CLASSIFIERS = ("linear_svc", "logistic", "svc", "ridge")
C_VALUES = (0.01, 0.1, 1.0, 10.0)
LEARNING_RATES = (1e-3, 1e-4)


def fe_candidates(layer_names: list[str]) -> list[dict]:
    """The last stage, the last two, and the second half of the network; each with every
    classifier and C (k-NN once: C does not apply)."""
    layer_sets = []
    for layers in (layer_names[-1:], layer_names[-2:], layer_names[len(layer_names) // 2:]):
        if layers not in layer_sets:
            layer_sets.append(layers)
    return [{"layers": layers, "classifier": c, "C": C} for layers in layer_sets
            for c in SELECTION_CLASSIFIERS for C in C_VALUES] + \
        [{"layers": layers, "classifier": "knn", "C": 1.0} for layers in layer_sets]


def ft_candidates(depth: int) -> list[dict]:
    """Only the last stage trains, the last two, or the second half; each at two learning rates."""
    frozen = sorted({max(depth - 1, 0), max(depth - 2, 0), depth // 2}, reverse=True)
    return [{"frozen": f, "lr": lr} for f in frozen for lr in LEARNING_RATES]


def selection_path(experiment) -> Path:
    """Beside the grid's results file: ``fe_vs_ft_select_<setup or target>_<backbone>.json``."""
    grid = experiment.results.path
    return grid.with_name(grid.name.replace("fe_vs_ft_", "fe_vs_ft_select_", 1))


def _key(record: dict) -> tuple:
    return record["pipeline"], json.dumps(record["candidate"], sort_keys=True)


def select(experiment, samples_per_class: int, split: int = 0) -> list[dict]:
    """Candidate records of both pipelines of ``experiment`` (a :class:`functions.runs.fe_vs_ft.Experiment`) (validation accuracy each; the chosen one also its
    test scores), saved to their own results file and read back when already there."""
    params = {**experiment.params, "samples_per_class": samples_per_class, "split": split}
    results = ResultsFile(selection_path(experiment), params, key=_key)
    if results.records:
        return results.records
    index = experiment.training_index(samples_per_class, split)
    target, s = experiment.target, experiment.settings
    records = []
    y_train, y_val = target.train.y[index].numpy(), target.val.y.numpy()
    fitted = []
    for candidate in fe_candidates(experiment.backbone.layer_names):
        began = time.perf_counter()
        stores = experiment.stores_for(candidate["layers"])
        train_x = stores["train"].get(index.numpy())
        val_x = stores["val"].get(np.arange(len(target.val)))
        head = FeatureClassifier(candidate["classifier"], candidate["C"], s.embedding, s.seed).fit(train_x, y_train)
        fitted.append(head)
        records.append({"pipeline": "FE", "candidate": candidate, "val_acc": float(np.mean(head.predict(val_x) == y_val)),
                        "seconds": time.perf_counter() - began})
    train = Split(target.train.x[index], target.train.y[index])
    nets = []
    for candidate in ft_candidates(len(experiment.backbone.layer_names)):
        began = time.perf_counter()
        backbone = experiment.backbone
        tuner = Finetuner(backbone, target.num_classes, freeze_layers=backbone.layer_names[:candidate["frozen"]],
                          head_hidden_sizes=s.hidden, optimizer=s.optimizer, lr=candidate["lr"],
                          weight_decay=s.weight_decay, momentum=s.momentum, seed=s.seed)
        result = tuner.fit(train, target.val, epochs=s.max_epochs, batch_size=s.batch_size,
                           callbacks=[EarlyStopping(s.patience)], seed=s.seed)
        nets.append(tuner.net)
        records.append({"pipeline": "FT", "candidate": candidate, "val_acc": result.val_acc, "epochs": result.epochs,
                        "seconds": time.perf_counter() - began})
    for pipeline, models in (("FE", fitted), ("FT", nets)):
        rows = [r for r in records if r["pipeline"] == pipeline]
        best = int(np.argmax([r["val_acc"] for r in rows]))
        rows[best]["chosen"] = True
        if pipeline == "FE":
            test_x = experiment.stores_for(rows[best]["candidate"]["layers"])["test"].get(np.arange(len(target.test)))
            test_x = test_x[4] if s.crops else test_x  # view 4 of the ten crops is the centre
            rows[best].update(scores(target.test.y.numpy(), models[best].predict(test_x)))
        else:
            rows[best].update(evaluate(models[best], target.test))
    results.add(*records)
    return records
