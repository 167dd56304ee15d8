"""How well do a network's activations separate the classes?  K-means on every layer, scored
against the labels.

For each model, each data split ("source" / "target"), each data percentage and repeat, the
images of one balanced subset run through the network once, block by block; at every layer
(the input, after each conv block, the logits) K-means with k = number of classes clusters
the global-average-pooled channel vector (``channel = -1``) and, optionally, each channel's
flattened map (``channel = c``).  Only one layer's activation is held at a time, so a
1000-image subset of a 64-channel network needs a few hundred MB at most.

Subsets come from :func:`functions.data.balanced_subset` with
``subset_seed(seed, percentage, repeat)``: with the sweep's ``generate_dataset_seed`` and the
target training split they are exactly the images the fine-tuning runs of that
(percentage, repeat) trained on.  Subsets larger than ``max_images`` are thinned, balanced.

The scores are computed during the pass (the activations are never stored), so they live here
with it; :mod:`functions.analysis.clustering` reads the records this module writes.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from threadpoolctl import threadpool_limits

from ..config import LEGACY_VALUES
from ..core.errors import DataError
from ..core.paths import results_dir
from ..data.catalog import check_percentage, percentage_key
from ..data.tasks import Split, balanced_subset, subset_seed
from ..models.study_cnn import StudyCNN
from .store import ResultsFile
from .units import run_units

POOLED = -1  # the ``channel`` value of records scoring the pooled vector of all channels
SCORES = ("ari", "nmi", "cluster_acc", "pair_precision", "pair_recall")
GROUP_KEYS = ("model", "split", "sampled_percentage", "repeat")


# ----------------------------------------------------------------------------- scores

def cluster_accuracy(labels, clusters) -> float:
    """Fraction of points whose cluster, matched one-to-one to a label (Hungarian), is their label."""
    table = contingency_matrix(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def pair_precision_recall(labels, clusters) -> tuple[float, float]:
    """Pairwise precision (pairs put in one cluster that share a label / pairs put in one cluster)
    and recall (pairs sharing a label that are put in one cluster / pairs sharing a label).

    NaN where the denominator is zero (every point alone in its cluster, or every label unique).
    """
    table = contingency_matrix(labels, clusters).astype(np.float64)
    together, same_cluster, same_label = _pairs(table), _pairs(table.sum(0)), _pairs(table.sum(1))
    precision = together / same_cluster if same_cluster else float("nan")
    recall = together / same_label if same_label else float("nan")
    return precision, recall


def _pairs(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) / 2).sum())


def clustering_scores(labels, clusters) -> dict:
    """All scores of one clustering: ari, nmi, cluster_acc, pair_precision, pair_recall."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.ndim != 1:
        raise DataError(f"labels {labels.shape} and clusters {clusters.shape} must be 1-D and of equal length")
    precision, recall = pair_precision_recall(labels, clusters)
    return {"ari": float(adjusted_rand_score(labels, clusters)),
            "nmi": float(normalized_mutual_info_score(labels, clusters)),
            "cluster_acc": cluster_accuracy(labels, clusters),
            "pair_precision": precision, "pair_recall": recall}


def kmeans_clusters(features: np.ndarray, k: int, n_init: int, seed: int) -> np.ndarray:
    """K-means cluster of every row (float64, seeded, best of ``n_init`` starts).

    Dead channels (constant maps) yield fewer distinct points than ``k``; K-means then warns and
    puts everything in few clusters, which scores ARI 0 as it should, so the warning is muted.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
        return model.fit_predict(np.asarray(features, dtype=np.float64))


# ----------------------------------------------------------------------------- activations

def layer_names(model: StudyCNN) -> list[str]:
    """``input``, ``conv0`` .. ``conv{n-1}`` (n = the model's blocks; a backbone's view names its
    stages), ``fc`` (the logits)."""
    blocks = getattr(model, "block_names", None) or [f"conv{i}" for i in range(len(model.blocks))]
    return ["input", *blocks, "fc"]


@torch.no_grad()
def layer_activations(model: StudyCNN, x: torch.Tensor):
    """Yield ``(layer name, activation)`` for the input, each conv block and the logits, running
    every block once on the output of the previous one (so only one activation is alive)."""
    model.eval()
    names = layer_names(model)
    h = x.to(next(model.parameters()).device)
    yield names[0], h
    for i in range(len(model.blocks)):
        h = model.features(h, i, i + 1)
        yield names[i + 1], h
    yield names[-1], model.head(h)


def pooled_features(activation: torch.Tensor) -> np.ndarray:
    """(N, C) float64: the per-channel mean of a (N, C, H, W) map; a (N, D) activation as is."""
    flat = activation.mean(dim=(2, 3)) if activation.ndim == 4 else activation
    return flat.double().cpu().numpy()


def channel_features(activation: torch.Tensor, channel: int) -> np.ndarray:
    """(N, H*W) float64: one channel's map, flattened."""
    return activation[:, channel].reshape(len(activation), -1).double().cpu().numpy()


# ----------------------------------------------------------------------------- subsets

def clustering_subset(split: Split, percentage: float, repeat: int, seed: int, max_images: int) -> torch.Tensor:
    """Indices of the balanced (percentage, repeat) subset of ``split``, thinned (balanced, seeded)
    to at most ``max_images``."""
    num_classes = len(torch.unique(split.y))
    index = balanced_subset(split.y, num_classes, percentage, subset_seed(seed, percentage, repeat))
    if len(index) > max_images:
        # +0.5 keeps floor(fraction * n / k) from rounding one image per class below max_images / k
        keep = balanced_subset(split.y[index], num_classes, (max_images + 0.5) / len(index), seed + repeat)
        index = index[keep]
    return index


# ----------------------------------------------------------------------------- sweeps

