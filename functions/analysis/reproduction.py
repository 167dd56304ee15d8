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
    """Per percentage: the baseline, the best cut point (highest mean), its gain over the baseline,
    the spread between the cut points' means (best minus worst) and the worst cut point."""
    rows = {}
    for percentage, group in table.groupby("percentage"):
        cuts, base = group[group.cut_point != BASELINE_CUT], group[group.cut_point == BASELINE_CUT]
        if cuts.empty or base.empty:
            continue
        best, worst = cuts.loc[cuts["mean"].idxmax()], cuts.loc[cuts["mean"].idxmin()]
        rows[percentage] = {"baseline": base["mean"].iloc[0], "best_cut": int(best.cut_point),
                            "best_cut_acc": best["mean"], "gain": best["mean"] - base["mean"].iloc[0],
                            "cut_spread": cuts["mean"].max() - cuts["mean"].min(), "worst_cut": int(worst.cut_point)}
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
    order = ["baseline", "best_cut", "gain", "cut_spread", "worst_cut"]
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


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def differences_text(tables: dict, small: float = 0.001, full: float = 1.0) -> list[str]:
    """Why the two studies differ, as markdown bullets written from the side-by-side tables
    (:func:`side_by_side` per (folder, setup, mode)); a bullet whose studies are not among the
    tables is left out."""
    mnist, fashion = ("MNIST", "regular", "FR"), ("FashionMNIST", "regular", "FR")
    crossing = [("MNIST_to_FashionMNIST", "cross", "FR"), ("FashionMNIST_to_MNIST", "cross", "FR")]

    def v(key, quantity, study, percentage):
        return tables[key].loc[percentage, (quantity, study)]

    bullets = []
    starved = mnist in tables and all(v(mnist, "baseline", "upstream", p) < v(mnist, "baseline", "ours", p) - 0.05
                                      for p in (0.01, 0.1))
    if starved:  # otherwise the studies' baselines agree and this explanation does not apply
        below_own = v(mnist, "baseline", "upstream", 0.1) < v(mnist, "baseline", "upstream", 0.01)
        bullets.append(
            f"**Upstream's baselines were starved.** At 1% and 10% of the data its baseline sits far below ours "
            f"(MNIST: {v(mnist, 'baseline', 'upstream', 0.01):.3f} against {v(mnist, 'baseline', 'ours', 0.01):.3f} "
            f"at 1%, {v(mnist, 'baseline', 'upstream', 0.1):.3f} against {v(mnist, 'baseline', 'ours', 0.1):.3f} "
            f"at 10%)"
            f"{', and at 10% below its own 1% value' if below_own else ''}: with batches of 4,096, a run on 2,645 "
            f"images makes one optimiser step per epoch and early stopping ends it long before it converges. "
            f"Pretrained blocks start from useful features and need fewer steps, so upstream's gains there "
            f"(MNIST {v(mnist, 'gain', 'upstream', 0.01):+.3f} and {v(mnist, 'gain', 'upstream', 0.1):+.3f}) "
            f"measure mostly how far its baseline "
            f"was from convergence. With every epoch making at least 100 steps our baselines converge, and the "
            f"gains that remain (MNIST {v(mnist, 'gain', 'ours', 0.01):+.3f} at 1%, "
            f"{v(mnist, 'gain', 'ours', 0.1):+.3f} at 10%) are what transfer is worth there.")
    if mnist in tables and fashion in tables:
        agree = all(v(k, "gain", s, small) > v(k, "gain", s, full) for k in (mnist, fashion)
                    for s in ("ours", "upstream"))
        bullets.append(
            f"**With the least data both studies {'agree' if agree else 'differ'}.** At {_percent(small)} the best cut "
            f"gains {v(mnist, 'gain', 'ours', small):+.3f} on MNIST here and "
            f"{v(mnist, 'gain', 'upstream', small):+.3f} "
            f"upstream, {v(fashion, 'gain', 'ours', small):+.3f} and {v(fashion, 'gain', 'upstream', small):+.3f} on "
            f"FashionMNIST" + (": in both, transferred features help most where the data cannot teach them."
                               if agree else "."))
        small_fractions = [p for p in tables[mnist].index if p <= 0.1]
        theirs = sorted({int(v(k, "best_cut", "upstream", p)) for k in (mnist, fashion) for p in small_fractions})
        ours = ", ".join(f"{int(v(mnist, 'best_cut', 'ours', p))} at {_percent(p)}" for p in small_fractions)
        spreads = [v(k, "cut_spread", "ours", full) for k in (mnist, fashion)]
        worst = sorted({int(v(k, "worst_cut", "ours", full)) for k in (mnist, fashion)})
        bullets.append(
            f"**Where to cut.** Upstream's best cut at the fractions up to 10% is "
            f"{' or '.join(map(str, theirs))}; here, on MNIST, {ours}. With all the data our cut points end within "
            f"{min(spreads):.3f} (MNIST) to {max(spreads):.3f} (FashionMNIST) of each other, the worst being cut "
            f"{' and '.join(map(str, worst))}.")
    crosses = [k for k in crossing if k in tables]
    if crosses and mnist in tables:
        gains = "; ".join(f"{k[0].replace('_', ' ')}: {v(k, 'gain', 'ours', small):+.3f} here, "
                          f"{v(k, 'gain', 'upstream', small):+.3f} upstream" for k in crosses)
        spreads = "; ".join(f"{k[0].replace('_', ' ')}, {v(k, 'cut_spread', 'ours', full):.3f} here (worst cut "
                            f"{int(v(k, 'worst_cut', 'ours', full))}) and {v(k, 'cut_spread', 'upstream', full):.3f} "
                            f"upstream" for k in crosses)
        within, apart = v(mnist, "gain", "ours", small), v(mnist, "cut_spread", "ours", full)
        less = all(v(k, "gain", "ours", small) < within for k in crosses)
        wider = all(v(k, "cut_spread", "ours", full) > apart for k in crosses)
        bullets.append(
            f"**Across datasets.** With {_percent(small)} of the data the best cut gains {gains}; "
            f"{'less than' if less else 'not always less than'} within one dataset (MNIST {within:+.3f}). With all "
            f"the data the best and the worst cut point end {'further apart than within MNIST' if wider else 'apart'} "
            f"(MNIST {apart:.3f} here; {spreads})"
            + (": frozen layers learnt on the other dataset cost accuracy that the target data would have bought."
               if wider else "."))
    modes = {m: ("FashionMNIST", "regular", m) for m in ("F", "FT")}
    if fashion in tables and all(k in tables for k in modes.values()):
        f_key, ft_key = modes["F"], modes["FT"]
        upstream_full = ", ".join(f"{v(k, 'gain', 'upstream', full):+.3f}" for k in (fashion, f_key, ft_key))
        bullets.append(
            f"**The other modes (FashionMNIST, F and FT).** Fine-tuning the layers after the cut (F) gains "
            f"{v(f_key, 'gain', 'ours', small):+.3f} at {_percent(small)} here "
            f"({v(f_key, 'gain', 'upstream', small):+.3f} "
            f"upstream) and {v(f_key, 'gain', 'ours', full):+.3f} with all the data "
            f"({v(f_key, 'gain', 'upstream', full):+.3f} upstream). Keeping only the blocks before the cut and a new "
            f"head (FT) gains {v(ft_key, 'gain', 'ours', small):+.3f} at {_percent(small)} here (cut "
            f"{int(v(ft_key, 'best_cut', 'ours', small))}; upstream {v(ft_key, 'gain', 'upstream', small):+.3f}, cut "
            f"{int(v(ft_key, 'best_cut', 'upstream', small))}) and {v(ft_key, 'gain', 'ours', full):+.3f} with all "
            f"the data. Upstream's full-data gains ({upstream_full} "
            f"in FR, F and FT) stand on a baseline of {v(fashion, 'baseline', 'upstream', full):.3f} against our "
            f"{v(fashion, 'baseline', 'ours', full):.3f}.")
    if mnist in tables:
        here, there = v(mnist, "baseline", "ours", full), v(mnist, "baseline", "upstream", full)
        bullets.append(
            f"**The network.** The quick network has 16 channels where upstream's has 64; with all the data the "
            f"baselines reach {here:.3f} here and {there:.3f} upstream on MNIST"
            + (", so the narrower network does not explain the differences above." if abs(here - there) <= 0.01
               else ", so part of the differences above may come from the narrower network."))
    return [f"- {b}" for b in bullets]


