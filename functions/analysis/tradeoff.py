"""Feature extraction against fine-tuning: accuracy with confidence intervals, cost, and the guideline.

Runs pair by split: the FE and FT runs of one (N, split) trained on the same images, so the
question "is FE within noise of FT at N?" is answered by the confidence interval of the paired
differences, not by comparing two overlapping intervals.
"""
from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from ..core.atomic import locked
from ..runs.tracking import EXPERIMENTS
from ..runs.store import load_results
from .plots import readable_log_ticks, save_figure

COSTS = {"training_seconds": "training time (s)", "total_seconds": "time with test evaluation (s)"}
COLOURS = {"FE": "tab:blue", "FT": "tab:orange"}


def _interval(values: pd.Series, level: float = 0.95) -> float:
    """Half-width of the t confidence interval of the mean (NaN for a single value)."""
    n = values.count()
    if n < 2:
        return float("nan")
    return float(scipy_stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))


def summary(records) -> pd.DataFrame:
    """Per pipeline and samples per class: mean test accuracy and per-class accuracy with their
    95% interval half-widths, and the mean cost of a run."""
    frame = pd.DataFrame(records)
    rows = []
    for (pipeline, n), group in frame.groupby(["pipeline", "samples_per_class"]):
        rows.append({"pipeline": pipeline, "samples_per_class": n, "splits": len(group),
                     "test_acc": group.test_acc.mean(), "ci95": _interval(group.test_acc),
                     "mean_class_acc": group.test_mean_class_acc.mean(),
                     "training_seconds": group.training_seconds.mean(),
                     "training_wh": group.training_energy_kwh.mean() * 1000,
                     "training_gflops": group.training_flops.mean() / 1e9,
                     "total_seconds": group.total_seconds.mean(), "total_wh": group.total_energy_kwh.mean() * 1000,
                     "total_gflops": group.total_flops.mean() / 1e9})
    return pd.DataFrame(rows).set_index(["pipeline", "samples_per_class"])


def paired_differences(records) -> pd.DataFrame:
    """FT minus FE test accuracy per samples per class over the splits both ran: mean, 95%
    interval, and the verdict: "FT better" or "FE better" when the interval excludes 0, else
    "within noise"."""
    frame = pd.DataFrame(records).pivot_table(index=["samples_per_class", "split"], columns="pipeline",
                                              values=["test_acc", "training_seconds", "training_energy_kwh"])
    rows = []
    for n, group in frame.groupby(level="samples_per_class"):
        diff = (group["test_acc"]["FT"] - group["test_acc"]["FE"]).dropna()
        mean, half = diff.mean(), _interval(diff)
        verdict = "within noise" if not np.isfinite(half) or abs(mean) <= half else \
            "FT better" if mean > 0 else "FE better"
        rows.append({"samples_per_class": n, "pairs": len(diff), "ft_minus_fe": mean, "ci95": half,
                     "verdict": verdict,
                     "time_ratio_ft_fe": group["training_seconds"]["FT"].mean() /
                                         group["training_seconds"]["FE"].mean(),
                     "energy_ratio_ft_fe": group["training_energy_kwh"]["FT"].mean() /
                                           group["training_energy_kwh"]["FE"].mean()})
    return pd.DataFrame(rows).set_index("samples_per_class")


def verdict(table: pd.DataFrame) -> str:
    """Up to which N feature extraction is as good as fine-tuning (within noise, or better), in one
    sentence, from :func:`paired_differences`' table."""
    good_enough = table.verdict != "FT better"
    sizes = list(table.index)
    if good_enough.all():
        measured = f"{sizes[0]} to {sizes[-1]} images per class" if len(sizes) > 1 else f"{sizes[0]} per class"
        answer = f"Feature extraction is as good as fine-tuning or better at every size measured ({measured})."
    elif not good_enough.iloc[0]:
        answer = f"Fine-tuning is better from the smallest size measured ({sizes[0]} per class) on."
    else:
        last = max(n for n in sizes if all(good_enough[m] for m in sizes if m <= n))
        answer = (f"Feature extraction is as good as fine-tuning (within noise, or better) up to {last} images "
                  f"per class; above that fine-tuning is better.")
    return answer


def guideline(records) -> str:
    """The answer in words: up to which N feature extraction is as good as fine-tuning (within
    noise, or better), and what training by fine-tuning costs over feature extraction."""
    table = paired_differences(records)
    lines = [verdict(table)]
    for n, row in table.iterrows():
        lines.append(f"  N={n}: FT - FE = {row.ft_minus_fe:+.3f} (95% CI ±{row.ci95:.3f}, {row.pairs} paired splits: "
                     f"{row.verdict}); training FT costs {row.time_ratio_ft_fe:.1f}x the time and "
                     f"{row.energy_ratio_ft_fe:.1f}x the energy of FE")
    return "\n".join(lines)


def figure_title(target: str, backbone: str) -> str:
    """What a figure of one grid shows, in words: the target images and the network."""
    network = "the folder's own source CNN" if backbone == "study" else f"{backbone} (ImageNet weights)"
    return f"{target}: feature extraction (FE) or fine-tuning (FT) of {network}"


