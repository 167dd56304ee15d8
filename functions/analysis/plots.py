"""The study's figures, each from results records (plus baseline records), returned as a Figure.

Figures are built without pyplot, so nothing stays open or is shown twice: return one as a
notebook cell's last value (or ``display(fig)``) to see it, and :func:`save_figure` to write
``<Folder>/results/figures/<name>.png`` byte-for-byte reproducibly.
"""
from __future__ import annotations

import contextlib
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..core.atomic import locked, write_png
from ..core.errors import DataError
from ..core.paths import figure_path
from ..runs.store import BASELINE_CUT, load_results, results_path
from .clustering import layer_order, layer_scores
from .stats import as_frame

CUT_LABEL = "cut point (conv layers kept)"
STAGE_CUT_LABEL = "cut point (stages kept)"  # on a pretrained backbone, cut at its stage boundaries
FRACTION_LABEL = "fraction of target training data"
SIZE_LABEL = "training data"  # an axis whose ticks name each size in words (5 / class, all)
METRIC_LABELS = {"test_acc": "test accuracy", "train_acc": "train accuracy", "val_acc": "validation accuracy",
                 "ari": "adjusted Rand index", "nmi": "normalised mutual information",
                 "cluster_acc": "cluster accuracy", "pair_precision": "pairwise precision",
                 "pair_recall": "pairwise recall"}
BASELINE_COLOR = "0.45"
PANEL_WIDTH, PANEL_HEIGHT = 3.8, 3.4
TITLE_CHARS_PER_INCH = 10  # a figure title's characters per inch of width, at matplotlib's default size
BAND_NOTE = "bands: inter-quartile range"


def readable_log_ticks(ax) -> None:
    """A log x axis ticked at 1, 2 and 5 of each decade, written as plain numbers (0.01, not 10^-2)."""
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def cut_label(cut: int) -> str:
    return "baseline" if cut == BASELINE_CUT else str(int(cut))


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _size_tick(percentage: float, sizes: dict | None) -> str:
    """A data size's tick: its name in ``sizes`` (fraction -> words), else the fraction."""
    return (sizes or {}).get(percentage) or f"{percentage:g}"


def fraction_title(percentage: float) -> str:
    return f"{FRACTION_LABEL} = {percentage:g}"


def panels(count: int, sharey: bool = True, size: tuple | None = None) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=size or (PANEL_WIDTH * count, PANEL_HEIGHT), layout="constrained")
    axes = fig.subplots(1, count, sharey=sharey, squeeze=False)[0]
    return fig, axes


def _cut_palette(cuts) -> dict:
    """One colour per cut point, the same in every figure; the baseline grey."""
    transfer = sorted(c for c in cuts if c != BASELINE_CUT)
    colors = sns.color_palette("viridis", max(len(transfer), 1))
    palette = {cut_label(c): colors[i] for i, c in enumerate(transfer)}
    palette["baseline"] = BASELINE_COLOR
    return palette