# ---------------------------------------------------------------------------- across networks

SMALL_CNN, IMAGENET = "small CNN", "ImageNet EfficientNet-Lite0"


def across_networks(headlines: dict, margin: float = 0.01) -> pd.DataFrame:
    """The study's answers per study, for the small CNN and the ImageNet network side by side.

    ``headlines``: ``(network, folder, mode) -> (headline table, depth, images)`` (:func:`headline`
    of one study's results, indexed by the share of the training data; ``depth`` its number of
    cut points; ``images`` the training images of its smallest and largest sizes).  Per study: the gain of the best cut point over the baseline with the least and with
    all the data, where that cut sits (as a share of the network's depth), and the two findings
    of the upstream study, with a margin of ``margin``."""
    rows = []
    for (network, folder, mode), (table, depth, (fewest, images)) in headlines.items():
        least, full = table.index.min(), table.index.max()
        small_gain, full_gain = float(table.loc[least, "gain"]), float(table.loc[full, "gain"])
        rows.append({"network": network, "folder": folder, "mode": mode, "least data": least, "least images": fewest, "all images": images,
                     "gain with least data": small_gain, "best cut with least data": int(table.loc[least, "best_cut"]),
                     "gain with all data": full_gain, "best cut with all data": int(table.loc[full, "best_cut"]),
                     "depth": depth,
                     "helps most with least data": small_gain > margin and small_gain > full_gain,
                     "stops helping with all data": full_gain <= margin})
    return pd.DataFrame(rows)


