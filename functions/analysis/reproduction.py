"""Our study beside the upstream one: baselines, best cut points and their gains, per fraction of data.

The upstream tables (``functions/data/upstream_results.json``) hold the mean, standard deviation
and count of test accuracy per percentage and cut point (cut -1: the baseline) of the upstream
study's results files.  Upstream measured that "test" accuracy on the training split of the
target classes; ours is measured on the official test split.
"""
from __future__ import annotations

import json
from importlib import resources

import pandas as pd

from ..core.errors import DataError
from ..data.catalog import percentage_key
from ..runs.store import BASELINE_CUT

# (folder, setup, mode) -> the upstream results file with the same source and target classes
UPSTREAM_FILES = {
    ("MNIST", "regular", "FR"): "MNIST/results/cuts_regular_classes_FR.json",
    ("FashionMNIST", "regular", "FR"): "FashionMNIST/results/cuts_regular_classes_FR.json",
    ("FashionMNIST", "regular", "F"): "FashionMNIST/results/cuts_regular_classes_F.json",
    ("FashionMNIST", "regular", "FT"): "FashionMNIST/results/cuts_regular_classes_FT.json",
    ("CIFAR", "regular", "FR"): "CIFAR/results/cuts_regular_classes_FR.json",
    ("MNIST_to_FashionMNIST", "cross", "FR"): "MNIST_to_FashionMNIST/results/cuts_regular_classes_FR.json",
    ("FashionMNIST_to_MNIST", "cross", "FR"): "FashionMNIST_to_MNIST/results/cuts_regular_classes_FR.json",
}


def upstream_tables() -> dict:
    """The upstream study's published tables, as shipped with the package."""
    return json.loads(resources.files("functions.data").joinpath("upstream_results.json").read_text())["tables"]


def upstream_frame(folder: str, setup: str, mode: str) -> pd.DataFrame:
    """Upstream mean, std and count of test accuracy per (percentage, cut point), baseline as cut -1."""
    key = (folder, setup, mode)
    if key not in UPSTREAM_FILES:
        raise DataError(f"the upstream study published no table for {folder}/{setup} mode {mode}; "
                        f"it has {sorted(UPSTREAM_FILES)}")
    tables = upstream_tables()
    cuts = tables[UPSTREAM_FILES[key]]
    baselines = tables[UPSTREAM_FILES[key].replace(f"cuts_regular_classes_{mode}", "baselines_regular_classes")]
    rows = []
    for table in (cuts, baselines):
        for cell, (mean, std, count) in table.items():
            percentage, cut = cell.split("|")
            rows.append({"percentage": float(percentage), "cut_point": int(cut), "mean": mean, "std": std,
                         "count": count})
    return pd.DataFrame(rows).sort_values(["percentage", "cut_point"], ignore_index=True)


def our_frame(records: list[dict], baselines: list[dict]) -> pd.DataFrame:
    """Our mean, std and count of test accuracy per (percentage, cut point), in the upstream layout."""
    frame = pd.DataFrame([*records, *baselines])
    stats = frame.groupby(["sampled_percentage", "sampled_cut_point"])["test_acc"].agg(["mean", "std", "count"])
    stats = stats.reset_index().rename(columns={"sampled_percentage": "percentage", "sampled_cut_point": "cut_point"})
    return stats.sort_values(["percentage", "cut_point"], ignore_index=True)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Per percentage: the baseline, the best cut point (highest mean), its gain over the baseline
    and the spread between the cut points' means (best minus worst)."""
    rows = {}
    for percentage, group in table.groupby("percentage"):
        cuts, base = group[group.cut_point != BASELINE_CUT], group[group.cut_point == BASELINE_CUT]
        if cuts.empty or base.empty:
            continue
        best = cuts.loc[cuts["mean"].idxmax()]
        rows[percentage] = {"baseline": base["mean"].iloc[0], "best_cut": int(best.cut_point),
                            "best_cut_acc": best["mean"], "gain": best["mean"] - base["mean"].iloc[0],
                            "cut_spread": cuts["mean"].max() - cuts["mean"].min()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("percentage")


def side_by_side(ours: pd.DataFrame, upstream: pd.DataFrame) -> pd.DataFrame:
    """Both studies' headlines per percentage, columns ``(quantity, study)``; percentages that
    only one study ran are left out."""
    mine, theirs = headline(ours), headline(upstream)
    keys = {percentage_key(p): p for p in mine.index}
    common = [p for p in theirs.index if percentage_key(p) in keys]
    if not common:
        raise DataError("the two studies share no percentage; run the range profile (`make range`)")
    mine = mine.loc[[keys[percentage_key(p)] for p in common]].set_axis(common)
    joined = pd.concat({"ours": mine, "upstream": theirs.loc[common]}, axis=1).swaplevel(axis=1)
    order = ["baseline", "best_cut", "gain", "cut_spread"]
    return joined[[(q, s) for q in order for s in ("ours", "upstream")]]


def findings(table: pd.DataFrame, small: float = 0.001, full: float = 1.0, margin: float = 0.01) -> dict:
    """The upstream study's headline findings tested on one side-by-side table, per study:
    transfer helps most with the least data (gain at ``small`` above ``margin`` and above the gain
    at ``full``), and with all the data it stops helping (gain at ``full`` within ``margin``);
    beside them, how far apart the cut points end with all the data."""
    out = {}
    for study in ("ours", "upstream"):
        gain, spread = table[("gain", study)], table[("cut_spread", study)]
        least, most = float(gain.loc[small]), float(gain.loc[full])
        out[study] = {"gain_with_least_data": round(least, 4), "gain_with_all_data": round(most, 4),
                      "transfer_helps_most_with_least_data": least > margin and least > most,
                      "transfer_stops_helping_with_all_data": most <= margin,
                      "cut_spread_with_all_data": round(float(spread.loc[full]), 4)}
    return out


def findings_text(key: tuple, table: pd.DataFrame, small: float = 0.001, full: float = 1.0) -> str:
    """One paragraph per (folder, setup, mode): the gains and spread of both studies, and whether
    each upstream finding holds here."""
    folder, setup, mode = key
    verdicts = findings(table, small, full)
    ours, upstream = verdicts["ours"], verdicts["upstream"]

    def holds(name: str) -> str:
        here, there = ours[name], upstream[name]
        return f"{'holds' if here else 'does not hold'} here ({'as' if here == there else 'unlike'} upstream)"

    return (f"{folder} {setup}, {mode}: with {small:.1%} of the target data the best cut point gains "
            f"{ours['gain_with_least_data']:+.3f} here (cut {table.loc[small, ('best_cut', 'ours')]}) and "
            f"{upstream['gain_with_least_data']:+.3f} upstream (cut {table.loc[small, ('best_cut', 'upstream')]}); "
            f"with all of it {ours['gain_with_all_data']:+.3f} here and {upstream['gain_with_all_data']:+.3f} "
            f"upstream, the cut points ending {ours['cut_spread_with_all_data']:.3f} apart here and "
            f"{upstream['cut_spread_with_all_data']:.3f} upstream. 'Transfer helps most with the least data' "
            f"{holds('transfer_helps_most_with_least_data')}; 'with all the data transfer stops helping' "
            f"{holds('transfer_stops_helping_with_all_data')}.")
