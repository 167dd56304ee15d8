"""Tasks as whole tensors: class selection, a seeded validation split, balanced subsets.

Training code never touches per-image Python objects: a split is a pair of tensors, decoded
and normalised once per process.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError
from ..core.paths import data_root
from .adapt import adapt_images, channel_stats, check_adaptable
from .catalog import check_percentage, spec, validate_classes
from .sources import read_split


@dataclass
class Split:
    """Images (N, C, H, W) float32 already normalised, labels (N,) int64 in 0..k-1."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], self.y[index])

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))

    def view(self, index: torch.Tensor) -> "RowView":
        return RowView(self, index)


@dataclass
class RowView:
    """Rows ``index`` of ``pool``, gathered only when asked for: the runs of a sweep share one
    pool instead of each holding a copy (a cached prefix of the whole training set alone can
    take gigabytes)."""

    pool: Split
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, index: torch.Tensor) -> Split:
        return self.pool.subset(self.index[index])

    def to(self, device) -> "RowView":
        return RowView(self.pool.to(device), self.index.to(device))


@dataclass
class KeptRows:
    """Some rows of a split, addressed by their positions in the whole split: what a remote cell
    needs of a training split (its subsets' rows) instead of the whole of it.  ``index``: the
    kept positions, sorted and distinct; asking for another row is an error."""

    rows: Split
    index: torch.Tensor

    @classmethod
    def of(cls, split: Split, index: torch.Tensor) -> "KeptRows":
        index = torch.unique(index)  # sorted
        return cls(split.subset(index), index)

    @property
    def x(self) -> torch.Tensor:
        return self.rows.x

    @property
    def y(self) -> torch.Tensor:
        return self.rows.y

    def _local(self, index: torch.Tensor) -> torch.Tensor:
        local = torch.searchsorted(self.index, index).clamp_(max=len(self.index) - 1)
        if not torch.equal(self.index[local], index):
            raise DataError("rows asked for that were not sent with this cell; send every subset's rows")
        return local

    def subset(self, index: torch.Tensor) -> Split:
        return self.rows.subset(self._local(index))

    def view(self, index: torch.Tensor) -> RowView:
        return RowView(self.rows, self._local(index))

    def to(self, device) -> "KeptRows":
        return KeptRows(self.rows.to(device), self.index.to(device))


@dataclass
class TaskData:
    """One classification task: a seeded train/val split of the official training data and the
    official test split, restricted to ``classes`` and relabelled ``0..len(classes)-1``.

    ``mean``/``std``: the per-channel normalisation of the tensors; None for a catalog dataset
    (its own, :func:`functions.data.adapt.channel_stats`), measured on the training split for a
    folder or CSV of images (:mod:`functions.data.image_dataset`)."""

    dataset: str
    classes: list
    train: Split
    val: Split
    test: Split
    mean: tuple | None = None
    std: tuple | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def pixels(self, split: Split) -> torch.Tensor:
        """``split``'s images back in [0, 1] (this task's normalisation undone: its own statistics,
        or the catalog's for a built-in dataset), for networks that normalise their input their own way.
        Images read lazily from a cache in [0, 1] (``ImageDataset.task(..., pixels=True)``) are returned as they are."""
        if not isinstance(split.x, torch.Tensor):
            return split.x
        if self.mean is None:
            mean, std = channel_stats(self.dataset, split.x.shape[1])
        else:
            mean, std = (torch.tensor(v, dtype=split.x.dtype).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return (split.x * std + mean).clamp_(0.0, 1.0)


def _as_split(dataset: str, images: np.ndarray, labels: np.ndarray, classes: list, shape: tuple | None) -> Split:
    lookup = np.full(spec(dataset).num_classes, -1, dtype=np.int64)
    lookup[classes] = np.arange(len(classes))
    keep = lookup[labels] >= 0
    x = torch.from_numpy(images[keep]).float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):  # another domain's images, resized bilinearly
        mean, std = channel_stats(dataset, shape[0])
        x = adapt_images(x, shape[0], tuple(shape[1:]), mean, std, interpolation="bilinear")
    else:
        mean, std = channel_stats(dataset, x.shape[1])
        x = (x - mean) / std
    x = x.contiguous(memory_format=torch.channels_last)  # fastest conv layout on CPU
    return Split(x, torch.from_numpy(lookup[labels[keep]]))


def load_task(dataset: str, classes, val_split: float, seed: int, root: Path | None = None,
              shape: tuple | None = None) -> TaskData:
    """The task's splits; decoded once per process, since sweeps and notebooks ask for the same
    task many times (the tensors are shared: index them, do not modify them in place).  With
    ``shape`` (channels, height, width) the images are adapted to it (see :mod:`functions.data.adapt`)."""
    classes = validate_classes(dataset, classes)
    if not 0 <= val_split < 1:
        raise DataError(f"val_split={val_split} must be in [0, 1)")
    if shape is not None:
        check_adaptable(spec(dataset).image_shape, tuple(shape), f"{dataset} images")
        shape = None if tuple(shape) == spec(dataset).image_shape else tuple(shape)
    return _load_task(dataset, tuple(classes), float(val_split), int(seed), Path(root or data_root()), shape)


@functools.lru_cache(maxsize=4)
def _load_task(dataset: str, classes: tuple, val_split: float, seed: int, root: Path, shape: tuple | None) -> TaskData:
    classes = list(classes)
    train_full = _as_split(dataset, *read_split(dataset, True, root), classes, shape)
    order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_split * len(train_full)))
    test = _as_split(dataset, *read_split(dataset, False, root), classes, shape)
    return TaskData(dataset, classes, train_full.subset(order[n_val:]), train_full.subset(order[:n_val]), test)


def subset_seed(seed: int, percentage: float, repeat: int) -> int:
    """One subset per (percentage, repeat), shared by every cut point so that runs pair by repeat."""
    return int(np.random.SeedSequence([seed, repeat, int(round(percentage * 1e6))]).generate_state(1)[0])


def balanced_subset(labels: torch.Tensor, num_classes: int, percentage: float, seed: int) -> torch.Tensor:
    """Indices of a class-balanced random subset holding ``percentage`` of ``labels``.

    Each class gets ``floor(percentage * N / k)`` images, and at least one: a percentage too
    small for that is rounded up with a warning that says so.  A class with fewer images than
    that gives all it has (so 100% is the whole training split).
    """
    percentage = check_percentage(percentage)
    per_class = int(percentage * len(labels) / num_classes)
    if per_class == 0:
        warnings.warn(f"percentage {percentage} gives no image per class out of {len(labels)} "
                      f"({num_classes} classes); rounded up to 1 image per class", stacklevel=2)
        per_class = 1
    return per_class_draw(labels, num_classes, per_class, seed)


def per_class_draw(labels: torch.Tensor, num_classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of the first ``per_class`` images of each class in one seeded order per
    class (all of a class's images when it has fewer)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values