def _key(model: str, split: str, percentage: float, repeat: int) -> tuple:
    return model, split, percentage_key(percentage), int(repeat)


def _group(record: dict) -> tuple:
    return _key(*(record[k] for k in GROUP_KEYS))


def _repeat_counts(percentages, repeats) -> dict:
    if isinstance(repeats, dict):
        missing = [p for p in percentages if p not in repeats]
        if missing:
            raise DataError(f"repeats has no entry for percentage(s) {missing}; give a number for each")
        return {p: int(repeats[p]) for p in percentages}
    return {p: int(repeats) for p in percentages}


def cluster_records(models: dict, data: dict, percentages, repeats, *, seed: int = 42, max_images: int = 1000,
                    n_init: int = 5, per_channel: bool = True, done=frozenset(), on_group=None,
                    files=()) -> list[dict]:
    """Clustering scores of every layer (and channel) of every model, split, percentage and repeat.

    ``models``: label -> StudyCNN (e.g. {"pretrained": ..., "fine-tuned cut 3": ...}).
    ``data``: split name -> Split (e.g. {"source": source_task.test, "target": target_task.train}).
    ``repeats``: one count for all percentages or a dict percentage -> count.
    ``done``: group keys (model, split, percentage, repeat) to skip; ``on_group(records)`` is
    called with each finished group's records (used to save progress, in ``files``).

    Returns one record per (model, split, percentage, repeat, layer, channel) with keys
    model, split, sampled_percentage, repeat, layer, layer_index (0 = input), channel
    (-1 = pooled vector), n_images, num_clusters and the scores ari, nmi, cluster_acc,
    pair_precision, pair_recall.
    """
    if not models or not data:
        raise DataError("give at least one model (label -> StudyCNN) and one split (name -> Split)")
    if max_images < 2 or n_init < 1:
        raise DataError(f"max_images={max_images} must be >= 2 and n_init={n_init} >= 1")
    counts = _repeat_counts([check_percentage(p) for p in percentages], repeats)
    groups = [(label, split, percentage, repeat) for split in data for percentage, n_repeats in counts.items()
              for repeat in range(n_repeats) for label in models]
    subsets: dict = {}  # the images of the current (split, percentage, repeat), shared by its models

    def group_records(group: tuple) -> list[dict]:
        label, split_name, percentage, repeat = group
        if (split_name, percentage, repeat) not in subsets:
            split = data[split_name]
            index = clustering_subset(split, percentage, repeat, seed, max_images)
            subsets.clear()
            subsets[split_name, percentage, repeat] = split.x[index], split.y[index].cpu().numpy(), \
                len(torch.unique(split.y))
        x, y, num_classes = subsets[split_name, percentage, repeat]
        kmeans_seed = subset_seed(seed, percentage, repeat) % (2 ** 31)
        tags = dict(zip(GROUP_KEYS, group))
        return _model_records(models[label], x, y, num_classes, n_init, kmeans_seed, per_channel, tags)

    records = []

    def save(group: tuple, scored: list[dict]) -> None:
        records.extend(scored)
        if on_group:
            on_group(scored)

    # each K-means problem is small (<= max_images rows): OpenMP threads cost more than they save,
    # up to 5x on a busy 2-core machine, so K-means runs single-threaded
    with threadpool_limits(limits=1, user_api="openmp"):
        run_units(groups, group_records, save, skip=lambda group: _key(*group) in done, files=files)
    return records


def _model_records(model, x, y, num_classes, n_init, kmeans_seed, per_channel, tags) -> list[dict]:
    """Scores of every layer (and channel) of one model on one subset."""
    group = []
    for layer_index, (layer, act) in enumerate(layer_activations(model, x)):
        channels = range(act.shape[1]) if per_channel and act.ndim == 4 else ()
        for channel in (POOLED, *channels):
            features = pooled_features(act) if channel == POOLED else channel_features(act, channel)
            clusters = kmeans_clusters(features, num_classes, n_init, kmeans_seed)
            group.append({**tags, "layer": layer, "layer_index": layer_index, "channel": channel,
                          "n_images": len(y), "num_clusters": num_classes, **clustering_scores(y, clusters)})
    return group


# ----------------------------------------------------------------------------- files

def ari_path(folder: str, setup_name: str) -> Path:
    """``<Folder>/results/ari_<setup>.json``."""
    return results_dir(folder) / f"ari_{setup_name}.json"


def run_clustering(path: Path, params: dict, models: dict, data: dict, percentages, repeats, *,
                   seed: int = 42, max_images: int = 1000, n_init: int = 5, per_channel: bool = True,
                   progress=None) -> list[dict]:
    """:func:`cluster_records` saved to ``path`` after every (model, split, percentage, repeat)
    group, resuming from the groups already there.

    ``params`` (e.g. ``cfg.params()``) is stored with the clustering settings as element 0; a
    file written with other parameters is refused with the keys that differ.  Returns all
    records of the file.  ``progress(records)`` is called after each saved group.
    """
    params = {**params, "clustering_seed": seed, "max_images": max_images, "n_init": n_init,
              "per_channel": per_channel}
    # loads what is there; refuses other parameters, naming them.  A record is one layer and
    # channel of a group, and a group is saved whole in one write, so a group is done when any of
    # its records is on disk
    file = ResultsFile(path, params, key=lambda r: (*_group(r), r["layer"], r["channel"]), legacy=LEGACY_VALUES)

    def save(group):
        file.add(*group)
        if progress:
            progress(group)

    done = {_group(r) for r in file.refresh()}
    cluster_records(models, data, percentages, repeats, seed=seed, max_images=max_images, n_init=n_init,
                    per_channel=per_channel, done=done, on_group=save, files=[file])
    return file.records
