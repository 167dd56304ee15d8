"""What unlabelled target images and a teacher's soft labels are worth, in labelled target images.

The adaptation modes see a fraction of the target training images without labels; the study's
FR runs and baselines see the same fraction with labels.  A method's accuracy is read off the
labelled curves (log-linear between measured fractions) as the labelled fraction that reaches
it.  The headline cut of an alignment method is the last block's output, fixed before looking at
any target label (as DANN and Deep CORAL place it); the per-cut tables show every cut.  The
labelled modes (FR, distillation) are read at the cut their validation accuracy picks.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..config import DANN_SCHEDULES
from .plots import panels, readable_log_ticks, repeats_label
from .stats import (GAIN_COLUMNS, TEST_COLUMNS, chosen_cuts, holm_family, paired_comparison, paired_gain,
                    repeats_to_detect)

# a distillation record's validation accuracy at one (temperature, share) candidate
CANDIDATE_KEY = re.compile(r"val_acc_t([0-9.e+-]+)_a([0-9.e+-]+)")
# the unsupervised methods in the order tables show them; ``<method>-tuned``: its learning rate
# (DANN's reversal schedule too) chosen with its weight by the target risk estimate (where a folder ran it)
UNSUPERVISED = ("source_only", "adabn", "dann", "coral", "mcc", "cdan", "dann-tuned", "coral-tuned", "mcc-tuned",
                "cdan-tuned")
LABELS = {"source_only": "source only", "adabn": "AdaBN", "dann": "DANN", "coral": "CORAL", "mcc": "MCC",
          "cdan": "CDAN", "dann-tuned": "DANN, rate and schedule chosen", "coral-tuned": "CORAL, rate chosen",
          "mcc-tuned": "MCC, rate chosen", "cdan-tuned": "CDAN, rate chosen",
          "baseline": "baseline (labelled, from scratch)"}
# each method's colour in tab20, whose pairs of shades give a method and its -tuned form one hue
# (the blues are the labelled curve's)
HUES = {"source_only": 14, "adabn": 2, "coral": 4, "dann": 6, "mcc": 8, "cdan": 10}


# the two families of tests against source only: the methods at the study's one learning rate
# (weights chosen by the target risk estimate where several are given), and those whose rate was
# chosen too
FAMILIES = {False: "one learning rate", True: "learning rate chosen"}


def method_colour(mode: str):
    base = mode.removesuffix("-tuned")
    return colormaps["tab20"](HUES[base] + (mode != base))


def labelled_label(mode: str) -> str:
    """The legend of a labelled mode's curve (FR for the study CNN, F for a backbone)."""
    return f"{mode}, cut chosen on validation (labelled)"


def _frame(records) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    return frame[frame.status == "ok"] if "status" in frame else frame


def accuracy_at_chosen_cut(frame: pd.DataFrame) -> pd.DataFrame:
    """Per fraction, the cut point :func:`~functions.analysis.stats.chosen_cuts` picks on
    validation and the mean test accuracy there (over all its repeats)."""
    picked = chosen_cuts(frame)
    means = frame.groupby(["sampled_percentage", "sampled_cut_point"])["test_acc"].mean()
    return pd.DataFrame({"cut": picked.to_numpy(), "test_acc": means.loc[list(picked.items())].to_numpy()},
                        index=picked.index)


def per_cut(records_by_mode: dict) -> pd.DataFrame:
    """Mean test accuracy per method, cut point and fraction of target data."""
    rows = [_frame(records).assign(method=mode) for mode, records in records_by_mode.items() if records]
    frame = pd.concat(rows, ignore_index=True)
    return frame.pivot_table(index=["method", "sampled_cut_point"], columns="sampled_percentage",
                             values="test_acc", aggfunc="mean")