def _finish(fig: Figure, title: str | None) -> Figure:
    if title:  # wrapped to the figure's width
        fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 10)))
    for ax in fig.axes:
        if ax.get_xscale() == "log":
            readable_log_ticks(ax)
    fig.tight_layout()
    return fig


def accuracy_curves(records, title: str | None = None) -> Figure:
    """Mean test accuracy against samples per class (log x), 95% interval as a band, per pipeline."""
    table = summary(records).reset_index()
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for pipeline, rows in table.groupby("pipeline"):
        ci = rows.ci95.fillna(0.0)
        ax.plot(rows.samples_per_class, rows.test_acc, marker="o", color=COLOURS.get(pipeline), label=pipeline)
        ax.fill_between(rows.samples_per_class, rows.test_acc - ci, rows.test_acc + ci, alpha=0.2,
                        color=COLOURS.get(pipeline))
    ax.set(xscale="log", xlabel="labelled images per class", ylabel="test accuracy")
    ax.legend(title="pipeline")
    ax.grid(alpha=0.3)
    return _finish(fig, title)


def pareto_front(points: pd.DataFrame, cost: str, value: str = "test_acc") -> pd.DataFrame:
    """The Pareto front, cheapest first: the points that no other point matches in ``value`` at
    most their ``cost``."""
    ordered = points.sort_values([cost, value], ascending=[True, False])
    best, keep = -np.inf, []
    for index, row in ordered.iterrows():
        if row[value] > best:
            keep.append(index)
            best = row[value]
    return ordered.loc[keep]


def pareto(records, title: str | None = None) -> Figure:
    """Mean test accuracy against the mean cost of a run (training alone, and with the evaluation
    of the test split), one point per pipeline and N labelled with N; the line joins the
    Pareto-optimal points."""
    table = summary(records).reset_index()
    fig = Figure(figsize=(11, 4))
    for ax, (cost, label) in zip(fig.subplots(1, 2), COSTS.items()):
        for pipeline, rows in table.groupby("pipeline"):
            ax.scatter(rows[cost], rows.test_acc, color=COLOURS.get(pipeline), label=pipeline)
            for _, row in rows.iterrows():
                ax.annotate(f"{row.samples_per_class}", (row[cost], row.test_acc), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
        front = pareto_front(table, cost)
        ax.plot(front[cost], front.test_acc, color="grey", linestyle="--", label="Pareto front")
        ax.set(xscale="log", xlabel=f"cost of a run: {label}", ylabel="test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, title)


def selection_table(candidates) -> pd.DataFrame:
    """Model-selection candidates, best validation accuracy first within each pipeline; the chosen
    ones carry their test accuracy."""
    rows = [{"pipeline": c["pipeline"], "candidate": ", ".join(f"{k}={v}" for k, v in c["candidate"].items()),
             "val_acc": c["val_acc"], "test_acc": c.get("test_acc", np.nan), "chosen": bool(c.get("chosen"))}
            for c in candidates]
    frame = pd.DataFrame(rows).sort_values(["pipeline", "val_acc"], ascending=[True, False], kind="stable")
    return frame.groupby("pipeline").head(5).round(4).reset_index(drop=True)


def report(study, folder: str, figure_name: str | None = None) -> list[Path]:
    """The figures of every run in the study's results file (accuracy against N, accuracy against
    cost) saved as ``<Folder>/results/figures/fe_vs_ft_{accuracy,cost}_<figure_name>.png`` (default:
    named as the results file, ``fe_vs_ft_<figure_name>.json``); when
    the call trained new runs and tracks them, the figures, the summary table and the guideline of
    its grid are also logged as artifacts of one summary run in each MLflow experiment.

    The file is read and drawn under its lock: of calls side by side (other N), the one drawing
    last reads every call's runs, so the figures left show them all."""
    target, backbone = study.name.rsplit(" ", 1)
    title = figure_title(target, backbone)
    figure_name = figure_name or study.path.stem.removeprefix("fe_vs_ft_")
    with locked(study.path):
        records = load_results(study.path)[1]
        paths = [save_figure(accuracy_curves(records, title), folder, f"fe_vs_ft_accuracy_{figure_name}"),
                 save_figure(pareto(records, title), folder, f"fe_vs_ft_cost_{figure_name}")]
    pipelines = {r["pipeline"] for r in study.records}
    if study.tracker is None or not study.trained or pipelines != set(EXPERIMENTS):
        return paths
    with tempfile.TemporaryDirectory() as tmp:
        table, words = Path(tmp) / "summary.csv", Path(tmp) / "guideline.txt"
        summary(study.records).to_csv(table)
        words.write_text(guideline(study.records) + "\n")
        metrics = {f"{p}_n{n}_test_acc": row.test_acc for (p, n), row in summary(study.records).iterrows()}
        for experiment in EXPERIMENTS.values():
            study.tracker.log_run(experiment, f"{study.name} summary", {"results_file": str(study.path)}, metrics,
                                  artifacts=[*paths, table, words], tags={"kind": "summary"})
    return paths