def _studies(group: pd.DataFrame, column: str) -> str:
    named = [f"{r.folder} {r.mode}" for r in group.itertuples() if r._asdict()[column]]
    return ", ".join(named) if named else "none"


def _depth_share(group: pd.DataFrame, column: str) -> float:
    return float((group[column] / group["depth"]).mean())


def across_networks_text(table: pd.DataFrame) -> list[str]:
    """Where the two networks agree and where they do not, as markdown bullets written from
    :func:`across_networks`'s table."""
    helps, stops = "helps most with least data", "stops helping with all data"
    bullets = []
    for network, group in table.groupby("network", sort=False):
        bullets.append(
            f"**{network}** ({len(group)} studies): transfer helps most with the least data in "
            f"{int(group[helps].sum())} ({_studies(group.rename(columns={helps: 'h'}), 'h')}); with all the data it "
            f"stops helping in {int(group[stops].sum())} ({_studies(group.rename(columns={stops: 's'}), 's')}). "
            f"The best cut point keeps on average {_depth_share(group, 'best cut with least data'):.0%} of the "
            f"network's depth with the least data and {_depth_share(group, 'best cut with all data'):.0%} with all of "
            f"it; the best gain with the least data ({group['least images'].min():,} to {group['least images'].max():,} "
            f"training images) ranges from {group['gain with least data'].min():+.3f} to "
            f"{group['gain with least data'].max():+.3f}, with all of it ({group['all images'].min():,} to "
            f"{group['all images'].max():,} training images) from {group['gain with all data'].min():+.3f} "
            f"to {group['gain with all data'].max():+.3f}.")
    networks = list(table.groupby("network", sort=False))
    if len(networks) == 2:
        (first, a), (second, b) = networks
        for column, finding in ((helps, "transfer helps most with the least data"),
                                (stops, "with all the data transfer stops helping")):
            share_a, share_b = a[column].mean(), b[column].mean()
            verdict = "agree" if (share_a > 0.5) == (share_b > 0.5) else "do not agree"
            bullets.append(f"**'{finding.capitalize()}': the networks {verdict}** ({share_a:.0%} of the {first} "
                           f"studies, {share_b:.0%} of the {second} studies).")
        small, large = sorted([(first, a), (second, b)], key=lambda item: item[1]["all images"].max())
        if small[1]["all images"].max() < large[1]["all images"].min() and small[1][stops].mean() < 0.5:
            bullets.append(
                f"**Why: 'all the data' is not the same amount.** The {small[0]} studies' largest size is "
                f"{small[1]['all images'].max():,} training images, below the {large[0]} studies' smallest largest size "
                f"({large[1]['all images'].min():,}); a network trained from its random initialisation on that few "
                f"images is still far from what it can reach, so pretrained layers go on helping at every size measured "
                f"there. The finding that transfer stops helping belongs to targets large enough to train the "
                f"network from scratch.")
    return bullets


def reinitialising_cost(table: pd.DataFrame) -> pd.DataFrame:
    """Per network and folder with both modes: the best cut's gain in F minus FR's, with the least
    and with all the data (above 0: keeping the later layers' pretrained weights beats drawing them anew)."""
    rows = []
    for (network, folder), group in table.groupby(["network", "folder"], sort=False):
        modes = group.set_index("mode")
        if {"F", "FR"} <= set(modes.index):
            rows.append({"network": network, "folder": folder,
                         **{f"F minus FR, {which}": modes.loc["F", f"gain with {which}"] - modes.loc["FR", f"gain with {which}"]
                            for which in ("least data", "all data")}})
    return pd.DataFrame(rows)
