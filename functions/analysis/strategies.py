"""Fine-tuning strategies side by side: accuracy per cut point and fraction of data, against
trainable parameters and time, each at the cut its validation accuracy picks tested against a
reference mode at its own (FR on the study CNN; F, plain fine-tuning, on an ImageNet backbone), and
the answer in words."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..config import LORA_MODE, REGULARISERS, TUNED_SUFFIX
from ..core.errors import DataError
from .plots import fraction_title, mode_colours, panels
from .stats import GAIN_COLUMNS, TEST_COLUMNS, as_frame, chosen_cuts, holm_family, paired_comparison, repeats_to_detect

REFERENCE = "FR"
PLAIN = "F"  # plain fine-tuning: the mode the regularisers add their penalty to


def strategy_frame(records_by_mode: dict, trainable_by_mode: dict, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per run of every mode (baselines excluded): mode, percentage, cut, repeat,
    validation and test accuracy, epochs, seconds, and the trainable parameters of that mode at that cut
    (``trainable_by_mode[mode][cut]``, for modes whose records lack them)."""
    if reference not in records_by_mode:
        raise DataError(f"the strategies are compared with {reference}: give its records too")
    frames = []
    for mode, records in records_by_mode.items():
        frame = pd.DataFrame([r for r in records if r["sampled_cut_point"] >= 0])
        if "trainable_params" not in frame:
            frame["trainable_params"] = frame["sampled_cut_point"].map(trainable_by_mode[mode])
        frames.append(frame.assign(mode=mode)[["mode", "sampled_percentage", "sampled_cut_point", "repeat",
                                               "val_acc", "test_acc", "epochs", "seconds", "trainable_params"]])
    return pd.concat(frames, ignore_index=True)


def best_cuts(frame: pd.DataFrame, baseline_records) -> pd.DataFrame:
    """Per percentage and mode, the cut point :func:`~functions.analysis.stats.chosen_cuts` picks: its mean validation and
    test accuracy and test standard deviation over all its repeats, trainable parameters, mean
    epochs and seconds per run; the baseline beside them."""
    means = frame.groupby(["sampled_percentage", "mode", "sampled_cut_point"]).agg(
        val_acc=("val_acc", "mean"), test_acc=("test_acc", "mean"), std=("test_acc", "std"),
        trainable_params=("trainable_params", "first"), epochs=("epochs", "mean"),
        seconds=("seconds", "mean"), repeats=("repeat", "count")).reset_index()
    chosen = chosen_cuts(frame, by=("sampled_percentage", "mode"))
    picked = [chosen[(p, m)] == c for p, m, c in zip(means["sampled_percentage"], means["mode"], means["sampled_cut_point"])]
    best = means[picked].rename(columns={"sampled_cut_point": "best_cut"})
    base = as_frame(baseline_records).groupby("sampled_percentage")["test_acc"].agg(["mean", "std"])
    best["baseline"] = best["sampled_percentage"].map(base["mean"])
    best["gain_over_baseline"] = best["test_acc"] - best["baseline"]
    order = {mode: i for i, mode in enumerate(frame["mode"].unique())}
    best = best.sort_values(["sampled_percentage", "mode"], key=lambda c: c.map(order) if c.name == "mode" else c)
    return best.set_index(["sampled_percentage", "mode"])[
        ["best_cut", "repeats", "val_acc", "test_acc", "std", "baseline", "gain_over_baseline", "trainable_params",
         "epochs", "seconds"]]


def against_reference(frame: pd.DataFrame, best: pd.DataFrame, alpha: float = 0.05, seed: int = 0,
                      reference: str = REFERENCE) -> pd.DataFrame:
    """Is a strategy better than the ``reference`` mode?  Per percentage, each strategy at its chosen
    cut (``best``, from :func:`best_cuts`) against the reference at its own, runs paired by repeat (trained on the same subset): the
    mean test-accuracy difference with a 95% bootstrap interval, the exact Wilcoxon p, Holm-adjusted
    over the strategies of the percentage (the family of this question: one test per strategy, not
    one per strategy and cut), and the repeats that would detect a difference of the measured size
    and spread with 80% power."""
    rng = np.random.default_rng(seed)
    rows = []
    for percentage, chosen in best.groupby(level="sampled_percentage"):
        chosen = chosen.droplevel("sampled_percentage")["best_cut"]
        runs = frame[frame["sampled_percentage"] == percentage]
        accuracy = {mode: runs[(runs["mode"] == mode) & (runs["sampled_cut_point"] == cut)].set_index("repeat")["test_acc"]
                    for mode, cut in chosen.items()}
        family = [{"sampled_percentage": percentage, "mode": mode, "cut": int(chosen[mode]),
                   "reference_cut": int(chosen[reference]),
                   **paired_comparison(accuracy[mode], accuracy[reference], rng, len(chosen) - 1, alpha)}
                  for mode in chosen.index if mode != reference]
        rows += holm_family(family, alpha)
    return pd.DataFrame(rows, columns=["sampled_percentage", "mode", "cut", "reference_cut", *GAIN_COLUMNS,
                                       *TEST_COLUMNS[1:], "repeats_for_power"])