@contextlib.contextmanager
def _quiet_seaborn():
    """seaborn 0.13.2 calls matplotlib 3.11 APIs that warn of their own deprecation; the figures
    are unaffected and the warnings would only clutter notebook outputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="vert: bool was deprecated")
        warnings.filterwarnings("ignore", message="The set_bad function will be deprecated")
        yield


def _quartile_summary(frame: pd.DataFrame, by: list, metric: str) -> pd.DataFrame:
    grouped = frame.groupby(by)[metric]
    return pd.DataFrame({"mean": grouped.mean(), "q1": grouped.quantile(0.25), "q3": grouped.quantile(0.75)}).reset_index()


# ----------------------------------------------------------------------------- accuracy figures

def repeats_label(counts: pd.Series) -> str:
    """``n = 3``, or ``n = 2-3`` where the groups of a panel hold different numbers of runs."""
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low}" if low == high else f"n = {low}-{high}"


FEW_REPEATS = 3  # at most this many runs per box: drawn as points and their mean, not as a box


def accuracy_boxplot(records, baseline_records=None, metric: str = "test_acc", title: str | None = None,
                     sizes: dict | None = None, cut_axis: str = CUT_LABEL) -> Figure:
    """The study's main figure: per percentage, ``metric`` per cut point (one dot per repeat, at
    the same offset in every column) with the baseline beside them: a box plot per cut point, or
    where it has at most :data:`FEW_REPEATS` repeats the points and a line at their mean (a box of
    two or three runs draws quartiles that are not there).  Each panel has its own y axis (the spread shrinks by
    orders of magnitude from the smallest fraction to the whole data) and names its n; ``title``
    (dataset, mode, profile) goes above them all; ``sizes`` names a panel's data size in words
    (fraction -> "5 / class") where a fraction alone would not say it; ``cut_axis`` names the x axis
    (:data:`STAGE_CUT_LABEL` for a backbone)."""
    frame = as_frame(records, baseline_records, metric)
    frame["cut"] = frame["sampled_cut_point"].map(cut_label)
    order = [cut_label(c) for c in sorted(frame["sampled_cut_point"].unique())]
    palette = _cut_palette(frame["sampled_cut_point"].unique())
    percentages = sorted(frame["sampled_percentage"].unique())
    fig, axes = panels(len(percentages), sharey=False)
    for ax, percentage in zip(axes, percentages):
        runs = frame[frame["sampled_percentage"] == percentage]
        repeats = sorted(runs["repeat"].unique())
        columns = runs["cut"].map(order.index)
        # a box per cut point with more than FEW_REPEATS runs, the mean's line for the others (a
        # panel may hold both: a cut run to more repeats where a comparison is made)
        boxed = runs.groupby("cut")[metric].transform("size") > FEW_REPEATS
        if boxed.any():
            with _quiet_seaborn():
                sns.boxplot(data=runs[boxed], x="cut", y=metric, hue="cut", order=order, hue_order=order,
                            palette=palette, legend=False, showfliers=False, ax=ax)
        for cut, mean in runs[~boxed].groupby("cut")[metric].mean().items():
            ax.hlines(mean, order.index(cut) - 0.3, order.index(cut) + 0.3, color=palette[cut], linewidth=2.5)
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.6, len(order) - 0.4)
        # one dot per run, repeat r at the same offset in every column (seaborn's jitter is random)
        offsets = dict(zip(repeats, np.linspace(-0.2, 0.2, len(repeats)) if len(repeats) > 1 else [0.0]))
        ax.scatter(columns + runs["repeat"].map(offsets), runs[metric], s=np.where(boxed, 6, 14),
                   color="black", zorder=3, linewidth=0)
        named = (sizes or {}).get(percentage) or fraction_title(percentage)
        ax.set(title=f"{named}\n{repeats_label(runs.groupby('cut').size())}",
               xlabel=cut_axis, ylabel=_label(metric))
        ax.tick_params(axis="x", labelrotation=45)
    if title:
        fig.suptitle(title)
    return fig


def mean_curves(records, baseline_records=None, metric: str = "test_acc", sizes: dict | None = None,
                cut_axis: str = CUT_LABEL, title: str | None = None) -> Figure:
    """Mean ``metric`` versus the fraction of training data (log scale), one line per cut point,
    with the inter-quartile range as a band; the baseline dashed.  ``sizes`` names the fractions'
    ticks in words (fraction -> "5 / class"), ``cut_axis`` the cut points, ``title`` the figure."""
    frame = as_frame(records, baseline_records, metric)
    summary = _quartile_summary(frame, ["sampled_cut_point", "sampled_percentage"], metric)
    palette = _cut_palette(summary["sampled_cut_point"].unique())
    fig, (ax,) = panels(1, size=(PANEL_WIDTH * 1.8, PANEL_HEIGHT * 1.3))
    for cut, line in summary.groupby("sampled_cut_point"):
        color = palette[cut_label(cut)]
        ax.plot(line["sampled_percentage"], line["mean"], marker="o", color=color,
                linestyle="--" if cut == BASELINE_CUT else "-", label=cut_label(cut))
        ax.fill_between(line["sampled_percentage"], line["q1"], line["q3"], color=color, alpha=0.15, linewidth=0)
    percentages = sorted(summary["sampled_percentage"].unique())
    ax.set(xscale="log", xlabel=f"{FRACTION_LABEL if sizes is None else SIZE_LABEL} (log scale)",
           ylabel=f"mean {_label(metric)}", title=title)
    ax.set_xticks(percentages, [_size_tick(p, sizes) for p in percentages], rotation=0 if sizes is None else 30)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(title=f"{cut_axis}\n({BAND_NOTE})", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def gain_matrix(records, baseline_records=None, metric: str = "test_acc") -> pd.DataFrame:
    """Mean ``metric`` of each cut point minus the baseline's mean: cut points (rows) x percentages."""
    frame = as_frame(records, baseline_records, metric)
    means = frame.groupby(["sampled_cut_point", "sampled_percentage"])[metric].mean().unstack("sampled_percentage")
    if BASELINE_CUT not in means.index:
        raise DataError("no baseline records (cut point -1): pass the baselines file's records as baseline_records")
    return means.drop(index=BASELINE_CUT) - means.loc[BASELINE_CUT]


