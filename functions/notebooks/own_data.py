"""Your own images, one call per step of the ``your_data`` notebook: what the dataset holds, how
well each offline ImageNet network's features suit it before any training, feature extraction
against fine-tuning on it, and the answer in words.

The dataset is anything :func:`functions.data.image_dataset.load_dataset` reads (a folder, a CSV
or a prepared name such as ``clipart``); the grid is the ``fe-vs-ft --data`` command's, so the
notebook resumes what that command trained and the other way round.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..analysis import tradeoff
from ..analysis.plots import save_figure
from ..analysis.transferability import hscore, logme
from ..config import profile
from ..config import get_setup
from ..core.atomic import locked, write_json_atomic
from ..core.paths import results_dir
from ..data.image_dataset import ImageDataset, load_dataset
from ..models.registry import REGISTRY, create_backbone
from ..runs.features import extract
from . import study, zoo

__all__ = ["backbone_scores", "class_counts", "fe_vs_ft", "guideline", "load_dataset", "sample_grid",
           "zoo_recommendation"]

# the ImageNet networks whose weights ship as packages: scored without a download or a user's file
OFFLINE_BACKBONES = tuple(name for name, r in REGISTRY.items() if r.pretrained_on == "ImageNet" and r.source == "package")


def class_counts(dataset: ImageDataset) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with the totals."""
    table = pd.DataFrame(dataset.counts()).fillna(0).astype(int).reindex(dataset.classes)
    table["all"] = table.sum(axis=1)
    table.loc["all"] = table.sum()
    return table


def sample_grid(dataset: ImageDataset, folder: str, per_class: int = 6, size: int = 96,
                max_classes: int = 20) -> Figure:
    """The first ``per_class`` training images of each class (of the first ``max_classes``), one
    row per class, as decoded for the networks (``size`` pixels, white behind transparency); saved
    as ``<folder>/results/figures/your_data_samples_<dataset>.png``."""
    images = dataset.images(size)
    entries = dataset.manifest.entries
    classes = dataset.classes[:max_classes]
    fig = Figure(figsize=(1.2 * per_class + 1.2, 1.2 * len(classes)))
    axes = np.asarray(fig.subplots(len(classes), per_class, squeeze=False))
    for row, label in zip(axes, classes):
        shown = [i for i, e in enumerate(entries) if e.label == label and e.split == "train"][:per_class]
        for ax, i in zip(row, shown + [None] * (per_class - len(shown))):
            ax.set_axis_off()
            if i is not None:
                ax.imshow(images[i])
        row[0].set_axis_on()
        row[0].set(xticks=[], yticks=[])
        for spine in row[0].spines.values():
            spine.set_visible(False)
        row[0].set_ylabel(label, rotation=0, ha="right", va="center")
    more = f" (first {max_classes} of {len(dataset.classes)} classes)" if len(dataset.classes) > max_classes else ""
    fig.suptitle(f"{dataset.name}: training images{more}")
    fig.tight_layout()
    save_figure(fig, folder, f"your_data_samples_{dataset.name}")
    return fig


def backbone_scores(dataset: ImageDataset, input_size: int = 96, backbones=OFFLINE_BACKBONES,
                    folder: str = "MNIST") -> pd.DataFrame:
    """LogME and the shrinkage H-score of each backbone's pooled last-stage features of the
    training images (the task the fe-vs-ft grid draws from, at ``input_size`` pixels for every
    network): a ranking before any training, by LogME; higher is better.  The plain H-score is left
    out: with more feature dimensions than images it saturates at the number of classes minus one.
    ``folder``: whose quick profile gives the validation draw, as in the grid."""
    cfg, _ = profile("quick", get_setup(folder))
    rows = {}
    for name in backbones:
        backbone = create_backbone(name, input_size=input_size)
        task = dataset.task(backbone.input_size, backbone.channels, cfg.val_split, cfg.generate_dataset_seed,
                            pixels=True)
        features = extract(backbone, backbone.layer_names[-1:], task.pixels(task.train)).astype(np.float64)
        labels = task.train.y.numpy()
        rows[name] = {"features": features.shape[1], "logme": logme(features, labels),
                      "hscore_shrinkage": hscore(features, labels, shrinkage=True)}
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("logme", ascending=False, kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def zoo_recommendation(data, folder: str = "MNIST", recommender: str = "gradient boosting") -> pd.DataFrame:
    """The zoo's models ranked for the dataset's whole task by ``recommender`` (what ``python -m
    functions recommend-model --data DATA`` prints), kept in
    ``<folder>/results/recommendation_<dataset>.json`` with the dataset's version: a re-run reads
    it, and a file made from another version of the folder is refused, naming what changed."""
    dataset = load_dataset(data)
    path = results_dir(folder) / f"recommendation_{dataset.name}.json"
    with locked(path):
        stored = json.loads(path.read_text()) if path.exists() else None
        if stored is not None:
            dataset.check_version(stored["data"], str(path))
        if stored is None or stored["recommender"] != recommender:
            table = zoo.recommend_model(None, recommender, data=data).drop(columns="measured_accuracy")
            stored = {"data": table.attrs["data"], "task": table.attrs["task"], "recommender": recommender,
                      "index": table.index.name, "rows": table.reset_index().to_dict("records")}
            write_json_atomic(path, stored)
    table = pd.DataFrame(stored["rows"]).set_index(stored["index"])
    table.attrs.update(task=stored["task"], data=stored["data"])
    return table


def fe_vs_ft(data, folder: str, backbone: str, samples_per_class, splits: int, track: bool = True,
             **settings) -> list[dict]:
    """The ``fe-vs-ft <folder> --data <data>`` grid of one backbone, run or resumed; its results
    file and figures under ``<folder>/results/``."""
    return study.fe_vs_ft(folder, None, backbone, samples_per_class, splits, track=track, data=data, **settings)


def guideline(records, dataset: ImageDataset, backbone: str) -> str:
    """The answer in words, from the accuracies alone (costs depend on the machine): per size the
    two pipelines' mean test accuracy, their paired difference and its verdict, then up to which
    size feature extraction is good enough."""
    means = tradeoff.summary(records)
    table = tradeoff.paired_differences(records)
    lines = [f"On {dataset.name} ({len(dataset.classes)} classes) with {backbone}:"]
    for n, row in table.iterrows():
        fe, ft = means.loc[("FE", n)], means.loc[("FT", n)]
        lines.append(f"  {n} image{'s' if n != 1 else ''} per class: FE {fe.test_acc:.2f}, FT {ft.test_acc:.2f} "
                     f"test accuracy; FT - FE = {row.ft_minus_fe:+.2f} (95% CI ±{row.ci95:.2f} over {row.pairs} "
                     f"paired splits: {row.verdict})")
    lines.append(tradeoff.verdict(table))
    return "\n".join(lines)
