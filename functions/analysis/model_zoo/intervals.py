"""How sure a recommendation is: each candidate model's predicted linear-probe accuracy on a new
task with a conformal interval, and the intervals' coverage measured on tasks they never saw.

The ranking recommender predicts where a model lands relative to the task's other models, which
says nothing about the accuracy itself.  Here gradient-boosted trees predict the accuracy from
the same model and task metadata and scores (raw and standardised within the task), and split
conformal prediction turns their errors into intervals: the half-width is the
``ceil((n + 1) * level) / n`` quantile of the absolute errors the same recommender made on
held-out tasks, so that on exchangeable tasks ``level`` of the accuracies fall inside.  Those
calibration errors come from fits that left out the task's whole fold (all its models), never
from fits that saw the task.  Tasks of one dataset share images and resemble each other more
than a new dataset's will, so coverage is measured both ways: leave tasks out, and leave a whole
dataset out (calibrated on the other datasets' errors), the case of a user's own images.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...core.errors import DataError
from .matrix import SCORES
from .recommenders import MODEL_FEATURES, TASK_FEATURES, boosted_trees, design

LEVEL = 0.9
TASK_FOLDS = 10  # folds of whole tasks for the held-out errors
PREDICTION = ("accuracy_predicted", "low", "high")  # the columns of a prediction with its interval
COLUMNS = [*MODEL_FEATURES, *TASK_FEATURES, *SCORES, *(f"{s}_in_task" for s in SCORES)]


def _fit(x: pd.DataFrame, y: pd.Series, seed: int = 0):
    return boosted_trees(seed).fit(x[COLUMNS], y)


def _folds(records: pd.DataFrame, by: str, folds: int, seed: int) -> pd.Series:
    """A fold number per record: whole tasks (``by="task"``, ``folds`` of them at random) or whole
    datasets (``by="source_dataset"``, one fold each)."""
    if by == "source_dataset":
        return records["source_dataset"].astype("category").cat.codes
    tasks = records["task"].unique()
    if len(tasks) < folds:
        raise DataError(f"{len(tasks)} tasks cannot fill {folds} folds; give fewer folds or more tasks")
    order = np.random.default_rng(seed).permutation(len(tasks))
    return records["task"].map(dict(zip(tasks[order], np.arange(len(tasks)) % folds)))


def held_out_predictions(records: pd.DataFrame, by: str = "task", folds: int = TASK_FOLDS, seed: int = 0) -> pd.Series:
    """Each record's predicted accuracy from a fit that left out its fold (its task's, or its
    dataset's, with every model of it)."""
    x, fold = design(records), _folds(records, by, folds, seed)
    predicted = pd.Series(np.nan, index=records.index)
    for f in np.unique(fold):
        out = fold == f
        predicted[out] = _fit(x[~out], records.loc[~out, "accuracy"], seed).predict(x.loc[out, COLUMNS])
    return predicted


def half_width(errors: np.ndarray, level: float = LEVEL) -> float:
    """Split conformal half-width: the ``ceil((n + 1) level)``-th smallest absolute error (infinite
    when ``n`` errors are too few for that level)."""
    if not 0 < level < 1:
        raise DataError(f"level={level} must be in (0, 1), e.g. 0.9 for 90% intervals")
    errors = np.sort(np.abs(np.asarray(errors, dtype=float)))
    rank = math.ceil((len(errors) + 1) * level)
    return float(errors[rank - 1]) if rank <= len(errors) else math.inf


def coverage(records: pd.DataFrame, levels=(0.8, 0.9), folds: int = TASK_FOLDS, seed: int = 0) -> pd.DataFrame:
    """The intervals' measured coverage: for each held-out group (a fold of tasks, or a dataset)
    the half-width comes from the other groups' held-out errors alone and is checked on the
    group's records.  One row per (protocol, nominal level): the measured coverage (pooled over
    groups), its range over groups, and the mean half-width."""
    rows = []
    for protocol, by in (("leave tasks out", "task"), ("leave one dataset out", "source_dataset")):
        predicted = held_out_predictions(records, by, folds, seed)
        errors, fold = (records["accuracy"] - predicted).abs(), _folds(records, by, folds, seed)
        for level in levels:
            inside, per_group, widths = [], [], []
            for f in np.unique(fold):
                width = half_width(errors[fold != f], level)
                hit = (errors[fold == f] <= width).to_numpy()
                inside.append(hit)
                per_group.append(hit.mean())
                widths.append(width)
            rows.append({"protocol": protocol, "nominal": level, "coverage": float(np.concatenate(inside).mean()),
                         "lowest group": float(min(per_group)), "highest group": float(max(per_group)),
                         "half_width": float(np.mean(widths)), "groups": len(per_group)})
    return pd.DataFrame(rows).set_index(["protocol", "nominal"])


