"""Recommenders that rank the zoo's models for a target task, and their evaluation on held-out
tasks (leave one task out), held-out datasets (leave one dataset out) and, for tasks drawn from
other images, trained on the built-in bank alone (the case of a user's own images).

* ``linear regression``: the model-recommendation baseline, a least-squares fit of the measured
  accuracy on model metadata, task metadata and the raw scores;
* each score alone, and two baselines every score must beat: the model's accuracy on its own
  pretraining task (ImageNet top-1 for the ImageNet networks: better models tend to transfer
  better) and its parameter count (bigger ranks higher);
* ``gradient boosting`` (ours): gradient-boosted trees that predict how far a model lands above
  or below the task's mean over models, from the same metadata and each score standardised
  within the task.  Raw scores live on scales that change from task to task (LogME with the
  number of classes, LEEP with the source head); within a task only their order and spread carry
  information, and only the order of the models within a task is asked for.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...core.errors import DataError
from ..ranking import ranking_metrics
from .matrix import SCORES

MODEL_FEATURES = ("log_params", "log_flops", "depth", "width", "input_size", "feature_dim", "pretrain_classes",
                  "pretrain_accuracy", "imagenet")
TASK_FEATURES = ("num_classes", "log_n_train")
PROTOCOLS = {"leave one task out": "task", "leave one dataset out": "source_dataset"}
FROM_BANK = "trained on the built-in bank"  # every task held out, the learned recommenders fit on another bank
BASELINE_SCORES = ("pretrain_accuracy", "params")
RESAMPLES = 10_000  # bootstrap resamples of the tasks


def design(records: pd.DataFrame) -> pd.DataFrame:
    """Numeric features per record: metadata, raw scores, and each score standardised within its task."""
    frame = pd.DataFrame(index=records.index)
    frame["log_params"] = np.log10(records["params"])
    frame["log_flops"] = np.log10(records["flops"])
    frame["depth"] = records["depth"].fillna(0)
    frame["width"] = records["width"].fillna(0)
    frame["imagenet"] = (records["pretrain_dataset"] == "ImageNet").astype(float)
    frame["log_n_train"] = np.log10(records["n_train"])
    for column in ("input_size", "feature_dim", "pretrain_classes", "pretrain_accuracy", "num_classes"):
        frame[column] = records[column].astype(float)
    grouped = records.groupby("task")
    for score in SCORES:
        frame[score] = records[score]
        spread = grouped[score].transform("std").replace(0, 1).fillna(1)
        frame[f"{score}_in_task"] = (records[score] - grouped[score].transform("mean")) / spread
    return frame


def _linear(train: pd.DataFrame, x: pd.DataFrame, test: pd.DataFrame, y: pd.Series) -> np.ndarray:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    columns = [*MODEL_FEATURES, *TASK_FEATURES, *SCORES]
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(x.loc[train.index, columns], y.loc[train.index])
    return model.predict(x.loc[test.index, columns])


def boosted_trees(seed: int = 0):
    """The gradient-boosted trees every learned prediction of the zoo fits (ranking and accuracy)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, random_state=seed)


def _boosting(train: pd.DataFrame, x: pd.DataFrame, test: pd.DataFrame, y: pd.Series, seed: int = 0) -> np.ndarray:
    columns = [*MODEL_FEATURES, *TASK_FEATURES, *(f"{s}_in_task" for s in SCORES)]
    seen = y.loc[train.index]
    relative = seen - seen.groupby(train["task"]).transform("mean")
    model = boosted_trees(seed)
    model.fit(x.loc[train.index, columns], relative)
    return model.predict(x.loc[test.index, columns])


LEARNED = {"linear regression": _linear, "gradient boosting": _boosting}
RECOMMENDERS = (*LEARNED, *SCORES, *BASELINE_SCORES)


def check_recommender(name: str) -> str:
    """Refuse an unknown recommender by name, before any feature of a new task is computed."""
    if name not in RECOMMENDERS:
        raise DataError(f"unknown recommender {name!r}; choose one of {list(RECOMMENDERS)}")
    return name


