"""What the adaptation notebook of a cut backbone between two image folders asks for, one call each.

``Clipart_to_Stamps/adaptation.ipynb`` is ``run --data stamps --source clipart`` written out: the
notebook and the command build the same :class:`AdaptationStudy` and read the same results
files; the labelled comparison is the cut-point study of the same backbone on the target images
(:mod:`functions.notebooks.backbone`), in the same folder.
"""
from __future__ import annotations

import pandas as pd

from ..analysis import adaptation
from ..analysis.stats import chosen_cuts
from ..analysis.summary import records_frame, summary_table
from ..core.errors import DataError
from ..models.cuts import stage_at
from ..runs.backbone_adaptation import ADAPTATION_CUTS, ADAPTATION_REPEATS, AdaptationSettings, AdaptationStudy
from .backbone import frames

__all__ = ["adaptation_study", "chosen_cut", "tuned_cut_line", "records", "summary", "against_source_only", "verdict",
           "worth", "worth_figure", "recheck_table"]


def adaptation_study(source, data, backbone: str, methods, folder: str | None = None) -> AdaptationStudy:
    """``backbone`` adapted from ``source`` (labelled) to ``data`` (unlabelled) by each of ``methods``."""
    return AdaptationStudy(source, data, tuple(methods), AdaptationSettings(backbone=backbone), folder)


def _source_only(study: AdaptationStudy) -> pd.DataFrame:
    path = study.path("source_only")
    frame = records_frame(path) if path.is_file() else None
    if frame is None or frame.empty:
        raise DataError(f"{path} holds no source-only runs to pick a cut point from: run python -m functions run "
                        f"--data {study.target_name} --source {study.source_name} --mode source_only first")
    return frame


def chosen_cut(study: AdaptationStudy) -> int:
    """The cut point whose source models score best on the source's validation images (the source's
    labels only; no target label), over the stored source-only runs: where the ``-tuned`` methods run."""
    return int(chosen_cuts(_source_only(study)).iloc[0])


def tuned_cut_line(study: AdaptationStudy, cut_point: int) -> str:
    """Where the ``-tuned`` methods ran and why, from the source models' validation accuracy per cut."""
    frame = _source_only(study)
    means = frame.groupby("sampled_cut_point")["val_acc"].agg(["mean", "size"])
    others = "".join(f", against {row['mean']:.3f} at {_cut_name(study, c)}" for c, row in means.iterrows()
                     if c != cut_point)
    return (f"The -tuned methods run at {_cut_name(study, cut_point)}: its source models score "
            f"{means.loc[cut_point, 'mean']:.3f} on the {study.source_name} validation images{others} (means over "
            f"the source-only repeats, {int(means.loc[cut_point, 'size'])} at the chosen cut).")


def records(study: AdaptationStudy, cut_points=ADAPTATION_CUTS, repeats: int = ADAPTATION_REPEATS) -> dict:
    """Each method's stored runs at ``cut_points`` and repeats below ``repeats``."""
    by_method = {}
    for method, file in study.files.items():
        runs = [r for r in file.refresh() if r["sampled_cut_point"] in cut_points and r["repeat"] < repeats]
        if not runs:
            raise DataError(f"{file.path} holds no runs at cut points {list(cut_points)} yet: run the notebook's "
                            f"sweep cell, or python -m functions run --data {study.target_name} --source "
                            f"{study.source_name}")
        by_method[method] = runs
    return by_method


def _cut_name(study: AdaptationStudy, cut_point: int) -> str:
    return f"cut {cut_point} ({stage_at(study.backbone, cut_point)})"


def summary(study: AdaptationStudy, by_method: dict) -> pd.DataFrame:
    """Mean ± std target test accuracy per cut point (rows, named by the stage kept last) and method
    (blank where a method did not run at that cut)."""
    frame = pd.concat([pd.DataFrame(runs).assign(method=adaptation.LABELS[m]) for m, runs in by_method.items()])
    table = summary_table(frame, columns="method").fillna("")
    return table.rename(index={f"cut {c}": _cut_name(study, c) for c in frame.sampled_cut_point.unique()})


def _at(by_method: dict, cut_point: int) -> dict:
    return {m: [r for r in runs if r["sampled_cut_point"] == cut_point] for m, runs in by_method.items()}


def against_source_only(by_method: dict) -> pd.DataFrame:
    """Each method against source only at each cut point, paired by repeat (the same source model),
    Holm-corrected over the methods of a cut point (see :func:`functions.analysis.adaptation.against_source_only`)."""
    cuts = sorted({r["sampled_cut_point"] for r in by_method["source_only"]})
    return pd.concat([adaptation.against_source_only(_at(by_method, c), c) for c in cuts], ignore_index=True)


def verdict(study: AdaptationStudy, gains: pd.DataFrame) -> str:
    """The sentences of :func:`~functions.analysis.adaptation.adaptation_verdict`, one per cut point."""
    return "\n".join(f"{_cut_name(study, c)}: {adaptation.adaptation_verdict(family)}"
                     for c, family in gains.groupby("cut"))


def worth(study: AdaptationStudy, by_method: dict, labelled_study, labelled_grid) -> pd.DataFrame:
    """Per cut point, each method's target accuracy and what it is worth in labelled target images:
    where the labelled mode's curve (its cut chosen on validation at each size) reaches it."""
    fine_tuned, baselines = frames(labelled_study, labelled_grid)
    task = labelled_study.task
    tables = [adaptation.comparison(_at(by_method, c), fine_tuned.to_dict("records"), baselines.to_dict("records"),
                                    c, len(task.train), task.num_classes, reference=labelled_study.mode)
              for c in sorted({r["sampled_cut_point"] for r in by_method["source_only"]})]
    return pd.concat(tables, ignore_index=True).drop(columns="target fraction (unlabelled)")


def worth_figure(study: AdaptationStudy, by_method: dict, labelled_study, labelled_grid, cut_point: int, title: str):
    """The labelled curves against the fraction of the target's training images, and each method
    at ``cut_point`` at the fraction it saw unlabelled (all of them)."""
    fine_tuned, baselines = frames(labelled_study, labelled_grid)
    return adaptation.comparison_figure(_at(by_method, cut_point), fine_tuned.to_dict("records"),
                                        baselines.to_dict("records"), cut_point, labelled_study.task.num_classes,
                                        title, labelled=labelled_study.mode)


def recheck_table(study: AdaptationStudy, cut_point: int, repeat: int = 0) -> pd.DataFrame:
    """Source only and AdaBN at one cut point and repeat trained again beside their stored accuracy
    (shown as the stored value when within the float rounding of other CPUs, so the notebook's
    check holds on any of them)."""
    return pd.DataFrame.from_dict(
        {f"{adaptation.LABELS[c['method']]}, {_cut_name(study, cut_point)}, repeat {repeat}": {
            "stored test accuracy": f"{c['stored_test_acc']:.3f}",
            "trained again": f"{c['stored_test_acc'] if c['reproduced'] else c['test_acc']:.3f}"}
         for c in study.recheck(cut_point, repeat)}, orient="index")