def predict_with_interval(records: pd.DataFrame, task_records: pd.DataFrame, level: float = LEVEL,
                          seed: int = 0) -> pd.DataFrame:
    """Each of ``task_records``' models (one new task) with its predicted accuracy and a ``level``
    conformal interval (clipped to [0, 1]), from a fit on every record of ``records``; the
    half-width from ``records``' held-out errors, leaving whole datasets out (a user's own images
    are a new dataset), or folds of tasks where the records hold one dataset (too few tasks for
    ``level``: the interval is all of [0, 1]).  ``attrs["calibration"]`` says which."""
    by = "source_dataset" if records["source_dataset"].nunique() > 1 else "task"
    folds = min(TASK_FOLDS, records["task"].nunique())
    if folds > 1:
        errors = (records["accuracy"] - held_out_predictions(records, by, folds, seed)).abs()
        width = half_width(errors.to_numpy(), level)
    else:
        width = math.inf
    combined = pd.concat([records, task_records], ignore_index=True)
    x = design(combined)
    predicted = _fit(x.iloc[:len(records)], records["accuracy"].reset_index(drop=True), seed).predict(
        x.iloc[len(records):][COLUMNS])
    table = pd.DataFrame({"model": task_records["model"].to_numpy(), "accuracy_predicted": predicted,
                          "low": np.clip(predicted - width, 0, 1), "high": np.clip(predicted + width, 0, 1)})
    table.attrs["calibration"] = "leaving whole datasets out" if by == "source_dataset" else \
        "leaving tasks out (the records hold one dataset)"
    table.attrs["half_width"] = width
    return table


def coverage_on(bank: pd.DataFrame, records: pd.DataFrame, levels=(0.8, 0.9), seed: int = 0) -> pd.DataFrame:
    """The intervals a user meets, checked: fitted on every record of ``bank`` and calibrated on its
    held-out errors (:func:`predict_with_interval`), then checked on ``records``' measured accuracies
    (tasks of other images, which neither the fit nor the calibration saw).  Rows as
    :func:`coverage`'s, the groups being ``records``' datasets."""
    rows, accuracy = [], records["accuracy"].to_numpy()
    for level in levels:
        table = predict_with_interval(bank, records, level, seed)
        hit = pd.Series((table["low"].to_numpy() <= accuracy) & (accuracy <= table["high"].to_numpy()))
        per_group = hit.groupby(records["source_dataset"].to_numpy()).mean()
        rows.append({"protocol": f"calibrated on the built-in bank ({table.attrs['calibration']})", "nominal": level,
                     "coverage": float(hit.mean()), "lowest group": float(per_group.min()),
                     "highest group": float(per_group.max()), "half_width": table.attrs["half_width"],
                     "groups": len(per_group)})
    return pd.DataFrame(rows).set_index(["protocol", "nominal"])


def outside_the_bank(records: pd.DataFrame, task_records: pd.DataFrame) -> list[str]:
    """What puts a new task outside the tasks the fit and its calibration saw (its number of
    classes or training images per class beyond theirs): there a prediction extrapolates, and
    the measured coverage says nothing about it."""
    task = task_records.iloc[0]
    per_class = records["n_train"] / records["num_classes"]
    checks = {"classes": (task["num_classes"], records["num_classes"]),
              "training images per class": (task["n_train"] / task["num_classes"], per_class)}
    return [f"{value:g} {name} (the bank's tasks have {seen.min():g} to {seen.max():g})"
            for name, (value, seen) in checks.items() if not seen.min() <= value <= seen.max()]


def coverage_verdict(table: pd.DataFrame, tolerance: float = 0.05) -> str:
    """One sentence per row of :func:`coverage`: how many accuracies the intervals held against
    how many they should, and whether that is within ``tolerance`` of nominal."""
    lines = []
    for (protocol, nominal), row in table.iterrows():
        gap = row["coverage"] - nominal
        judged = (f"within {tolerance * 100:g} points of nominal" if abs(gap) <= tolerance else
                  f"{abs(gap) * 100:.1f} points {'above' if gap > 0 else 'below'} nominal "
                  f"({'too wide' if gap > 0 else 'too narrow'})")
        lines.append(f"{protocol[0].upper()}{protocol[1:]}, the {nominal:.0%} intervals (half-width "
                     f"{row['half_width']:.3f} on average) held {row['coverage']:.1%} of the measured accuracies "
                     f"({row['lowest group']:.1%} to {row['highest group']:.1%} over {int(row['groups'])} held-out "
                     f"groups): {judged}.")
    return "\n".join(lines)
