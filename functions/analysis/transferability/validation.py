"""Do the scores rank the cut points as the measured sweep does?  Rank agreement, top cuts, a figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from ...core.atomic import write_png
from ...core.errors import DataError
from ...data.catalog import same_percentage
from .scores import SCORE_PREFIXES


def score_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.split("_")[0] in SCORE_PREFIXES]


def mean_accuracy(records) -> pd.DataFrame:
    """Mean test accuracy per (percentage, cut point) of transfer runs (baselines left out)."""
    frame = pd.DataFrame(list(records)) if not isinstance(records, pd.DataFrame) else records
    missing = [k for k in ("sampled_percentage", "sampled_cut_point", "test_acc") if k not in frame.columns]
    if missing:
        raise DataError(f"records lack {missing}; pass the run records of a results file (load_results(path)[1])")
    frame = frame.astype({"sampled_percentage": float, "sampled_cut_point": int, "test_acc": float})
    frame = frame[(frame["sampled_cut_point"] >= 0) & np.isfinite(frame["test_acc"])]
    if frame.empty:
        raise DataError("records hold no finished transfer run (only baselines or none); run the sweep first")
    grouped = frame.groupby(["sampled_percentage", "sampled_cut_point"])
    table = grouped["test_acc"].agg(test_acc="mean", test_acc_std="std", runs="count")
    if "n_train" in frame.columns:
        table["n_train"] = grouped["n_train"].mean()
    return table.reset_index().rename(columns={"sampled_percentage": "percentage", "sampled_cut_point": "cut_point"})


def _accepted_cuts(tolerance, percentage: float, best: int) -> set:
    for key, cuts in (tolerance or {}).items():
        if same_percentage(key, percentage):
            return {int(c) for c in cuts} | {best}
    return {best}


def rank_agreement(score: pd.Series, accuracy: pd.Series) -> dict:
    """Kendall's tau and Spearman's rho between ``score`` and ``accuracy`` (both indexed by cut
    point; non-finite scores left out; NaN unless both vary over two or more cuts), and the
    score's top cut (None when several cuts tie at its maximum)."""
    keep = np.isfinite(score.to_numpy(float))
    s, a = score[keep], accuracy[keep]
    varied = len(s) >= 2 and s.nunique() > 1 and a.nunique() > 1
    top = s.index[s == s.max()].tolist() if len(s) else []
    return {"kendall_tau": scipy_stats.kendalltau(s, a).statistic if varied else np.nan,
            "spearman_rho": scipy_stats.spearmanr(s, a).statistic if varied else np.nan,
            "top_cut": int(top[0]) if len(top) == 1 else None, "n_cuts": int(keep.sum()), "varied": varied}


def validate_against_sweeps(scores: pd.DataFrame, records, tolerance=None) -> pd.DataFrame:
    """Per percentage and score: Kendall's tau and Spearman's rho between the score and the mean
    test accuracy over cut points, the score's top cut, the best measured cut, and whether the
    top cut is acceptable: the best one or, given ``tolerance`` (percentage -> cut points not
    significantly worse than the best), one of those.  A score tied at its maximum over several
    cuts (LEEP and NCE are constant over cuts) has no top cut and is not acceptable."""
    accuracy = mean_accuracy(records)
    by_cut = scores.set_index("cut_point")
    rows = []
    for percentage, measured in accuracy.groupby("percentage"):
        measured = measured.set_index("cut_point")["test_acc"]
        best = int(measured.idxmax())
        accepted = _accepted_cuts(tolerance, percentage, best)
        for column in score_columns(scores):
            agreement = rank_agreement(by_cut[column].reindex(measured.index), measured)
            top = agreement["top_cut"]
            rows.append({
                "percentage": percentage, "score": column, "kendall_tau": agreement["kendall_tau"],
                "spearman_rho": agreement["spearman_rho"], "score_top_cut": pd.NA if top is None else top,
                "best_cut": best, "top_cut_ok": top is not None and top in accepted, "n_cuts": agreement["n_cuts"],
            })
    result = pd.DataFrame(rows)
    result["score_top_cut"] = result["score_top_cut"].astype("Int64")
    return result


def plot_score_vs_accuracy(scores: pd.DataFrame, records, score: str = "logme_flat", path=None):
    """One panel per percentage: ``score`` of each cut point against its measured mean test
    accuracy, points labelled with the cut, Kendall's tau in the title.  Saved to ``path`` as
    PNG when given; returns the figure (built without pyplot: nothing stays open)."""
    if score not in scores.columns:
        raise DataError(f"no score column {score!r}; choose one of {score_columns(scores)}")
    accuracy = mean_accuracy(records)
    table = validate_against_sweeps(scores[["cut_point", score]], records).set_index("percentage")
    percentages = sorted(accuracy["percentage"].unique())
    fig = Figure(figsize=(3.6 * len(percentages), 3.4))
    axes = fig.subplots(1, len(percentages), squeeze=False)
    by_cut = scores.set_index("cut_point")[score]
    for ax, percentage in zip(axes[0], percentages):
        measured = accuracy[accuracy["percentage"] == percentage]
        x = by_cut.reindex(measured["cut_point"]).to_numpy(float)
        ax.scatter(x, measured["test_acc"], color="tab:blue")
        for xi, yi, cut in zip(x, measured["test_acc"], measured["cut_point"]):
            ax.annotate(str(int(cut)), (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_title(f"{percentage:g} of target data, tau = {table.loc[percentage, 'kendall_tau']:.2f}")
        ax.set_xlabel(score)
        ax.set_ylabel("mean test accuracy")
    fig.tight_layout()
    if path is not None:
        write_png(fig, path, dpi=120)
    return fig

