"""What the cut-point notebooks of a pretrained backbone on a folder of images ask for, one call each.

The folders of these studies (``Clipart/``) are the command line's ``run --data PATH --backbone
NAME`` written out: the notebook and the command build the same :class:`CutStudy` objects and
read and write the same results files.
"""
from __future__ import annotations

import pandas as pd

from ..analysis import stats
from ..analysis.summary import records_frame, summary_table
from ..config import TUNED_SUFFIX
from ..core.errors import DataError
from ..runs.backbone_study import PROFILE, CutGrid, CutStudy, CutStudySettings, Size, real_grid
from ..runs.store import BASELINE_CUT, load_results, results_path

__all__ = ["studies", "grids", "describe", "sizes_table", "frames", "size_labels", "size_names", "strategy_runs",
           "chosen_cut", "tuned_runs", "summary", "gains",
           "ranking", "chosen_cuts", "panel_titles",
           "recheck_table", "backbone_headlines", "clustering", "clustering_table"]


def studies(data, backbone: str, modes, folder: str | None = None, input_size: int | None = None) -> dict[str, CutStudy]:
    """One study per mode of ``backbone`` on ``data`` (a folder, a CSV or a prepared name), at
    ``input_size`` pixels (default the real profile's)."""
    settings = CutStudySettings(backbone=backbone, **({"input_size": input_size} if input_size else {}))
    return {mode: CutStudy(data, mode, settings, folder) for mode in modes}


def grids(cut_studies: dict, per_class=None, fractions=None, cut_points=None, repeats=None) -> dict:
    """Each mode's grid: the real profile's, narrowed by what is given (see :func:`real_grid`)."""
    return {mode: real_grid(study, per_class, fractions, cut_points, repeats) for mode, study in cut_studies.items()}


def size_label(study: CutStudy, size: Size) -> str:
    return f"{size.per_class} / class" if size.per_class is not None else \
        ("all" if size.fraction == 1.0 else f"{size.fraction:g} of the pool")


def describe(study: CutStudy) -> str:
    """One line on the study's images: classes, split sizes and input size."""
    task = study.task
    return (f"{study.dataset.name}: {len(study.classes)} classes, {len(task.train)} training, {len(task.val)} "
            f"validation and {len(task.test)} test images, at {study.backbone.input_size} px")


def size_labels(study: CutStudy, grid) -> dict:
    """The sampled share of the training pool -> the size's name (``2 / class``, ``all``)."""
    return {study.fraction(size): size_label(study, size) for size in grid.sizes}


def panel_titles(study: CutStudy, grid) -> dict:
    """The figures' panel titles: each size's name and its training images."""
    return {study.fraction(size): f"{size_label(study, size)} ({len(study.subset(size, 0))} images)"
            for size in grid.sizes}


def sizes_table(study: CutStudy, grid) -> pd.DataFrame:
    """The grid's data sizes: images per class, training images and their share of the pool."""
    rows = [{"size": size_label(study, size), "training images": len(study.subset(size, 0)),
             "share of the pool": study.fraction(size)} for size in grid.sizes]
    return pd.DataFrame(rows).set_index("size")


def frames(study: CutStudy, grid) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cut-point records, baseline records) of the grid's sizes, cut points and repeats."""
    repeats = {study.fraction(size): grid.repeats_for(size) for size in grid.sizes}
    parts = []
    for kind, cuts in (("results", grid.cut_points), ("baselines", [BASELINE_CUT])):
        frame = pd.DataFrame(study.files[kind].refresh())
        if frame.empty:
            raise DataError(f"{study.files[kind].path} holds no runs yet: run the notebook's sweep cell, or "
                            f"python -m functions run --data {study.dataset.name} --mode {study.mode}")
        wanted = frame.sampled_percentage.map(repeats)
        parts.append(frame[frame.sampled_cut_point.isin(cuts) & wanted.notna() & (frame.repeat < wanted)])
    return parts[0], parts[1]


def size_names(study: CutStudy, grid) -> dict:
    """The sampled share of the training pool -> the size in words (``5 images per class``)."""
    return {study.fraction(size): f"{size.per_class} images per class" if size.per_class is not None
            else size.describe() for size in grid.sizes}


def strategy_runs(cut_studies: dict, cut_grids: dict) -> tuple[dict, list]:
    """(records per mode, baseline records) of each mode's grid, as the strategies' analysis
    (:mod:`functions.analysis.strategies`) reads them; the records carry their trainable parameters."""
    records, baselines = {}, []
    for mode, study in cut_studies.items():
        found, baselines = frames(study, cut_grids[mode])
        records[mode] = found.to_dict("records")
    return records, baselines.to_dict("records")


