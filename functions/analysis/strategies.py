"""Fine-tuning strategies side by side: accuracy per cut point and fraction of data, against
trainable parameters and time, tested against FR run by run, and the answer in words."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..core.errors import DataError
from .plots import fraction_title, panels
from .stats import as_frame, holm, paired_wilcoxon

REFERENCE = "FR"


def strategy_frame(records_by_mode: dict, trainable_by_mode: dict) -> pd.DataFrame:
    """One row per run of every mode (baselines excluded): mode, percentage, cut, repeat,
    test accuracy, epochs, seconds, and the trainable parameters of that mode at that cut
    (``trainable_by_mode[mode][cut]``, for modes whose records lack them)."""
    if REFERENCE not in records_by_mode:
        raise DataError(f"the strategies are compared with {REFERENCE}: give its records too")
    frames = []
    for mode, records in records_by_mode.items():
        frame = pd.DataFrame([r for r in records if r["sampled_cut_point"] >= 0])
        if "trainable_params" not in frame:
            frame["trainable_params"] = frame["sampled_cut_point"].map(trainable_by_mode[mode])
        frames.append(frame.assign(mode=mode)[["mode", "sampled_percentage", "sampled_cut_point", "repeat",
                                               "test_acc", "epochs", "seconds", "trainable_params"]])
    return pd.concat(frames, ignore_index=True)


def best_cuts(frame: pd.DataFrame, baseline_records) -> pd.DataFrame:
    """Per percentage and mode, the cut point with the highest mean test accuracy: its mean and
    standard deviation, trainable parameters, mean epochs and seconds per run; the baseline beside
    them."""
    means = frame.groupby(["sampled_percentage", "mode", "sampled_cut_point"]).agg(
        test_acc=("test_acc", "mean"), std=("test_acc", "std"), trainable_params=("trainable_params", "first"),
        epochs=("epochs", "mean"), seconds=("seconds", "mean")).reset_index()
    best = means.loc[means.groupby(["sampled_percentage", "mode"], sort=False)["test_acc"].idxmax()]
    best = best.rename(columns={"sampled_cut_point": "best_cut"})
    base = as_frame(baseline_records).groupby("sampled_percentage")["test_acc"].agg(["mean", "std"])
    best["baseline"] = best["sampled_percentage"].map(base["mean"])
    best["gain_over_baseline"] = best["test_acc"] - best["baseline"]
    order = {mode: i for i, mode in enumerate(frame["mode"].unique())}
    best = best.sort_values(["sampled_percentage", "mode"], key=lambda c: c.map(order) if c.name == "mode" else c)
    return best.set_index(["sampled_percentage", "mode"])[
        ["best_cut", "test_acc", "std", "baseline", "gain_over_baseline", "trainable_params", "epochs", "seconds"]]


def against_reference(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Each strategy against FR at the same cut point and percentage, runs paired by repeat (they
    trained on the same subset): mean difference, Wilcoxon p, Holm-adjusted within the percentage."""
    rows = []
    for percentage, runs in frame.groupby("sampled_percentage"):
        table = runs.pivot_table(index=["sampled_cut_point", "repeat"], columns="mode", values="test_acc")
        family = []
        for mode in (m for m in frame["mode"].unique() if m != REFERENCE):
            for cut, pair in table[[mode, REFERENCE]].dropna().groupby(level="sampled_cut_point"):
                statistic, p, note = paired_wilcoxon(pair[mode], pair[REFERENCE], alpha)
                family.append({"sampled_percentage": percentage, "mode": mode, "cut": cut, "n": len(pair),
                               "mean_diff": (pair[mode] - pair[REFERENCE]).mean(), "p": p, "note": note})
        for row, p_holm in zip(family, holm([row["p"] for row in family])):
            rows.append({**row, "p_holm": p_holm, "significant": bool(p_holm < alpha)})
    return pd.DataFrame(rows, columns=["sampled_percentage", "mode", "cut", "n", "mean_diff", "p", "p_holm",
                                       "significant", "note"])


def accuracy_against(frame: pd.DataFrame, baseline_records, x: str = "trainable_params") -> Figure:
    """Mean test accuracy of each (mode, cut point) against ``x`` (trainable parameters, or seconds
    per run), log scale, one panel per percentage; the baseline's mean a dashed line."""
    labels = {"trainable_params": "trainable parameters", "seconds": "seconds per run"}
    if x not in labels:
        raise DataError(f"x={x!r}: choose one of {list(labels)}")
    means = frame.groupby(["sampled_percentage", "mode", "sampled_cut_point"])[["test_acc", x]].mean().reset_index()
    base = as_frame(baseline_records).groupby("sampled_percentage")["test_acc"].mean()
    percentages = sorted(means["sampled_percentage"].unique())
    fig, axes = panels(len(percentages), size=(5.5 * len(percentages), 4.2))
    markers = dict(zip(frame["mode"].unique(), "osD^vP*Xph"))
    for ax, percentage in zip(axes, percentages):
        for mode, marker in markers.items():
            points = means[(means["sampled_percentage"] == percentage) & (means["mode"] == mode)]
            ax.scatter(points[x], points["test_acc"], marker=marker, label=mode, alpha=0.8)
        if percentage in base.index:
            ax.axhline(base[percentage], color="0.4", linestyle="--", label="baseline")
        ax.set(xscale="log", title=fraction_title(percentage), xlabel=labels[x], ylabel="mean test accuracy")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap
    axes[-1].legend(title="mode (one point per cut)", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def verdict(frame: pd.DataFrame, best: pd.DataFrame, tests: pd.DataFrame) -> str:
    """Per percentage: the strategy with the best cut point, its gain over FR's best cut and over
    the baseline, the fewest trainable parameters of any (mode, cut point) reaching FR's best mean
    accuracy, and how many strategy-vs-FR comparisons are significant."""
    means = frame.groupby(["sampled_percentage", "mode", "sampled_cut_point"]).agg(
        test_acc=("test_acc", "mean"), trainable_params=("trainable_params", "first")).reset_index()
    lines = []
    for percentage, table in best.groupby(level="sampled_percentage"):
        table = table.droplevel("sampled_percentage")
        winner = table["test_acc"].idxmax()
        top, reference = table.loc[winner], table.loc[REFERENCE]
        points = means[(means["sampled_percentage"] == percentage) & (means["test_acc"] >= reference["test_acc"])]
        cheapest = points.loc[points["trainable_params"].idxmin()]
        family = tests[tests["sampled_percentage"] == percentage]
        better = family[family["significant"] & (family["mean_diff"] > 0)]
        worse = family[family["significant"] & (family["mean_diff"] < 0)]
        lines.append(
            f"{percentage:g} of the data: {winner} is best (cut {int(top['best_cut'])}, {top['test_acc']:.3f}; "
            f"{top['test_acc'] - reference['test_acc']:+.3f} over FR's best cut {int(reference['best_cut'])}, "
            f"{top['gain_over_baseline']:+.3f} over the baseline, {int(top['trainable_params']):,} trainable "
            f"parameters). The fewest trainable parameters reaching FR's best accuracy: {cheapest['mode']} at cut "
            f"{int(cheapest['sampled_cut_point'])} ({int(cheapest['trainable_params']):,} against FR's "
            f"{int(reference['trainable_params']):,}). Against FR at the same cut, {len(better)} of {len(family)} "
            f"comparisons are significantly better and {len(worse)} significantly worse (Wilcoxon, Holm, alpha 0.05).")
    return "\n".join(lines)