def labelled_curves(fr_records, baseline_records, labelled: str = "FR") -> pd.DataFrame:
    """Per fraction: the baseline's mean test accuracy, the ``labelled`` mode's (``fr_records``)
    at the cut its validation accuracy picks, and that cut."""
    chosen = accuracy_at_chosen_cut(_frame(fr_records))
    return pd.DataFrame({"baseline": _frame(baseline_records).groupby("sampled_percentage").test_acc.mean(),
                         labelled: chosen["test_acc"], f"{labelled} chosen cut": chosen["cut"]}).sort_index()


def labelled_worth(accuracy: float, curve: pd.Series) -> tuple[str, float]:
    """The labelled fraction at which ``curve`` (fraction -> accuracy) first reaches ``accuracy``,
    log-linear between measured fractions: ``("=", f)``, or ``("<", smallest)`` / ``(">", largest)``
    when the accuracy lies outside the curve."""
    curve = curve.dropna().sort_index()
    fractions, values = curve.index.to_numpy(float), curve.to_numpy(float)
    if accuracy <= values[0]:
        return "<", fractions[0]
    for i in range(1, len(values)):
        if values[i] >= accuracy:
            share = (accuracy - values[i - 1]) / (values[i] - values[i - 1])
            return "=", float(np.exp(np.log(fractions[i - 1]) + share * np.log(fractions[i] / fractions[i - 1])))
    return ">", fractions[-1]


def labelled_images(fraction: float, n_target_train: int, num_classes: int) -> int:
    """Images in a class-balanced subset of ``fraction`` (as the sweeps draw them: at least one per class)."""
    return max(1, int(fraction * n_target_train / num_classes)) * num_classes


def _headline(records, mode: str, headline_cut: int) -> pd.DataFrame:
    """A method's runs at its headline cut (source only and AdaBN: the whole network)."""
    frame = _frame(records)
    cut = frame.sampled_cut_point.max() if mode in ("source_only", "adabn") else headline_cut
    return frame[frame.sampled_cut_point == cut]


def comparison(records_by_mode: dict, fr_records, baseline_records, headline_cut: int, n_target_train: int,
               num_classes: int, reference: str = "FR") -> pd.DataFrame:
    """Per unsupervised method and fraction: mean test accuracy at ``headline_cut`` (source only
    and AdaBN: the whole network) and what it is worth on the ``reference`` curve (``fr_records``:
    that labelled mode's runs; or ``baseline``), in labelled fraction and images (of a
    class-balanced subset of that fraction)."""
    curves = labelled_curves(fr_records, baseline_records, "baseline" if reference == "baseline" else reference)
    rows = []
    for mode in (m for m in UNSUPERVISED if records_by_mode.get(m)):
        runs = _headline(records_by_mode[mode], mode, headline_cut)
        for percentage, group in runs.groupby("sampled_percentage"):
            accuracy = group.test_acc.mean()
            relation, fraction = labelled_worth(accuracy, curves[reference])
            # between measured fractions the count is interpolated too; at an end, a subset's own count
            worth_images = round(fraction * n_target_train) if relation == "=" else \
                labelled_images(fraction, n_target_train, num_classes)
            rows.append({"method": LABELS[mode], "cut": int(group.sampled_cut_point.iloc[0]),
                         "target fraction (unlabelled)": percentage,
                         "test accuracy": accuracy, "std": group.test_acc.std(),
                         f"worth ({reference} labelled fraction)": f"{relation} {fraction:.3g}",
                         "worth (labelled images)": f"{relation} {worth_images}"})
    return pd.DataFrame(rows)