def chosen_cut(study: CutStudy, size: Size) -> int:
    """The cut point the validation accuracy of the saved runs of ``study``'s mode without
    ``-tuned`` picks at ``size`` (where ``--at-chosen-cut`` trains a tuned mode)."""
    picking = results_path(study.folder, "results", study.settings.backbone, study.cut_mode, PROFILE)
    frame = records_frame(picking) if picking.is_file() else None
    runs = None if frame is None else frame[(frame.sampled_cut_point >= 0)
                                            & (frame.sampled_percentage == study.fraction(size))]
    if runs is None or runs.empty:
        raise DataError(f"--at-chosen-cut: {picking} has no runs at {size.describe()} to pick a cut point from; "
                        f"run the cut points there first (the same command with --mode {study.cut_mode} and "
                        f"without --at-chosen-cut)")
    return int(stats.chosen_cuts(runs).iloc[0])


def tuned_runs(data, backbone: str, modes, folder: str, per_class, repeats: int) -> tuple[dict, list]:
    """(records per mode, baseline records) of each of ``modes`` as ``<mode>-tuned``, each size's
    runs at the cut its untuned runs pick there (what ``run --mode <mode>-tuned --at-chosen-cut``
    trains), resumed first."""
    records, baselines = {}, {}
    for mode, study in studies(data, backbone, [f"{m}{TUNED_SUFFIX}" for m in modes], folder).items():
        for size in (Size(per_class=int(n)) for n in per_class):
            grid = CutGrid((size,), (chosen_cut(study, size),), (repeats,))
            study.run(grid, baselines=False, progress=False)
            found, found_baselines = frames(study, grid)
            records.setdefault(mode, []).extend(found.to_dict("records"))
            baselines.update({(r["sampled_percentage"], r["repeat"]): r for r in found_baselines.to_dict("records")})
    return records, list(baselines.values())


def _relabelled(table: pd.DataFrame, study: CutStudy, grid, axis: str) -> pd.DataFrame:
    labels = {f"{share:g}": name for share, name in size_labels(study, grid).items()}
    return table.rename(columns=labels) if axis == "columns" else table.rename(index=labels)


def summary(study: CutStudy, grid) -> pd.DataFrame:
    """Mean ± std test accuracy per cut point (rows, named by the stage kept last) and size (columns)."""
    records, baselines = frames(study, grid)
    table = _relabelled(summary_table(pd.concat([baselines, records])), study, grid, "columns")
    stages = {f"cut {c}": f"cut {c} ({s})" for c, s in records.groupby("sampled_cut_point")["stage"].first().items()}
    return table.rename(index=stages)


def gains(study: CutStudy, grid) -> pd.DataFrame:
    """Each cut point's paired gain over the baseline per size, with its interval and Holm-corrected p
    (:func:`~functions.analysis.stats.gains_over_baseline`), sizes named."""
    records, baselines = frames(study, grid)
    table = stats.gains_over_baseline(records, baselines)
    labels = size_labels(study, grid)
    order = [labels[share] for share in sorted(labels)]  # the sizes in increasing order, in every table
    table.insert(0, "size", pd.Categorical(table.sampled_percentage.map(labels), categories=order, ordered=True))
    return table


def ranking(study: CutStudy, grid) -> pd.DataFrame:
    """Each cut point's mean rank (1 = best; rows, named by the last stage kept) per size (columns,
    with the repeats every cut point of the size has, over which it is taken): a compact view of
    :func:`~functions.analysis.stats.rank_cut_points`."""
    records, baselines = frames(study, grid)
    table = stats.rank_cut_points(records, baselines)
    ranks = table.pivot(index="sampled_cut_point", columns="sampled_percentage", values="mean_rank")
    ranks = ranks.loc[sorted(ranks.index, key=lambda cut: (cut == BASELINE_CUT, cut))]  # the baseline last
    stages = records.groupby("sampled_cut_point")["stage"].first()
    labels, counts = size_labels(study, grid), table.groupby("sampled_percentage")["n_repeats"].first()
    ranks.index = ["baseline" if c == BASELINE_CUT else f"{int(c)} ({stages[c]})" for c in ranks.index]
    ranks.columns = [f"{labels[share]} (n = {counts[share]})" for share in ranks.columns]
    ranks.index.name, ranks.columns.name = "cut", "size"
    return ranks.round(2)


def chosen_cuts(cut_studies: dict, cut_grids: dict) -> pd.DataFrame:
    """Per mode and size, the cut point validation picks (over the repeats every cut has), its
    test accuracy and its gain over the baseline with the 95% interval and corrected p."""
    rows = []
    for mode, study in cut_studies.items():
        table = gains(study, cut_grids[mode])
        records, _ = frames(study, cut_grids[mode])
        for share, cut in stats.chosen_cuts(records).items():
            row = table[(table.sampled_percentage == share) & (table.cut == cut)].iloc[0]
            rows.append({"mode": mode, "size": row["size"], "cut": int(cut),
                         "stage": study.backbone.layer_names[int(cut) - 1] if cut else "input",
                         "test accuracy": round(row["mean"], 3), "baseline": round(row["baseline"], 3),
                         "gain": round(row["gain"], 3), "95% CI": f"{row['ci95_low']:+.3f} to {row['ci95_high']:+.3f}",
                         "p (Holm)": round(row["p_holm"], 4), "n": int(row["n"])})
    frame = pd.DataFrame(rows)
    frame["size"] = pd.Categorical(frame["size"], categories=table["size"].cat.categories, ordered=True)
    return frame.set_index(["size", "mode"]).sort_index()


