"""Feature extraction or fine-tuning, per model: what the zoo's ways files measured (each model
transferred each way on a sample of each bank's tasks, with what adapting it cost), and the
candidates a recommendation weighs, model x way, each with its predicted accuracy, interval and
cost per training image.

The accuracies of the other ways are predicted as the probe's are (:mod:`.intervals`):
gradient-boosted trees on the same model and task metadata and scores, fitted on the tasks that
were measured that way, with conformal intervals from their held-out errors.  Costs are measured,
not predicted: the median over the tasks a model was measured on, per training image, on the
machine that measured them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import paired_gain
from ..tradeoff import pareto_front

WAY_NAMES = {"FE": "feature extraction (linear probe)",
             "FE-layer": "feature extraction at the stage chosen on validation",
             "FT": "fine-tuning (last two stages)"}
COSTS = ("adapt_seconds_per_image", "adapt_gflops_per_image", "adapt_mwh_per_image")


def measured_way(records: pd.DataFrame, ways: pd.DataFrame, way: str) -> pd.DataFrame:
    """The matrix's records of the tasks measured ``way``, that way's accuracy in place of the
    probe's: what its predictions learn from and are calibrated on."""
    measured = ways.loc[ways["way"] == way, ["model", "task", "accuracy"]]
    return records.drop(columns="accuracy").merge(measured, on=["model", "task"], how="inner")


def costs(ways: pd.DataFrame) -> pd.DataFrame:
    """Per (model, way): the median cost per training image over the tasks measured, and how many."""
    grouped = ways.groupby(["model", "way"])
    table = grouped[list(COSTS)].median()
    table["tasks"] = grouped["task"].nunique()
    return table


def gains(ways: pd.DataFrame, by: str = "family", way: str = "FT", against: str = "FE", seed: int = 0) -> pd.DataFrame:
    """``way`` minus ``against``, paired by (model, task), per ``by`` group: both mean accuracies,
    the mean gain with its 95% bootstrap interval and exact Wilcoxon p, the share of pairs ``way``
    wins, and how much more adapting costs (median ratio of GFLOPs and seconds)."""
    wide = ways[ways["way"].isin([way, against])].pivot_table(
        index=[by, "model", "task"], columns="way",
        values=["accuracy", "adapt_gflops_per_image", "adapt_seconds_per_image"])
    rng, rows = np.random.default_rng(seed), []
    for group, pairs in wide.groupby(level=by):
        pairs = pairs.dropna(subset=[("accuracy", way), ("accuracy", against)])  # measured both ways
        accuracy = pairs["accuracy"]
        rows.append({by: group, "pairs": len(pairs), against: accuracy[against].mean(), way: accuracy[way].mean(),
                     **{k: v for k, v in paired_gain(accuracy[way], accuracy[against], rng).items() if k != "n"},
                     "wins": float((accuracy[way] > accuracy[against]).mean()),
                     "gflops_ratio": float((pairs["adapt_gflops_per_image"][way] /
                                            pairs["adapt_gflops_per_image"][against]).median()),
                     "seconds_ratio": float((pairs["adapt_seconds_per_image"][way] /
                                             pairs["adapt_seconds_per_image"][against]).median())})
    table = pd.DataFrame(rows).set_index(by)
    table.attrs["way"], table.attrs["against"] = way, against
    return table


def candidates(probe: pd.DataFrame, predicted: dict, cost: pd.DataFrame, task_records: pd.DataFrame) -> pd.DataFrame:
    """Every (model, way) a recommendation can choose: ``probe`` is the probe's
    :func:`~.intervals.predict_with_interval` table, ``predicted`` such tables of the other ways
    by name (none where nothing was measured that way), ``cost`` is :func:`costs`' table.  A way
    without measured cost is left out, except feature extraction, whose cost per training image
    falls back to the model's forward FLOPs and extraction time in ``task_records``.  ``pareto``
    marks the candidates no cheaper one (in GFLOPs per training image) is predicted to beat."""
    parts = [probe.assign(way="FE"), *(table.assign(way=way) for way, table in predicted.items())]
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
    """One sentence per group of :func:`gains`: whether its way beats the other (its 95% interval
    clear of 0), by how much, and at what multiple of the cost."""
    way, against = table.attrs["way"], table.attrs["against"]
    lines = []
    for group, row in table.iterrows():
        word = ("beats" if row["ci95_low"] > 0 else "loses to" if row["ci95_high"] < 0 else
                "is not distinguishable from")
        lines.append(f"{group}: {WAY_NAMES[way]} {word} {WAY_NAMES[against]} ({row[way]:.3f} against "
                     f"{row[against]:.3f}; gain {row['gain']:+.3f}, 95% CI {row['ci95_low']:+.3f} to "
                     f"{row['ci95_high']:+.3f}, Wilcoxon p {row['p']:.2g} over {int(row['pairs'])} model-task pairs; it "
                     f"wins {row['wins']:.0%} of them) at {row['gflops_ratio']:.1f} times the GFLOPs and "
                     f"{row['seconds_ratio']:.1f} times the time per training image.")
    return "\n".join(lines)