def gain_heatmap(records, baseline_records=None, metric: str = "test_acc", sizes: dict | None = None,
                 cut_axis: str = CUT_LABEL, title: str | None = None) -> Figure:
    """Cut point x percentage heatmap of the mean gain over the baseline (blue: transfer helps);
    ``sizes``, ``cut_axis`` and ``title`` as in :func:`mean_curves`."""
    gain = gain_matrix(records, baseline_records, metric)
    fig, (ax,) = panels(1, size=(1.2 * len(gain.columns) + 3.0, 0.45 * len(gain.index) + 1.8))
    with _quiet_seaborn():
        sns.heatmap(gain, ax=ax, annot=True, fmt="+.3f", cmap="RdBu", center=0,
                    xticklabels=[_size_tick(p, sizes) for p in gain.columns],
                    yticklabels=[cut_label(c) for c in gain.index],
                    cbar_kws={"label": f"gain in mean {_label(metric)}\nover the baseline"})
    ax.set(xlabel=FRACTION_LABEL if sizes is None else SIZE_LABEL, ylabel=cut_axis, title=title)
    ax.tick_params(axis="y", labelrotation=0)
    return fig


def train_vs_test(records, baseline_records=None, sizes: dict | None = None, cut_axis: str = CUT_LABEL,
                  title: str | None = None) -> Figure:
    """Train against test accuracy of every run, per percentage, coloured by cut point; runs below
    the diagonal generalise worse than they fit.  ``sizes`` names the panels (fraction -> words),
    ``cut_axis`` the legend, ``title`` the figure."""
    frame = as_frame(records, baseline_records, "test_acc")
    if "train_acc" not in frame.columns or frame["train_acc"].isna().all():
        raise DataError("records lack 'train_acc'; give results records with train and test accuracy")
    frame["cut"] = frame["sampled_cut_point"].map(cut_label)
    order = [cut_label(c) for c in sorted(frame["sampled_cut_point"].unique())]
    palette = _cut_palette(frame["sampled_cut_point"].unique())
    percentages = sorted(frame["sampled_percentage"].unique())
    fig, axes = panels(len(percentages), sharey=False, size=(PANEL_WIDTH * len(percentages) + 2, PANEL_HEIGHT))
    for i, (ax, percentage) in enumerate(zip(axes, percentages)):
        runs = frame[frame["sampled_percentage"] == percentage]
        sns.scatterplot(data=runs, x="train_acc", y="test_acc", hue="cut", hue_order=order, palette=palette,
                        s=18, legend=i == len(axes) - 1, ax=ax)
        low = min(runs["train_acc"].min(), runs["test_acc"].min())
        ax.plot([low, 1], [low, 1], color="0.6", linewidth=0.8, linestyle=":", label="train = test")
        ax.set(title=(sizes or {}).get(percentage) or fraction_title(percentage), xlabel=_label("train_acc"),
               ylabel=_label("test_acc"))
    axes[-1].legend(title=cut_axis, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    if title:
        fig.suptitle(title, x=0.02, ha="left")
    return fig


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "H", "8")
LINESTYLES = ("-", "--", "-.", ":")
DODGE = 0.06  # cut points between neighbouring modes' lines, so that equal results stay visible


def mode_colours(modes) -> dict:
    """A colour per mode: tab10's, then Dark2's darker hues, so that up to 18 modes differ."""
    palette = [*sns.color_palette("tab10"), *sns.color_palette("Dark2")]
    return {mode: palette[i % len(palette)] for i, mode in enumerate(modes)}


