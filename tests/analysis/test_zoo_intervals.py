"""Conformal intervals on the zoo's predicted accuracies: the half-width's rank, fits that never
see the held-out task, and coverage near the nominal level where tasks are exchangeable."""
import math

import numpy as np
import pandas as pd
import pytest

from functions.analysis.model_zoo import intervals, matrix
from functions.core.errors import DataError


def records(tasks_per_dataset=12, models=5, noise=0.03, seed=0):
    """Accuracy a smooth function of a score and the task size, plus noise: what a fit can learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset in ("MNIST", "FashionMNIST", "digits"):
        for t in range(tasks_per_dataset):
            n_train = int(rng.choice([20, 100, 400]))
            for m in range(models):
                skill = rng.normal()
                rows.append({"model": f"m{m}", "task": f"{dataset}:{t}", "source_dataset": dataset,
                             "params": 1000 * (m + 1), "flops": 10_000 * (m + 1), "depth": 2 + m, "width": 8,
                             "input_size": 28, "feature_dim": 144, "pretrain_classes": 5, "pretrain_dataset": "MNIST",
                             "pretrain_accuracy": 0.95, "num_classes": 2 + t % 3, "n_train": n_train,
                             "accuracy": float(np.clip(0.7 + 0.05 * skill + 0.03 * np.log10(n_train)
                                                       + noise * rng.normal(), 0, 1)),
                             "logme": skill, **{s: rng.normal() for s in matrix.SCORES if s != "logme"}})
    return pd.DataFrame(rows)


def test_the_half_width_is_the_conformal_rank_of_the_errors():
    errors = np.arange(1, 20) / 100  # 19 errors: the 90% half-width is the 18th smallest
    assert intervals.half_width(errors, 0.9) == 0.18
    assert intervals.half_width(-errors, 0.5) == errors[math.ceil(20 * 0.5) - 1]
    assert intervals.half_width(errors[:5], 0.9) == math.inf  # too few errors for 90%
    with pytest.raises(DataError, match="level=1.5 must be in"):
        intervals.half_width(errors, 1.5)


def test_held_out_predictions_never_fit_on_the_task_they_predict(monkeypatch):
    frame, fitted = records(), []
    real = intervals._fit

    def spy(x, y, seed=0):
        fitted.append(set(frame.loc[x.index, "task"]))
        return real(x, y, seed)

    monkeypatch.setattr(intervals, "_fit", spy)
    predicted = intervals.held_out_predictions(frame, "task", folds=6)
    assert predicted.notna().all() and len(fitted) == 6
    folds = intervals._folds(frame, "task", 6, 0)
    for f, seen in zip(sorted(folds.unique()), fitted):
        assert not seen & set(frame.loc[folds == f, "task"])


def test_coverage_is_near_nominal_on_exchangeable_tasks_and_intervals_bracket_the_prediction():
    frame = records()
    table = intervals.coverage(frame, levels=(0.8,), folds=6)
    measured = table.loc[("leave tasks out", 0.8)]
    assert abs(measured["coverage"] - 0.8) < 0.1 and measured["half_width"] > 0
    assert measured["lowest group"] <= measured["coverage"] <= measured["highest group"]
    new = records(tasks_per_dataset=1, seed=1).assign(task="new:0", source_dataset="new")
    predicted = intervals.predict_with_interval(frame, new, 0.8)
    assert list(predicted["model"]) == list(new["model"])
    assert ((predicted["low"] <= predicted["accuracy_predicted"]) & (predicted["accuracy_predicted"] <= predicted["high"])).all()
    assert predicted["low"].between(0, 1).all() and predicted["high"].between(0, 1).all()
    with pytest.raises(DataError, match="36 tasks cannot fill 40 folds"):
        intervals.held_out_predictions(frame, "task", folds=40)


def test_the_coverage_verdict_says_how_far_from_nominal_in_points():
    table = pd.DataFrame([{"protocol": "leave tasks out", "nominal": 0.9, "coverage": 0.897, "lowest group": 0.8,
                           "highest group": 0.95, "half_width": 0.04, "groups": 10},
                          {"protocol": "leave one dataset out", "nominal": 0.9, "coverage": 0.844, "lowest group": 0.557,
                           "highest group": 0.997, "half_width": 0.074, "groups": 3}]).set_index(["protocol", "nominal"])
    first, second = intervals.coverage_verdict(table).splitlines()
    assert first.startswith("Leave tasks out, the 90% intervals (half-width 0.040") and \
        first.endswith("over 10 held-out groups): within 5 points of nominal.")
    assert second.endswith("held 84.4% of the measured accuracies (55.7% to 99.7% over 3 held-out groups): "
                           "5.6 points below nominal (too narrow).")


def test_a_task_beyond_the_bank_is_named_as_such():
    frame = records()  # 2 to 4 classes, 5 to 200 images per class
    inside = frame[frame["task"] == "MNIST:0"]
    assert intervals.outside_the_bank(frame, inside) == []
    wide = inside.assign(num_classes=12, n_train=12 * 13)
    assert intervals.outside_the_bank(frame, wide) == ["12 classes (the bank's tasks have 2 to 4)"]
    assert intervals.outside_the_bank(frame, inside.assign(num_classes=2, n_train=2000)) == [
        f"1000 training images per class (the bank's tasks have {(frame.n_train / frame.num_classes).min():g} to "
        f"{(frame.n_train / frame.num_classes).max():g})"]


def test_records_of_one_dataset_calibrate_on_folds_of_tasks_and_too_few_give_no_interval():
    frame = records()
    digits = frame[frame["source_dataset"] == "digits"]
    new = records(tasks_per_dataset=1, seed=1).query("source_dataset == 'MNIST'").assign(task="new:0")
    predicted = intervals.predict_with_interval(digits, new, 0.8)
    assert predicted.attrs["calibration"] == "leaving tasks out (the records hold one dataset)"
    assert (predicted["high"] - predicted["low"] < 1).all()
    assert intervals.predict_with_interval(frame, new).attrs["calibration"] == "leaving whole datasets out"
    lonely = intervals.predict_with_interval(digits[digits["task"] == "digits:0"], new)
    assert (lonely["low"] == 0).all() and (lonely["high"] == 1).all()  # one task: nothing to calibrate on


def test_intervals_of_the_bank_are_checked_on_other_tasks_as_a_user_meets_them():
    bank = records()
    near = records(tasks_per_dataset=4, seed=3).assign(source_dataset="clipart")
    near["task"] = "clipart-" + near["task"]
    table = intervals.coverage_on(bank, near, levels=(0.9,))
    (protocol, level), row = next(table.iterrows())
    predicted = intervals.predict_with_interval(bank, near, 0.9)
    inside = ((predicted["low"] <= near["accuracy"]) & (near["accuracy"] <= predicted["high"])).mean()
    assert level == 0.9 and "leaving whole datasets out" in protocol and row["groups"] == 1
    assert row["coverage"] == pytest.approx(inside) and row["half_width"] == predicted.attrs["half_width"]
    assert row["coverage"] > 0.75  # tasks like the bank's: about the nominal share
    harder = near.assign(accuracy=near["accuracy"] - 0.3)  # another domain, every accuracy lower
    assert intervals.coverage_on(bank, harder, levels=(0.9,))["coverage"].iloc[0] < 0.2
