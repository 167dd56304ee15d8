"""Does a predicted ranking of models match the measured one?  One target task at a time.

Used to evaluate model recommenders and transferability scores: ``predicted`` is what the
recommender says (any score, higher is better), ``measured`` what fine-tuning gave (e.g. test
accuracy, higher is better), one value per candidate model.  Each function accepts lists, numpy
arrays or pandas Series (two Series must share their index, so models cannot be paired by
position by mistake) and refuses mismatched lengths and non-finite values.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..core.errors import DataError

METRICS = ("weighted_tau", "top1_hit", "regret", "models")


def _vector(values, name: str) -> np.ndarray:
    if isinstance(values, pd.DataFrame):
        raise DataError(f"{name} must be one value per model, got a DataFrame; pass one of its columns")
    try:
        v = values.to_numpy(dtype=np.float64, na_value=np.nan) if isinstance(values, pd.Series) else np.asarray(values)
        if v.dtype == object:
            v = v.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} must be numbers, one per model ({error})") from None
    if v.ndim != 1:
        raise DataError(f"{name} must be 1-D (one value per model), got shape {v.shape}")
    if not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
        raise DataError(f"{name} must be real numbers, got dtype {v.dtype}")
    v = v.astype(np.float64)
    bad = int(v.size - np.count_nonzero(np.isfinite(v)))
    if bad:
        raise DataError(f"{name} hold {bad} non-finite values (NaN or inf); drop those models or fill them in")
    return v


def _pair(predicted, measured) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(predicted, pd.Series) and isinstance(measured, pd.Series) \
            and not predicted.index.equals(measured.index):
        raise DataError("predicted and measured are Series with different indexes; align them first, "
                        "e.g. measured.reindex(predicted.index)")
    p, m = _vector(predicted, "predicted"), _vector(measured, "measured")
    if len(p) != len(m):
        raise DataError(f"{len(p)} predicted values but {len(m)} measured; give one of each per model")
    if len(p) == 0:
        raise DataError("predicted and measured are empty; give one value per candidate model")
    return p, m


def weighted_tau(predicted, measured) -> float:
    """Weighted Kendall tau (Vigna 2015) between predicted and measured values, as the LogME and
    SFDA papers evaluate model rankings: ``scipy.stats.weightedtau`` with its defaults, the
    hyperbolic weigher 1/(r + 1) and the average of the two rankings' weights (r by measured
    values, and r by predicted values), so that swapping the best models costs more than
    swapping the worst and the numbers compare with the published ones.
    1 for the same ordering, -1 for the reverse.  NaN with fewer than two models or when either
    vector is constant: there is then no ordering to agree with, and a number would only reflect
    the tie handling."""
    p, m = _pair(predicted, measured)
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(m) == 0:
        return float("nan")
    return float(scipy_stats.weightedtau(m, p).statistic)


def _predicted_best(p: np.ndarray) -> np.ndarray:
    return p == p.max()


def top1_hit(predicted, measured) -> bool:
    """Whether the model predicted best is a measured best (models tied at the measured maximum all
    count as best).  Models tied at the predicted maximum are a hit only if all of them are
    measured best: a recommender that cannot choose between them does not get the benefit of the
    doubt.  Always ``top1_hit(p, m) == (regret(p, m) == 0)``."""
    p, m = _pair(predicted, measured)
    return bool(np.all(m[_predicted_best(p)] == m.max()))


def regret(predicted, measured) -> float:
    """Measured value of the best model minus that of the model predicted best (>= 0; in the
    measured unit, e.g. accuracy points lost by following the prediction).  Among models tied at
    the predicted maximum the worst measured one counts, as in ``top1_hit``."""
    p, m = _pair(predicted, measured)
    return float(m.max() - m[_predicted_best(p)].min())


def ranking_metrics(frame: pd.DataFrame, task_column: str, model_column: str, predicted_column: str,
                    measured_column: str) -> pd.DataFrame:
    """One row per task (in sorted task order): the task, ``weighted_tau``, ``top1_hit``, ``regret``
    and the number of ``models`` ranked.  ``frame`` has one row per (task, model).

    Tasks with a single model are dropped: there is nothing to rank, and a hit or zero regret
    would be free.  A model listed twice for one task, missing task or model names and
    non-finite values are refused (DataError naming the task), as are missing columns."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"frame must be a pandas DataFrame with one row per (task, model), got {type(frame).__name__}")
    columns = [task_column, model_column, predicted_column, measured_column]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"frame lacks columns {missing}; it has {list(frame.columns)}")
    unnamed = frame[[task_column, model_column]].isna().any(axis=1)
    if unnamed.any():
        raise DataError(f"{int(unnamed.sum())} rows have no {task_column!r} or {model_column!r}; fill or drop them")
    repeated = frame.duplicated([task_column, model_column], keep=False)
    if repeated.any():
        pairs = frame.loc[repeated, [task_column, model_column]].drop_duplicates().head(5)
        raise DataError(f"models listed more than once for one task: {list(map(tuple, pairs.to_numpy()))}; "
                        f"average repeated runs first, e.g. frame.groupby([task, model]).mean()")
    rows = []
    for task, group in frame.groupby(task_column, sort=True):
        if len(group) < 2:
            continue
        try:
            p = _vector(group[predicted_column], predicted_column)
            m = _vector(group[measured_column], measured_column)
        except DataError as error:
            raise DataError(f"task {task!r}: {error}") from None
        rows.append({task_column: task, "weighted_tau": weighted_tau(p, m), "top1_hit": top1_hit(p, m),
                     "regret": regret(p, m), "models": len(group)})
    result = pd.DataFrame(rows, columns=[task_column, *METRICS])
    return result.astype({"weighted_tau": float, "top1_hit": bool, "regret": float, "models": int})
