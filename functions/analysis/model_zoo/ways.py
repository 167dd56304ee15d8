"""Feature extraction or fine-tuning, per model: what the zoo's ways files measured (each model
transferred both ways on a sample of each bank's tasks, with what adapting it cost), and the
candidates a recommendation weighs, model x way, each with its predicted accuracy, interval and
cost per training image.

Fine-tuned accuracies are predicted as the probe's are (:mod:`.intervals`): gradient-boosted trees
on the same model and task metadata and scores, fitted on the tasks that were fine-tuned, with
conformal intervals from their held-out errors.  Costs are measured, not predicted: the median
over the tasks a model was measured on, per training image, on the machine that measured them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import paired_gain
from ..tradeoff import pareto_front

WAY_NAMES = {"FE": "feature extraction (linear probe)", "FT": "fine-tuning (last two stages)"}
COSTS = ("adapt_seconds_per_image", "adapt_gflops_per_image", "adapt_mwh_per_image")


def fine_tuned(records: pd.DataFrame, ways: pd.DataFrame) -> pd.DataFrame:
    """The matrix's records of the tasks that were fine-tuned, the fine-tuned accuracy in place of
    the probe's: what fine-tuning predictions learn from and are calibrated on."""
    tuned = ways.loc[ways["way"] == "FT", ["model", "task", "accuracy"]]
    return records.drop(columns="accuracy").merge(tuned, on=["model", "task"], how="inner")


def costs(ways: pd.DataFrame) -> pd.DataFrame:
    """Per (model, way): the median cost per training image over the tasks measured, and how many."""
    grouped = ways.groupby(["model", "way"])
    table = grouped[list(COSTS)].median()
    table["tasks"] = grouped["task"].nunique()
    return table


def gains(ways: pd.DataFrame, by: str = "family", seed: int = 0) -> pd.DataFrame:
    """Fine-tuning minus feature extraction, paired by (model, task), per ``by`` group: both mean
    accuracies, the mean gain with its 95% bootstrap interval and exact Wilcoxon p, the share of
    pairs fine-tuning wins, and how much more adapting costs (median ratio of GFLOPs and seconds)."""
    wide = ways.pivot_table(index=[by, "model", "task"], columns="way",
                            values=["accuracy", "adapt_gflops_per_image", "adapt_seconds_per_image"])
    rng, rows = np.random.default_rng(seed), []
    for group, pairs in wide.groupby(level=by):
        accuracy = pairs["accuracy"]
        rows.append({by: group, "pairs": len(pairs), "FE": accuracy["FE"].mean(), "FT": accuracy["FT"].mean(),
                     **{k: v for k, v in paired_gain(accuracy["FT"], accuracy["FE"], rng).items() if k != "n"},
                     "FT_wins": float((accuracy["FT"] > accuracy["FE"]).mean()),
                     "gflops_ratio": float((pairs["adapt_gflops_per_image"]["FT"] /
                                            pairs["adapt_gflops_per_image"]["FE"]).median()),
                     "seconds_ratio": float((pairs["adapt_seconds_per_image"]["FT"] /
                                             pairs["adapt_seconds_per_image"]["FE"]).median())})
    return pd.DataFrame(rows).set_index(by)


def candidates(probe: pd.DataFrame, tuned: pd.DataFrame | None, cost: pd.DataFrame,
               task_records: pd.DataFrame) -> pd.DataFrame:
    """Every (model, way) a recommendation can choose: ``probe`` and ``tuned`` are
    :func:`~.intervals.predict_with_interval` tables (the probe's and fine-tuning's predictions
    with their intervals; ``tuned`` None where nothing was fine-tuned), ``cost`` is :func:`costs`'
    table.  A way without measured cost is left out, except feature extraction, whose cost per
    training image falls back to the model's forward FLOPs and extraction time in
    ``task_records``.  ``pareto`` marks the candidates no cheaper one (in GFLOPs per training
    image) is predicted to beat."""
    parts = [probe.assign(way="FE")] + ([tuned.assign(way="FT")] if tuned is not None else [])
    table = pd.concat(parts, ignore_index=True).merge(cost.reset_index(), on=["model", "way"], how="left")
    forward = task_records.set_index("model")
    fallback = (table["way"] == "FE") & table["adapt_gflops_per_image"].isna()
    if fallback.any():
        table.loc[fallback, "adapt_gflops_per_image"] = table.loc[fallback, "model"].map(forward["flops"] / 1e9)
        table.loc[fallback, "adapt_seconds_per_image"] = table.loc[fallback, "model"].map(
            forward["extraction_ms_per_image"] / 1000)
    table = table.dropna(subset=["adapt_gflops_per_image"]).reset_index(drop=True)
    table.insert(1, "way", table.pop("way"))
    front = pareto_front(table, "adapt_gflops_per_image", "accuracy_predicted")
    table["pareto"] = table.index.isin(front.index)
    return table.sort_values("accuracy_predicted", ascending=False).reset_index(drop=True)


def choose_within(table: pd.DataFrame, budget_gflops: float) -> pd.Series | None:
    """The candidate of :func:`candidates`' table with the highest predicted accuracy at most
    ``budget_gflops`` per training image (None when every one costs more)."""
    affordable = table[table["adapt_gflops_per_image"] <= budget_gflops]
    return None if affordable.empty else affordable.loc[affordable["accuracy_predicted"].idxmax()]


def verdict(table: pd.DataFrame) -> str:
    """One sentence per group of :func:`gains`: whether fine-tuning beats feature extraction (its
    95% interval clear of 0), by how much, and at what multiple of the cost."""
    lines = []
    for group, row in table.iterrows():
        word = ("beats" if row["ci95_low"] > 0 else "loses to" if row["ci95_high"] < 0 else
                "is not distinguishable from")
        lines.append(f"{group}: fine-tuning {word} feature extraction ({row['FT']:.3f} against {row['FE']:.3f}; "
                     f"gain {row['gain']:+.3f}, 95% CI {row['ci95_low']:+.3f} to {row['ci95_high']:+.3f}, Wilcoxon "
                     f"p {row['p']:.2g} over {int(row['pairs'])} model-task pairs; it wins {row['FT_wins']:.0%} of "
                     f"them) at {row['gflops_ratio']:.1f} times the GFLOPs and {row['seconds_ratio']:.1f} times the "
                     f"time per training image.")
    return "\n".join(lines)