def compare_modes(records_by_mode: dict, baseline_records=None, metric: str = "test_acc",
                  title: str | None = None, sizes: dict | None = None, cut_axis: str = CUT_LABEL) -> Figure:
    """Transfer modes side by side (e.g. {"F": ..., "FR": ..., "FT": ...}): per percentage, mean
    ``metric`` per cut point with inter-quartile bands, one line per mode (each with its own
    marker and dash, shifted a little along x so that modes with equal results, such as LoRA
    ranks, do not hide each other); the baseline a grey band.  Each panel has its own y axis and
    its n; the legend sits outside the panels, ``title`` above them; ``sizes`` and ``cut_axis`` as
    in :func:`accuracy_boxplot`."""
    if not records_by_mode:
        raise DataError("give records of at least one mode, e.g. {'FR': records}")
    frame = pd.concat([as_frame(records, metric=metric).assign(mode=mode) for mode, records in records_by_mode.items()],
                      ignore_index=True)
    frame = frame[frame["sampled_cut_point"] != BASELINE_CUT]
    baseline = as_frame(baseline_records, metric=metric) if baseline_records is not None else None
    summary = _quartile_summary(frame, ["mode", "sampled_percentage", "sampled_cut_point"], metric)
    modes = list(records_by_mode)
    colors = mode_colours(modes)
    shift = {mode: (i - (len(modes) - 1) / 2) * DODGE for i, mode in enumerate(modes)}
    percentages = sorted(frame["sampled_percentage"].unique())
    # wider than the panels alone: the legend sits at the right
    fig, axes = panels(len(percentages), sharey=False, size=(PANEL_WIDTH * len(percentages) + 2.5, PANEL_HEIGHT + 0.4))
    for ax, percentage in zip(axes, percentages):
        for i, mode in enumerate(modes):
            line = summary[(summary["mode"] == mode) & (summary["sampled_percentage"] == percentage)]
            x = line["sampled_cut_point"] + shift[mode]
            ax.plot(x, line["mean"], marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                    markersize=4, color=colors[mode], label=mode)
            ax.fill_between(x, line["q1"], line["q3"], color=colors[mode], alpha=0.12, linewidth=0)
        if baseline is not None:
            base = baseline.loc[baseline["sampled_percentage"] == percentage, metric]
            if len(base):
                ax.axhline(base.mean(), color=BASELINE_COLOR, linestyle="--", label="baseline")
                ax.axhspan(base.quantile(0.25), base.quantile(0.75), color=BASELINE_COLOR, alpha=0.15, linewidth=0)
        counts = frame[frame["sampled_percentage"] == percentage].groupby(["mode", "sampled_cut_point"]).size()
        named = (sizes or {}).get(percentage) or fraction_title(percentage)
        ax.set(title=f"{named}\n{repeats_label(counts)}", xlabel=cut_axis,
               ylabel=f"mean {_label(metric)}")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title=f"transfer mode\n({BAND_NOTE})", fontsize="small")
    if title:  # over the panels only, wrapped to their width: the legend holds the right margin to the top
        width = int(TITLE_CHARS_PER_INCH * PANEL_WIDTH * len(percentages))
        fig.suptitle(textwrap.fill(title, width, break_on_hyphens=False), x=0.02, ha="left")
    return fig


# ----------------------------------------------------------------------------- clustering figure

def ari_boxplot(ari_records, split: str = "target", score: str = "ari", channels: str = "pooled") -> Figure:
    """Clustering ``score`` per layer (x) and fraction of data (colour), one panel per model.

    ``channels``: "pooled", "max" or "mean", as in :func:`functions.clustering.layer_scores`.
    """
    scores = layer_scores(ari_records, split, score, channels)
    scores["fraction"] = scores["sampled_percentage"].map(lambda p: f"{p:g}")
    layers = layer_order(scores["layer"].unique())
    fractions = [f"{p:g}" for p in sorted(scores["sampled_percentage"].unique())]
    models = list(dict.fromkeys(scores["model"]))
    what = "pooled channels" if channels == "pooled" else f"{channels} over channels"
    fig, axes = panels(len(models))
    for ax, model in zip(axes, models):
        with _quiet_seaborn():
            sns.boxplot(data=scores[scores["model"] == model], x="layer", y=score, hue="fraction", order=layers,
                        hue_order=fractions, palette="crest", showfliers=False, ax=ax)
        ax.set(title=f"{model}, {split} data\n({what})", xlabel="layer", ylabel=_label(score))
        ax.tick_params(axis="x", labelrotation=45)
        ax.legend(title=f"fraction of {split} data", fontsize="small")
    return fig