def recheck_table(cut_studies: dict, cut_point: int, size: Size, repeat: int = 0) -> pd.DataFrame:
    """One stored run of each mode at ``cut_point`` (-1: the baseline, once), trained again from
    scratch: the stored test accuracy beside the new one (shown as the stored value when within
    the float rounding of other CPUs, so the notebook's check holds on any of them)."""
    if cut_point == BASELINE_CUT:
        cut_studies = dict([next(iter(cut_studies.items()))])
    checks = {f"{mode} cut {cut_point}" if cut_point != BASELINE_CUT else "baseline": study.recheck(cut_point, size, repeat)
              for mode, study in cut_studies.items()}
    return pd.DataFrame.from_dict({label: {"stored test accuracy": f"{c['stored_test_acc']:.3f}",
                                           "trained again": f"{c['stored_test_acc']:.3f}" if c["reproduced"]
                                           else f"{c['test_acc']:.3f}"} for label, c in checks.items()},
                                  orient="index")


def backbone_headlines(folders: dict, modes=("F", "FR", "FT"), profile: str = PROFILE) -> dict:
    """``(ImageNet network, folder, mode) -> (headline, depth, images)`` of the committed cut-point studies
    of ``folders`` (folder -> its backbone), read from their results files, for
    :func:`functions.analysis.reproduction.across_networks`."""
    from ..analysis import reproduction as compare
    headlines = {}
    for folder, backbone in folders.items():
        base = results_path(folder, "baselines", backbone, profile=profile)
        for mode in modes:
            results = results_path(folder, "results", backbone, mode, profile)
            if results.exists() and base.exists():
                params, records = load_results(results)
                headlines[(compare.IMAGENET, folder, mode)] = (
                    compare.headline(compare.our_frame(records, load_results(base)[1])), len(params["stages"]),
                    (min(r["n_train"] for r in records), max(r["n_train"] for r in records)))
    return headlines


def clustering(study: CutStudy, cut_point: int | None = None, max_images: int = 1000, repeat: int = 0):
    """K-means (k = the classes) on every stage's pooled output for the test images (which no
    network here trained on; at most ``max_images``, class-balanced), scored against their labels
    (:mod:`functions.runs.clustering`), for the ImageNet network (its ImageNet classifier as the
    last layer) and the network of ``study``'s mode fine-tuned on the whole pool at ``cut_point``
    (None: the cut validation picks there), its stored run trained again.  Saved to and resumed
    from ``<Folder>/results/real/ari_<backbone>.json``."""

    from ..core.paths import results_dir
    from ..models.stage_view import StageView
    from ..runs.clustering import run_clustering
    from ..train.finetune import staged_split
    if cut_point is None:
        records = pd.DataFrame(study.files["results"].refresh())
        if records.empty or not (records.sampled_percentage == 1.0).any():
            raise DataError(f"{study.files['results'].path} has no run on the whole pool to pick a cut point from: "
                            f"give cut_point, or run python -m functions run --data {study.dataset.name} --mode "
                            f"{study.mode} --percentages 1.0")
        cut_point = int(stats.chosen_cuts(records[records.sampled_percentage == 1.0]).iloc[0])
    test = study.task.test
    # built only for a group still to cluster: stored groups need neither the training nor the images
    models = _Made({"pretrained (ImageNet)": lambda: StageView.pretrained(study.backbone),
                    f"fine-tuned ({study.mode}, cut {cut_point})": lambda: StageView.of(
                        study.fine_tuned(cut_point, Size(fraction=1.0), repeat)[0], 0, pool_block=False)})
    images = _Made({"target": lambda: staged_split(study.backbone, test, 0)})
    params = {**study.files["results"].params, "fine_tuned_cut": cut_point, "fine_tuned_repeat": repeat}
    return run_clustering(results_dir(study.folder, PROFILE) / f"ari_{study.settings.backbone}.json", params, models,
                          images, [1.0], 1, seed=study.settings.seed, max_images=max_images, per_channel=False)


class _Made(dict):
    """name -> a function making the value, made at the first lookup and kept."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if callable(value):
            value = value()
            self[key] = value
        return value


def clustering_table(records: list, score: str = "ari") -> pd.DataFrame:
    """``score`` of the pooled output per model (rows) and layer (columns, in network order)."""
    from ..analysis.clustering import layer_order, layer_scores
    frame = layer_scores(records, "target", score)
    table = frame.pivot_table(index="model", columns="layer", values=score, aggfunc="mean", sort=False)
    return table[layer_order(frame["layer"])]