def against_source_only(records_by_mode: dict, headline_cut: int, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Does adapting help?  Per fraction, each method at its headline cut against the source
    network tested as it is, runs paired by repeat (each repeat adapts to its own subset of target
    images): the mean difference with a 95% bootstrap interval, the exact Wilcoxon p Holm-corrected
    over the methods of its family (:data:`FAMILIES`: those at one learning rate, and those whose
    rate was chosen by the target risk estimate; two questions, each corrected for its own tests), the method's
    standard deviation over repeats (a gain below it is one that another seed can undo) and the
    repeats a power calculation asks for."""
    rng = np.random.default_rng(seed)
    methods = [m for m in UNSUPERVISED[1:] if records_by_mode.get(m)]
    source = _headline(records_by_mode["source_only"], "source_only", headline_cut)
    rows = []
    for percentage, reference in source.groupby("sampled_percentage"):
        reference = reference.set_index("repeat")["test_acc"]
        measured = {}
        for mode in methods:
            runs = _headline(records_by_mode[mode], mode, headline_cut)
            runs = runs[runs.sampled_percentage == percentage].set_index("repeat")
            if runs["test_acc"].index.isin(reference.index).any():
                measured[mode] = runs
        for tuned in (False, True):
            members = [mode for mode in measured if mode.endswith("-tuned") == tuned]
            family = []
            for mode in members:
                runs = measured[mode]
                test = paired_comparison(runs["test_acc"], reference, rng, len(members), alpha)
                if test is not None:
                    family.append({"target fraction (unlabelled)": percentage, "family": FAMILIES[tuned],
                                   "method": LABELS[mode], "cut": int(runs.sampled_cut_point.iloc[0]), **test,
                                   "std": runs["test_acc"][runs.index.isin(reference.index)].std()})
            rows += holm_family(family, alpha)
    table = pd.DataFrame(rows, columns=["target fraction (unlabelled)", "family", "method", "cut", *GAIN_COLUMNS, "std",
                                        "repeats_for_power", "p_holm", *TEST_COLUMNS[2:]])
    table["spread exceeds gain"] = table["std"] > table["gain"].abs()
    return table


def adaptation_verdict(table: pd.DataFrame, alpha: float = 0.05) -> str:
    """Per fraction, each method's gain over source only in words, with its interval and what its
    repeats can conclude: significant or not after Holm's correction, or why the design cannot
    tell; a gain smaller than the method's spread over seeds is called that, not a gain."""
    lines = []
    for (percentage, name), family in table.groupby(["target fraction (unlabelled)", "family"], sort=False):
        parts = []
        for _, row in family.iterrows():
            text = (f"{row['method']} {row['gain']:+.3f} (95% CI {row['ci95_low']:+.3f} to {row['ci95_high']:+.3f}, "
                    f"sd over repeats {row['std']:.3f})")
            if row["significant"]:
                text += f", significant (Holm p = {row['p_holm']:.3g})"
            elif row["detectable"]:
                text += f", not significant (Holm p = {row['p_holm']:.3g})"
            if row["spread exceeds gain"]:
                text += ", within its own spread over seeds"
            parts.append(text)
        n = int(family["n"].min())
        line = f"{percentage * 100:g}% of the target images, unlabelled, n = {n} paired repeats, against source " \
            f"only ({name}): " + "; ".join(parts) + "."
        if not family["detectable"].any():
            line += (f" With {n} repeats no method can differ significantly (an exact Wilcoxon test's smallest p "
                     f"is {2 / 2 ** n:.3g}, {family['smallest_p_holm'].min():.3g} after Holm's correction over "
                     f"{len(family)} methods); {repeats_to_detect(len(family), alpha)} repeats could.")
        lines.append(line)
    return "\n".join(lines)


def comparison_figure(records_by_mode: dict, fr_records, baseline_records, headline_cut: int, num_classes: int,
                      title: str, labelled: str = "FR") -> Figure:
    """Test accuracy against the fraction of target training data: labelled curves as solid lines,
    the unsupervised methods at their headline cut as dashed ones over the fractions they saw
    unlabelled (a method that saw one fraction: a dashed level across the axis, its band one
    standard deviation), each point a mean with a bar of one standard deviation over repeats, and chance
    (one class in ``num_classes``) as a dotted line."""
    figure, axes = panels(1, size=(8, 4.5))
    ax = axes.flat[0]
    fr = _frame(fr_records)
    chosen = accuracy_at_chosen_cut(fr)["cut"]
    series = {"baseline": (_frame(baseline_records), "k", "-o"),
              labelled: (pd.concat([fr[(fr.sampled_percentage == p) & (fr.sampled_cut_point == c)] for p, c in chosen.items()]),
                     "C0", "-o")}
    for mode in (m for m in UNSUPERVISED if records_by_mode.get(m)):
        series[mode] = _headline(records_by_mode[mode], mode, headline_cut), method_colour(mode), "--s"
    for name, (frame, colour, style) in series.items():
        spread = frame.groupby("sampled_percentage").test_acc.agg(["mean", "std", "count"])
        label = labelled_label(name) if name == labelled else LABELS[name] if name == "baseline" else \
            f"{LABELS[name]} (unlabelled)"
        label = f"{label}, {repeats_label(spread['count'])}"
        if style.startswith("--") and len(spread) == 1:
            # a method that saw one fraction (all the target images): a level across the axis, so
            # where it meets a labelled curve reads as what it is worth
            mean, std = spread["mean"].iloc[0], np.nan_to_num(spread["std"].iloc[0])
            ax.axhline(mean, color=colour, linestyle="--", label=label.replace("(unlabelled)", "(unlabelled, band ± std)"))
            ax.axhspan(mean - std, mean + std, color=colour, alpha=0.08)
            continue
        ax.errorbar(spread.index, spread["mean"], yerr=spread["std"].fillna(0.0), fmt=style, color=colour, capsize=3,
                    label=label)
    ax.axhline(1.0 / num_classes, color="0.5", linestyle=":", label=f"chance (1 in {num_classes})")
    ax.set_xscale("log")
    readable_log_ticks(ax)
    ax.set_xlabel("fraction of the target training images (log scale)")
    ax.set_ylabel("target test accuracy (mean ± std over repeats)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    figure.suptitle(title)
    return figure


def distillation_table(distill_records, fr_records) -> pd.DataFrame:
    """Per fraction: the teacher, the student trained alone (FR) and the distilled student, each
    student at the cut its validation accuracy picks, with parameters and inference time per image."""
    distilled, alone = _frame(distill_records), _frame(fr_records)
    picked = {"alone": accuracy_at_chosen_cut(alone), "distilled": accuracy_at_chosen_cut(distilled)}
    rows = []
    for percentage, group in distilled.groupby("sampled_percentage"):
        fr, by_cut = picked["alone"].loc[percentage], picked["distilled"].loc[percentage]
        teacher = group.drop_duplicates("repeat")
        shared = {"fraction": percentage}
        rows += [{**shared, "model": "teacher (fine-tuned whole)", "cut": "-",
                  "test accuracy": teacher.teacher_test_acc.mean(), "parameters": int(teacher.teacher_params.iloc[0]),
                  "ms per image": teacher.teacher_ms_per_image.median()},
                 {**shared, "model": "student alone (FR)", "cut": int(fr["cut"]), "test accuracy": fr["test_acc"],
                  "parameters": int(group.student_params.iloc[0]), "ms per image": group.student_ms_per_image.median()},
                 {**shared, "model": "student distilled", "cut": int(by_cut["cut"]), "test accuracy": by_cut["test_acc"],
                  "parameters": int(group.student_params.iloc[0]), "ms per image": group.student_ms_per_image.median()}]
    return pd.DataFrame(rows)


def distillation_gain(distill_records, fr_records) -> pd.DataFrame:
    """Distilled minus alone (FR), mean test accuracy per cut point (rows) and fraction (columns)."""
    key = ["sampled_cut_point", "sampled_percentage"]
    distilled = _frame(distill_records).groupby(key).test_acc.mean()
    alone = _frame(fr_records).groupby(key).test_acc.mean()
    return (distilled - alone).dropna().unstack("sampled_percentage")


def distillation_against_alone(distill_records, fr_records, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Does the teacher help?  Per fraction, the distilled student at the cut its validation
    accuracy picks against the student trained alone (FR) at its own, runs paired by repeat (the
    same labelled subset and seed): the mean difference with a 95% bootstrap interval, the exact
    Wilcoxon p Holm-corrected over the fractions (one question asked at every size), the standard
    deviation of the paired differences (a mean gain below it is one the next seed can reverse)
    and the repeats a power calculation from the measured spread asks for."""
    rng = np.random.default_rng(seed)
    distilled, alone = _frame(distill_records), _frame(fr_records)
    cuts = {"distilled": chosen_cuts(distilled), "alone": chosen_cuts(alone)}
    fractions = [p for p in cuts["distilled"].index if p in cuts["alone"].index]
    family = []
    for percentage in fractions:
        runs = {name: frame[(frame.sampled_percentage == percentage)
                            & (frame.sampled_cut_point == cuts[name][percentage])].set_index("repeat")["test_acc"]
                for name, frame in (("distilled", distilled), ("alone", alone))}
        family.append({"fraction": percentage, "cut": int(cuts["distilled"][percentage]),
                       "alone cut": int(cuts["alone"][percentage]),
                       **paired_comparison(runs["distilled"], runs["alone"], rng, len(fractions), alpha)})
    table = pd.DataFrame(holm_family(family, alpha))
    table["spread exceeds gain"] = table["std of differences"] > table["gain"].abs()
    return table


def distillation_verdict(table: pd.DataFrame, alpha: float = 0.05) -> str:
    """:func:`distillation_against_alone` in words, one line per fraction: the gain with its
    interval, whether it is significant after Holm's correction or why the repeats cannot tell,
    and a gain smaller than the seed-to-seed spread of the differences called that."""
    lines = []
    for _, row in table.iterrows():
        n = int(row["n"])
        text = (f"{row['fraction'] * 100:g}% of the target images, labelled, n = {n} paired repeats: distilled "
                f"minus alone {row['gain']:+.3f} (cuts {row['cut']} and {row['alone cut']}")
        if row["detectable"]:
            text += f"; 95% CI {row['ci95_low']:+.3f} to {row['ci95_high']:+.3f})"
            text += f", {'' if row['significant'] else 'not '}significant (Holm p = {row['p_holm']:.3g} over " \
                    f"{len(table)} fractions)"
        else:  # a bootstrap over a handful of pairs is no 95% interval: none is given
            text += (f"); {n} repeats are too few for an interval or a test (smallest Holm p "
                     f"{row['smallest_p_holm']:.3g}), {repeats_to_detect(len(table), alpha)} could")
        if row["spread exceeds gain"]:
            text += f", and within the spread of the paired differences ({row['std of differences']:.3f})"
        lines.append(text + ".")
    return "\n".join(lines)


def chosen_distillation_settings(distill_records) -> pd.DataFrame:
    """How often the runs of each fraction chose each (temperature, share) pair on validation
    (rows fractions; a column for every pair the runs tried, chosen or not)."""
    frame = _frame(distill_records).dropna(subset=["chosen_temperature"])
    tried = sorted({tuple(float(v) for v in match.groups()) for key in frame.columns
                    if (match := CANDIDATE_KEY.fullmatch(key))})
    table = pd.crosstab(frame["sampled_percentage"], [frame["chosen_temperature"], frame["chosen_alpha"]])
    table = table.reindex(columns=pd.MultiIndex.from_tuples(tried), fill_value=0)
    table.columns = [f"T {t:g}, share {a:g}" for t, a in table.columns]
    return table.rename_axis("fraction")


# what an aligning run chose by the target risk estimate, and the key of each candidate's risk
ALIGNMENT_CHOICES = {"chosen_weight": "weight", "chosen_lr": "rate", "chosen_schedule": "schedule"}
CANDIDATE_SUFFIX = (rf"_(?P<weight>[0-9.e+-]+?)(?:_lr(?P<rate>[0-9.e+-]+?))?"
                    rf"(?:_(?P<schedule>{'|'.join(DANN_SCHEDULES)}))?")
RISK_KEY = re.compile("dev_risk" + CANDIDATE_SUFFIX)
# each candidate's accuracy on the target's test images, scored after the choice (never for it)
CANDIDATE_TEST_KEY = re.compile("test_acc" + CANDIDATE_SUFFIX)


def chosen_alignment_settings(records_by_mode: dict) -> pd.DataFrame:
    """How often the runs of each method and fraction chose each candidate by the target risk
    estimate: one row per (method, fraction), one column per setting chosen between, each
    candidate with its count (``0.3 x5, 1 x3``; a candidate never chosen counts 0)."""
    rows = []
    for mode, records in records_by_mode.items():
        frame = _frame(records) if records else pd.DataFrame()
        choices = {c: name for c, name in ALIGNMENT_CHOICES.items() if c in frame}
        tried = [m.groupdict() for key in frame.columns if (m := RISK_KEY.fullmatch(key))]
        for percentage, runs in frame.groupby("sampled_percentage") if choices else ():
            row = {"method": LABELS.get(mode, mode), "fraction": percentage}
            for choice, name in choices.items():
                counts = runs[choice].map(str).value_counts()
                values = sorted({c[name] for c in tried}, key=lambda v: DANN_SCHEDULES.index(v)
                                if v in DANN_SCHEDULES else float(v))
                row[name] = ", ".join(f"{v} x{counts.get(str(float(v)) if v not in DANN_SCHEDULES else v, 0)}"
                                      for v in values)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["method", "fraction"]).fillna("") if rows else pd.DataFrame()


# the ways a run's candidate could be chosen with no target label: the score each candidate got,
# and its sign (the highest signed score wins; the runs chose by the first)
SELECTORS = {"dev_risk": ("deep embedded validation", -1.0), "source_val_acc": ("source validation accuracy", 1.0)}


def _picked(accuracy: np.ndarray, merit: np.ndarray) -> np.ndarray:
    """Per run, the test accuracy of the candidate of highest ``merit`` (the mean over tied ones: a
    tie broken at random)."""
    winning = np.isclose(merit, np.nanmax(merit, axis=1)[:, None], rtol=0, atol=1e-12)
    return np.nanmean(np.where(winning, accuracy, np.nan), axis=1)


def selection_quality(records_by_mode: dict, seed: int = 0) -> pd.DataFrame:
    """How well each label-free way of choosing would have chosen, judged afterwards on the target's
    test labels, for the methods whose runs scored every candidate: per method and selector (the
    target risk estimate the runs chose by, and the source's validation accuracy), the picked
    candidate's mean test accuracy, a candidate's at random (the mean over candidates) and the best
    one's in hindsight, the pick minus the random one (paired by run, 95% bootstrap interval, exact
    Wilcoxon p), how often the pick was the best, and the mean Spearman correlation between the
    selector's ranking and the test accuracy over a run's candidates (1: it ranks as the labels do)."""
    rng, rows = np.random.default_rng(seed), []
    for mode, records in records_by_mode.items():
        frame = _frame(records) if records else pd.DataFrame()
        suffixes = [key.removeprefix("test_acc") for key in frame.columns if CANDIDATE_TEST_KEY.fullmatch(key)]
        if len(suffixes) < 2:
            continue
        accuracy = frame[[f"test_acc{s}" for s in suffixes]].to_numpy(float)
        random_pick, best = np.nanmean(accuracy, axis=1), np.nanmax(accuracy, axis=1)
        for selector, (name, sign) in SELECTORS.items():
            merit = sign * frame[[f"{selector}{s}" for s in suffixes]].to_numpy(float)
            picked = _picked(accuracy, merit)
            # a run whose candidates all score alike (or all test alike) has no ranking to compare
            correlation = [pd.Series(m).corr(pd.Series(a), method="spearman") for m, a in zip(merit, accuracy)
                           if np.unique(m).size > 1 and np.unique(a).size > 1]
            rows.append({"method": LABELS.get(mode, mode), "selector": name, "candidates": len(suffixes),
                         "picked": picked.mean(), "at random": random_pick.mean(), "best in hindsight": best.mean(),
                         **paired_gain(picked, random_pick, rng), "picked the best": float(np.mean(picked >= best)),
                         "spearman": float(np.nanmean(correlation)) if correlation else np.nan})
    return pd.DataFrame(rows).set_index(["method", "selector"]) if rows else pd.DataFrame()


def selection_verdict(quality: pd.DataFrame) -> str:
    """One sentence per method and selector of :func:`selection_quality`, written from its numbers."""
    if quality.empty:
        return ("No run here scored the candidates it chose between on the test labels, so no choice can be "
                "judged.")
    lines = []
    for (method, selector), row in quality.iterrows():
        judged = ("better than" if row.ci95_low > 0 else "worse than" if row.ci95_high < 0 else
                  "no better than") + " a candidate picked at random"
        lines.append(f"{method}, by {selector}: {row.picked:.3f}, {row.gain:+.3f} against a random candidate (95% "
                     f"CI {row.ci95_low:+.3f} to {row.ci95_high:+.3f}, n = {int(row.n)}): {judged}; the best of "
                     f"{int(row.candidates)} in hindsight {row['best in hindsight']:.3f}; it ranks the candidates as "
                     f"the test labels do at a mean Spearman correlation of {row.spearman:+.2f}.")
    return "\n".join(lines)


def embedding(features: dict, labels: dict, seed: int = 0) -> pd.DataFrame:
    """2-D t-SNE coordinates of feature sets ``{(model, domain): (n, d) array}`` with their
    ``labels``; each model's source and target features are embedded together."""
    from sklearn.manifold import TSNE
    frames = []
    for model in dict.fromkeys(m for m, _ in features):
        parts = [(domain, np.asarray(x, dtype=np.float64)) for (m, domain), x in features.items() if m == model]
        stacked = np.concatenate([x for _, x in parts])
        points = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(stacked)
        offset = 0
        for domain, x in parts:
            frames.append(pd.DataFrame({"x": points[offset:offset + len(x), 0], "y": points[offset:offset + len(x), 1],
                                        "model": model, "domain": domain, "class": labels[(model, domain)]}))
            offset += len(x)
    return pd.concat(frames, ignore_index=True)


def embedding_figure(points: pd.DataFrame, title: str) -> Figure:
    """One panel per model: colour is the class (legend on the right), the marker the domain (o
    source, x target)."""
    models = list(dict.fromkeys(points.model))
    figure, axes = panels(len(models), sharey=False, size=(5 * len(models) + 1.2, 4.5))
    for ax, model in zip(axes.flat, models):
        for domain, marker in zip(dict.fromkeys(points.domain), ("o", "x")):
            part = points[(points.model == model) & (points.domain == domain)]
            ax.scatter(part.x, part.y, c=part["class"], cmap="tab10", vmin=0, vmax=9, s=8, marker=marker,
                       label=domain, alpha=0.7)
        ax.set_title(model)
        ax.set_xticks([])
        ax.set_yticks([])
        for handle in ax.legend(fontsize=8, title="domain").legend_handles:
            handle.set_color("grey")  # the markers tell the domains; colours are the classes
    classes = sorted(int(c) for c in points["class"].unique())
    swatches = [Line2D([], [], marker="o", linestyle="", color=colormaps["tab10"](c), label=str(c)) for c in classes]
    figure.legend(handles=swatches, title="class", fontsize=8, loc="outside right center")
    figure.suptitle(title)
    return figure