def predictions(records: pd.DataFrame, protocol: str = "leave one dataset out",
                bank: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every recommender's prediction for every record, each made without the held-out group's
    records (the task, or its whole dataset; with :data:`FROM_BANK`, every record, the fits trained
    on ``bank``'s records alone); scores and pretraining accuracy need no fit."""
    if protocol not in (*PROTOCOLS, FROM_BANK):
        raise DataError(f"unknown protocol {protocol!r}; choose one of {[*PROTOCOLS, FROM_BANK]}")
    if (protocol == FROM_BANK) != (bank is not None):
        raise DataError(f"give the records to train on (bank=) with protocol {FROM_BANK!r}, and only with it")
    out = records[["model", "task", "source_dataset", "accuracy"]].copy()
    for name in (*SCORES, *BASELINE_SCORES):
        out[name] = records[name]
    if bank is not None:
        combined = pd.concat([bank, records], ignore_index=True)
        for name, fit in LEARNED.items():
            out[name] = fit(combined.iloc[:len(bank)], design(combined), combined.iloc[len(bank):],
                            combined["accuracy"])
        return out
    x, y = design(records), records["accuracy"]
    key = PROTOCOLS[protocol]
    for name, fit in LEARNED.items():
        out[name] = np.nan
        for _, held_out in records.groupby(key):
            train = records.drop(held_out.index)
            if train.empty:
                raise DataError(f"{protocol}: nothing is left to train on; the records need more than one "
                                f"{key.replace('_', ' ')}")
            out.loc[held_out.index, name] = fit(train, x, held_out, y)
    return out


def evaluate(records: pd.DataFrame, seed: int = 0, bank: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean weighted Kendall tau with its 95% bootstrap interval over tasks, top-1 hit rate and
    regret per recommender (rows) under each protocol (column groups): leave one task out, leave
    one dataset out where the records hold several, and with ``bank`` (the built-in bank's records,
    for tasks of other images) :data:`FROM_BANK`.  The table's ``attrs["tau"]`` holds each
    protocol's tau per task and recommender, for paired comparisons (:func:`tau_difference`)."""
    protocols = [p for p in PROTOCOLS if PROTOCOLS[p] == "task" or records[PROTOCOLS[p]].nunique() > 1]
    tables, taus = {}, {}
    for protocol in protocols + ([FROM_BANK] if bank is not None else []):
        predicted = predictions(records, protocol, bank if protocol == FROM_BANK else None)
        scored = {name: _scored(predicted, name).set_index("task") for name in RECOMMENDERS}
        taus[protocol] = pd.DataFrame({name: table["weighted_tau"] for name, table in scored.items()})
        rows = {}
        for name, per_task in scored.items():
            low, high = _interval(per_task["weighted_tau"].dropna().to_numpy()[:, None], seed)[0]
            rows[name] = {"weighted_tau": per_task["weighted_tau"].mean(), "tau_ci95_low": low, "tau_ci95_high": high,
                          "top1_hit": per_task["top1_hit"].mean(), "regret": per_task["regret"].mean()}
        tables[protocol] = pd.DataFrame.from_dict(rows, orient="index")
    table = pd.concat(tables, axis=1)
    table.attrs["tau"] = taus
    return table


def _interval(values: np.ndarray, seed: int) -> np.ndarray:
    """95% percentile intervals of the column means of ``values`` (tasks x columns), resampling
    the tasks (rows) with replacement: ``[[low, high] per column]``."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(values), (RESAMPLES, len(values)))
    means = values[rows].mean(axis=1)
    return np.percentile(means, [2.5, 97.5], axis=0).T


def tau_difference(table: pd.DataFrame, first: str, second: str, protocol: str = "leave one dataset out",
                   seed: int = 0) -> dict:
    """``first`` minus ``second`` in weighted tau, paired by task (the tasks where both rank
    something): the mean difference over ``tasks`` and its 95% bootstrap interval over tasks."""
    pair = table.attrs["tau"][protocol][[first, second]].dropna()
    difference = (pair[first] - pair[second]).to_numpy()
    low, high = _interval(difference[:, None], seed)[0]
    return {"difference": float(difference.mean()), "ci95_low": float(low), "ci95_high": float(high),
            "tasks": len(difference)}


def _scored(predicted: pd.DataFrame, name: str) -> pd.DataFrame:
    """Ranking metrics per task of one recommender.  A task whose models all measured the same has
    no ranking to recover and is left out (NaN tau); a recommender that gives all of a task's
    models one value ranks nothing: its tau there counts as 0, not as missing."""
    table = ranking_metrics(predicted, "task", "model", name, "accuracy")
    flat = predicted.groupby("task")[name].nunique() == 1
    varied = predicted.groupby("task")["accuracy"].nunique() > 1
    zero = (table["task"].map(flat) & table["task"].map(varied)).to_numpy()
    table.loc[zero, "weighted_tau"] = 0.0
    return table


def per_task(records: pd.DataFrame, recommender: str = "gradient boosting",
             protocol: str = "leave one dataset out") -> pd.DataFrame:
    """One recommender's metrics per task, with the task's metadata: where it fails."""
    table = _scored(predictions(records, protocol), recommender)
    meta = records.drop_duplicates("task").set_index("task")[["source_dataset", "num_classes", "n_train"]]
    return table.join(meta, on="task")


def recommend(records: pd.DataFrame, task_records: pd.DataFrame, recommender: str = "gradient boosting") -> pd.DataFrame:
    """The zoo ranked for one task: ``task_records`` (one per model, with scores; ``accuracy``
    when measured) scored by ``recommender`` trained on ``records`` of every other task."""
    check_recommender(recommender)
    task = task_records["task"].iloc[0]
    train = records[records["task"] != task]
    combined = pd.concat([train, task_records], ignore_index=True)
    held_out = combined.iloc[len(train):]
    if recommender in LEARNED:
        predicted = LEARNED[recommender](combined.iloc[:len(train)], design(combined), held_out,
                                         combined["accuracy"].fillna(0.0))
    else:
        predicted = held_out[recommender].to_numpy()
    table = pd.DataFrame({"model": held_out["model"].to_numpy(), "family": held_out["family"].to_numpy(),
                          "predicted": predicted, "measured_accuracy": held_out["accuracy"].to_numpy()})
    return table.sort_values("predicted", ascending=False, ignore_index=True).rename_axis("rank")