def is_regularised(mode: str) -> bool:
    """Whether ``mode`` (tuned or not) is a regulariser of plain fine-tuning (L2-SP, DELTA, BSS)."""
    return mode.removesuffix(TUNED_SUFFIX) in REGULARISERS


def regularised_modes(best: pd.DataFrame) -> list[str]:
    """F and its regularisers among the modes of ``best``, in its order: one question of their own
    (does the penalty beat F itself?), tuned and tested apart from the strategies against FR."""
    return [mode for mode in dict.fromkeys(best.index.get_level_values("mode"))
            if mode == PLAIN or is_regularised(mode)]


def accuracy_against(frame: pd.DataFrame, baseline_records, x: str = "trainable_params",
                     sizes: dict | None = None) -> Figure:
    """Mean test accuracy of each (mode, cut point) against ``x`` (trainable parameters, or seconds
    per run), log scale where the values span a decade or more, one panel per percentage (``sizes``
    names one in words); the baseline's mean a dashed line."""
    labels = {"trainable_params": "trainable parameters", "seconds": "seconds per run"}
    if x not in labels:
        raise DataError(f"x={x!r}: choose one of {list(labels)}")
    means = frame.groupby(["sampled_percentage", "mode", "sampled_cut_point"])[["test_acc", x]].mean().reset_index()
    base = as_frame(baseline_records).groupby("sampled_percentage")["test_acc"].mean()
    percentages = sorted(means["sampled_percentage"].unique())
    fig, axes = panels(len(percentages), size=(5.5 * len(percentages), 4.2))
    modes = list(frame["mode"].unique())
    shapes = "osD^vP*Xph<>dH8"
    markers, colours = {mode: shapes[i % len(shapes)] for i, mode in enumerate(modes)}, mode_colours(modes)
    for ax, percentage in zip(axes, percentages):
        for mode, marker in markers.items():
            points = means[(means["sampled_percentage"] == percentage) & (means["mode"] == mode)]
            ax.scatter(points[x], points["test_acc"], marker=marker, color=colours[mode], label=mode, alpha=0.8)
        if percentage in base.index:
            ax.axhline(base[percentage], color="0.4", linestyle="--", label="baseline")
        shown = means[means["sampled_percentage"] == percentage][x]
        spread = shown.max() / shown.min()
        ax.set(xscale="log" if spread >= 10 else "linear", xlabel=labels[x],
               title=(sizes or {}).get(percentage) or fraction_title(percentage), ylabel="mean test accuracy")
        if 10 <= spread < 100:  # under two decades the powers of ten alone leave the axis nearly bare
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(_compact))
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap
    axes[-1].legend(title="mode (one point per cut)", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def _compact(value: float, _position=None) -> str:
    """An axis label short enough for a narrow panel: 2.5M, 300k, 1,200, 0.5."""
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def verdict(frame: pd.DataFrame, best: pd.DataFrame, tests: pd.DataFrame, alpha: float = 0.05,
            reference: str = REFERENCE, size_names: dict | None = None) -> str:
    """Per percentage: the strategy whose validation-chosen cut scores best on the test split, its
    difference from the ``reference`` mode with its interval, the fewest trainable parameters of any
    (mode, cut point) reaching the reference's accuracy, and what the tests against it can conclude
    with these repeats.  ``size_names`` names a percentage in words (default: "1% of the data")."""
    means = frame.groupby(["sampled_percentage", "mode", "sampled_cut_point"]).agg(
        test_acc=("test_acc", "mean"), trainable_params=("trainable_params", "first")).reset_index()
    lines = []
    for percentage, table in best.groupby(level="sampled_percentage"):
        table = table.droplevel("sampled_percentage")
        winner = table["test_acc"].idxmax()
        top, own = table.loc[winner], table.loc[reference]
        points = means[(means["sampled_percentage"] == percentage) & (means["test_acc"] >= own["test_acc"])]
        cheapest = points.loc[points["trainable_params"].idxmin()]
        family = tests[tests["sampled_percentage"] == percentage]
        size = (size_names or {}).get(percentage, f"{percentage * 100:g}% of the data")
        line = (f"{size}, each mode at the cut its validation accuracy picks: {winner} "
                f"scores best (cut {int(top['best_cut'])}, {top['test_acc']:.3f}, "
                f"{top['gain_over_baseline']:+.3f} over the baseline, {int(top['trainable_params']):,} trainable "
                f"parameters)")
        if winner != reference:
            row = family[family["mode"] == winner].iloc[0]
            line += (f", {row['gain']:+.3f} over {reference} at its cut {int(own['best_cut'])} (95% CI "
                     f"{row['ci95_low']:+.3f} to {row['ci95_high']:+.3f}, n = {int(row['n'])})")
        if cheapest["mode"] == reference:
            line += (f". No strategy reaches {reference}'s accuracy with fewer trainable parameters than {reference} "
                     f"at cut {int(cheapest['sampled_cut_point'])} ({int(cheapest['trainable_params']):,}). ")
        else:
            line += (f". The fewest trainable parameters reaching {reference}'s accuracy: {cheapest['mode']} at cut "
                     f"{int(cheapest['sampled_cut_point'])} ({int(cheapest['trainable_params']):,} against "
                     f"{reference}'s {int(own['trainable_params']):,}). ")
        if family.empty:
            lines.append(line.strip())
            continue
        better = family[family["significant"] & (family["gain"] > 0)]
        worse = family[family["significant"] & (family["gain"] < 0)]
        if family["detectable"].any():
            line += (f"Against {reference}, {len(better)} of {len(family)} strategies are significantly better and "
                     f"{len(worse)} significantly worse (Wilcoxon, Holm over the {len(family)} strategies, "
                     f"alpha {alpha}).")
        else:
            repeats = int(family["n"].max())
            line += (f"With {repeats} repeats no strategy can differ significantly from {reference} (an exact Wilcoxon "
                     f"test's smallest p is {2 / 2 ** repeats:.3g}, {family['smallest_p_holm'].min():.3g} after "
                     f"Holm's correction over {len(family)} strategies); {repeats_to_detect(len(family), alpha)} "
                     f"repeats could.")
        lines.append(line)
    return "\n".join(lines)


SETTING_NAMES = {"lr": "learning rate", "weight": "regulariser weight"}


def chosen_rates(records_by_mode: dict, setting: str = "lr") -> pd.DataFrame:
    """How often each mode's runs chose each value of ``setting`` on validation (``lr``: modes
    ``<mode>-tuned``; ``weight``: the regularisers): rows modes, columns the values, cells counts
    of runs."""
    name = SETTING_NAMES[setting]
    rows = [{"mode": mode, name: record[f"chosen_{setting}"]}
            for mode, records in records_by_mode.items() for record in records if f"chosen_{setting}" in record]
    if not rows:
        raise DataError(f"no run chose a {name}: give the records of modes that choose one")
    table = pd.crosstab(pd.DataFrame(rows)["mode"], pd.DataFrame(rows)[name])
    prefix = f"val_acc_{setting}"
    candidates = sorted({float(key.removeprefix(prefix)) for records in records_by_mode.values()
                         for record in records for key in record if key.startswith(prefix)})
    table = table.reindex(index=[m for m in records_by_mode if m in table.index], columns=candidates, fill_value=0)
    return table.rename(columns="{:g}".format)


def chosen_lora_modes(best: pd.DataFrame) -> dict:
    """Per percentage where ``best`` (:func:`best_cuts`) holds several LoRA ranks (modes
    ``lora_r<rank>``), the one with the highest mean validation accuracy at its chosen cut: the
    rank a researcher would pick without looking at the test split."""
    picked = {}
    for percentage, table in best.groupby(level="sampled_percentage"):
        ranks = table.droplevel("sampled_percentage").filter(regex=LORA_MODE.pattern, axis=0)
        if len(ranks) > 1:
            picked[percentage] = ranks["val_acc"].idxmax()
    return picked


def modes_to_tune(best: pd.DataFrame) -> list[str]:
    """The modes of ``best`` in its order, LoRA only at the rank validation picks (at some
    percentage) where it holds several: the modes whose learning rate is then chosen and compared
    with FR's (F and its regularisers are tuned as a question of their own: :func:`regularised_modes`)."""
    chosen = set(chosen_lora_modes(best).values())
    modes = [mode for mode in dict.fromkeys(best.index.get_level_values("mode")) if mode not in regularised_modes(best)]
    return [mode for mode in modes if not chosen or not LORA_MODE.fullmatch(mode) or mode in chosen]


def chosen_lora_rank(best: pd.DataFrame) -> str:
    """:func:`chosen_lora_modes` in words, with every rank's validation accuracy beside it."""
    lines = []
    for percentage, mode in chosen_lora_modes(best).items():
        table = best.loc[percentage]
        validation = {int(LORA_MODE.fullmatch(m)[1]): table.loc[m, "val_acc"] for m in table.index
                      if LORA_MODE.fullmatch(m)}
        rank = int(LORA_MODE.fullmatch(mode)[1])
        others = ", ".join(f"{r}: {v:.4f}" for r, v in validation.items() if r != rank)
        lines.append(f"{percentage * 100:g}% of the data: LoRA's rank chosen on validation is {rank} (mean "
                     f"validation accuracy {validation[rank]:.4f}; other ranks {others}); its learning rate is "
                     f"chosen next, at that rank.")
    return "\n".join(lines)


def spread_against_gain(frame: pd.DataFrame, tests: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per percentage and strategy: its difference from the ``reference`` mode (``tests``, from
    :func:`against_reference`) beside its spread across seeds (the standard deviation of its test
    accuracy over repeats at its chosen cut, and of the paired differences); ``within_spread``
    where the mean difference is smaller than the paired differences' spread, so the next single
    run can reverse it."""
    rows = []
    for _, test in tests.iterrows():
        percentage = test["sampled_percentage"]
        runs = frame[frame["sampled_percentage"] == percentage]
        mine = runs[(runs["mode"] == test["mode"]) & (runs["sampled_cut_point"] == test["cut"])].set_index("repeat")
        theirs = runs[(runs["mode"] == reference) & (runs["sampled_cut_point"] == test["reference_cut"])]
        difference = (mine["test_acc"] - theirs.set_index("repeat")["test_acc"]).dropna()
        rows.append({"sampled_percentage": percentage, "mode": test["mode"], "gain": test["gain"],
                     "std_across_seeds": mine["test_acc"].std(), "std_of_differences": difference.std(),
                     "within_spread": abs(test["gain"]) < difference.std()})
    return pd.DataFrame(rows).set_index(["sampled_percentage", "mode"])


def spread_verdict(spread: pd.DataFrame, reference: str = REFERENCE, size_names: dict | None = None) -> str:
    """One line per percentage from :func:`spread_against_gain`: which strategies differ from
    ``reference`` by less than their paired differences vary from seed to seed, so that one run
    says nothing of the sign (whether the mean difference holds is the tests' question);
    ``size_names`` names a percentage in words, as :func:`verdict` does."""
    lines = []
    for percentage, table in spread.groupby(level="sampled_percentage"):
        table = table.droplevel("sampled_percentage")
        noisy = table[table["within_spread"]]
        clear = table[~table["within_spread"]]
        named = "; ".join(f"{mode} {row['gain']:+.3f} (spread {row['std_of_differences']:.3f})"
                          for mode, row in noisy.iterrows())
        line = f"{(size_names or {}).get(percentage, f'{percentage * 100:g}% of the data')}: "
        line += (f"{len(noisy)} of {len(table)} strategies differ from {reference} on average by less than their "
                 f"paired differences vary from one seed to the next (standard deviation), so a single run of them "
                 f"can land on either side of {reference}: {named}." if len(noisy)
                 else f"every strategy differs from {reference} by more than its spread across seeds.")
        if len(noisy) and len(clear):
            line += " Beyond their spread: " + "; ".join(
                f"{mode} {row['gain']:+.3f} (spread {row['std_of_differences']:.3f})" for mode, row in clear.iterrows()) + "."
        lines.append(line)
    return "\n".join(lines)