def ari_profile(table: pd.DataFrame, title: str, score: str = "ari") -> Figure:
    """One line per model (``table``'s rows) of a clustering score over its layers (its columns,
    in network order): where the lines part, the networks' features part."""
    fig, axes = panels(1, size=(8, 4))
    ax = axes[0]
    for i, (model, row) in enumerate(table.iterrows()):
        ax.plot(range(len(row)), row.to_numpy(), marker="os^"[i % 3], color=f"C{i}", label=model)
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=45)
    ax.set(xlabel="layer (pooled output)", ylabel=_label(score), title=title)
    ax.legend(fontsize="small")
    return fig


def reproduction_figure(tables: dict) -> Figure:
    """Both studies per (folder, setup, mode) of ``tables`` (as :func:`functions.analysis.reproduction.side_by_side`
    gives them): the baseline's mean test accuracy (top) and the best cut point's gain over it
    (bottom) against the fraction of target data."""
    fig = Figure(figsize=(PANEL_WIDTH * len(tables), PANEL_HEIGHT * 2), layout="constrained")
    axes = fig.subplots(2, len(tables), sharex=True, squeeze=False)
    styles = {"ours": dict(color="C0", marker="o"), "upstream": dict(color="C1", marker="s", linestyle="--")}
    for column, ((folder, setup, mode), table) in enumerate(tables.items()):
        top, bottom = axes[0, column], axes[1, column]
        for study, style in styles.items():
            top.plot(table.index, table[("baseline", study)], label=study, **style)
            bottom.plot(table.index, table[("gain", study)], label=study, **style)
        bottom.axhline(0, color=BASELINE_COLOR, linewidth=0.8)
        top.set_title(f"{folder} {setup}, {mode}", fontsize="medium")
        top.set(xscale="log", ylabel="baseline mean test accuracy" if column == 0 else None)
        bottom.set(xlabel=f"{FRACTION_LABEL} (log scale)", ylabel="best cut's gain over the baseline" if column == 0 else None)
        bottom.set_xticks(table.index, [f"{p:g}" for p in table.index])
        bottom.minorticks_off()
    axes[0, -1].legend(title="study", fontsize="small")
    return fig


# ----------------------------------------------------------------------------- files

def save_figure(fig: Figure, folder, name: str, profile: str = "quick", dpi: int = 150) -> Path:
    """Write ``fig`` as ``<Folder>/results/figures/<name>.png`` (``folder`` a study folder name or
    any directory; ``results/<profile>/figures/`` for a profile other than the quick one),
    byte-for-byte reproducibly, atomically and under the figure's lock."""
    return write_png(fig, figure_path(folder, name, profile), dpi)


def main_figure_from_files(setup, mode: str, profile: str = "quick") -> Path:
    """The main figure (:func:`accuracy_boxplot`) of a setup's results file of ``mode`` and its
    baselines file (when present), saved as ``test_accuracy_<setup>_<mode>.png`` among the
    profile's figures (:func:`save_figure`)."""
    results = results_path(setup.folder, "results", setup.name, mode, profile)
    if not results.exists():
        raise DataError(f"no results file {results}; run `python -m functions run {setup.folder} "
                        f"--setup {setup.name} --mode {mode} --profile {profile}` first")
    baselines = results_path(setup.folder, "baselines", setup.name, profile=profile)
    name = f"test_accuracy_{setup.name}_{mode}"
    with locked(figure_path(setup.folder, name, profile)):  # the last figure written shows the newest files
        fig = accuracy_boxplot(load_results(results)[1], load_results(baselines)[1] if baselines.exists() else None,
                               title=f"{setup.folder} ({setup.name}), mode {mode}, {profile} profile")
        return save_figure(fig, setup.folder, name, profile)
