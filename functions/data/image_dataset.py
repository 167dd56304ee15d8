"""A user's folder or CSV of images as a dataset: class names, counts, fingerprint, and tasks.

:func:`load_dataset` reads the file list (:mod:`functions.data.files`); :meth:`ImageDataset.task`
gives the same :class:`~functions.data.tasks.TaskData` the built-in datasets give, at the size and
channels a network asks for, from the decoded-image cache (:mod:`functions.data.image_cache`).

Normalisation is the dataset's own, as for the built-in datasets: the per-channel mean and std
of the task's training images (before the validation draw), measured at the size asked and kept
in ``TaskData.mean``/``std``.  The ImageNet backbones undo it (``TaskData.pixels``) and apply
their own; a study CNN reads the tensors as they are, as it reads an adapted MNIST target.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError
from ..core.paths import data_root
from .catalog import SPECS
from .files import SPLIT_SEED, TEST_FRACTION, Manifest, describe_changes, read_manifest
from .image_cache import cached_images, cached_sums, stored_manifest
from .tasks import Split, TaskData

FILL_CHUNK = 32  # images per step when filling a split: elementwise, so any size gives the same tensors


class ImageDataset:
    """One version of a folder or CSV of images.  ``key`` (name, fingerprint prefix and the test
    split's draw) names its splits wherever a dataset name keys a cache (the feature store);
    ``version`` is what a results file records, ``check_version`` refuses another."""

    def __init__(self, manifest: Manifest, cache_root: Path | None = None):
        self.manifest, self.cache_root = manifest, cache_root
        self._tasks: dict = {}

    name = property(lambda self: self.manifest.name)
    fingerprint = property(lambda self: self.manifest.fingerprint)
    classes = property(lambda self: self.manifest.classes)
    domains = property(lambda self: self.manifest.domains)

    @property
    def key(self) -> str:
        drawn = self.manifest.test_drawn
        draw = f":test{drawn['fraction']}-seed{drawn['seed']}" if drawn else ""
        return f"{self.name}@{self.fingerprint[:12]}{draw}"

    @property
    def version(self) -> dict:
        return self.manifest.version

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class, per split: ``{"train": {"cat": 40, ...}, "val": ..., "test": ...}``."""
        return self.manifest.counts()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{split} {sum(c.values())}" for split, c in self.counts().items())
        return f"ImageDataset({self.name!r}, {len(self.classes)} classes, {sizes}, fingerprint {self.fingerprint[:12]})"

    def images(self, size: int, channels: int = 3, log=None) -> np.ndarray:
        """Every image of the manifest, in its order, as memory-mapped ``(N, size, size, channels)`` uint8."""
        return cached_images(self.manifest, size, channels, self.cache_root, log)

    def labels(self) -> np.ndarray:
        """Every image's class as an index into :attr:`classes`, in the manifest's order."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[e.label] for e in self.manifest.entries], dtype=np.int64)

    def task(self, size: int, channels: int = 3, val_split: float = 0.1, seed: int = 0, classes=None,
             domain: str | None = None, log=None, pixels: bool = False) -> TaskData:
        """The task over ``classes`` (names; default all) of ``domain`` (default all) at ``size`` x
        ``size`` pixels, grey (1) or RGB (3).  The validation split is the given one (``val/``
        folders or rows), else drawn from the training images (:func:`validation_draw`).  Built
        once per dataset object and
        arguments (the tensors are shared: index them, do not modify them in place).

        With ``pixels`` the splits' images are :class:`CachedPixels`: in [0, 1], read from the
        cache only when indexed, so a split of any size holds no pixels in memory (for networks
        that normalise their input their own way: ``TaskData.pixels`` gives them back as they are)."""
        classes = self._check_classes(classes)
        if domain is not None and domain not in self.domains:
            raise DataError(f"{self.name} has no domain {domain!r}; its domains are "
                            f"{self.domains or 'none (no domain column)'}")
        if not 0 <= val_split < 1:
            raise DataError(f"val_split={val_split} must be in [0, 1)")
        key = (size, channels, float(val_split), int(seed), tuple(classes), domain, bool(pixels))
        if key not in self._tasks:
            self._tasks[key] = self._task(size, channels, float(val_split), int(seed), classes, domain, log, pixels)
        return self._tasks[key]

    def _check_classes(self, classes) -> list[str]:
        if classes is None:
            return self.classes
        classes = [str(c) for c in classes]
        unknown = [c for c in classes if c not in self.classes]
        if unknown or len(set(classes)) != len(classes) or len(classes) < 2:
            problem = f"has no class(es) {unknown}" if unknown else "needs at least two different classes"
            raise DataError(f"{self.name} {problem}: choose two or more of {self.classes}")
        return classes

    def _task(self, size, channels, val_split, seed, classes, domain, log, pixels) -> TaskData:
        images = self.images(size, channels, log)
        lookup = {c: i for i, c in enumerate(classes)}
        rows = {split: [] for split in ("train", "val", "test")}
        for i, e in enumerate(self.manifest.entries):
            if e.label in lookup and (domain is None or e.domain == domain):
                rows[e.split].append(i)
        labels = np.array([lookup.get(e.label, -1) for e in self.manifest.entries], dtype=np.int64)
        for split in ("train", "test"):
            missing = [c for c in classes if lookup[c] not in set(labels[rows[split]])]
            if missing:
                raise DataError(f"{self.name}{f' domain {domain}' if domain else ''}: class {missing[0]!r} has no "
                                f"image in the {split} split; choose classes that have, or add images")
        if pixels:
            mean, std = (0.0,) * channels, (1.0,) * channels
        else:
            mean, std = channel_mean_std(cached_sums(self.manifest, size, channels, self.cache_root),
                                         np.array(rows["train"], dtype=np.int64), size * size)

        def split_of(index) -> Split:
            index = np.asarray(index, dtype=np.int64)
            x = CachedPixels(images.filename, index) if pixels else normalised(images, index, mean, std)
            return Split(x, torch.from_numpy(labels[index]))

        train_rows = np.array(rows["train"], dtype=np.int64)
        if rows["val"]:
            train, val = split_of(train_rows), split_of(rows["val"])
        else:  # the draw needs the labels only: each split is filled once, straight from the cache
            in_val = validation_draw(torch.from_numpy(labels[train_rows]), len(classes), val_split, seed).numpy()
            train, val = split_of(train_rows[~in_val]), split_of(train_rows[in_val])
        return TaskData(self.key, list(classes), train, val, split_of(rows["test"]), mean, std)

    def check_version(self, stored: dict, what: str = "the results file") -> None:
        """Refuse ``what``, made from the dataset version ``stored`` (a :attr:`version`), unless it
        is this one; the message names what changed since (from that version's file list in the
        cache, where it is still there)."""
        if stored.get("fingerprint") == self.fingerprint and stored.get("test_split") == self.version["test_split"]:
            return
        old = stored_manifest(stored.get("fingerprint", ""), self.cache_root)
        if old is not None:
            drawn = stored.get("test_split")
            changes = describe_changes(Manifest(old.name, old.root, old.entries, None if drawn == "given" else drawn),
                                       self.manifest)
        else:
            changes = (f"fingerprint {str(stored.get('fingerprint'))[:12]} then, {self.fingerprint[:12]} now (that "
                       f"version's file list is not in the cache)")
        raise DataError(f"{what} was made from another version of {self.name}: {changes}; restore those files, or "
                        f"move {what} away to start afresh")


class CachedPixels:
    """Rows of a decoded-image cache file as float32 images in [0, 1], ``(N, C, H, W)``
    channels-last, read when indexed (an int, a slice, or an array or tensor of rows): a split of
    any size holds no pixels in memory, a batch or chunk costs its own rows.  Pickled as the file's
    path and the rows, so a worker process opens the cache instead of receiving the pixels."""

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, path, rows: np.ndarray):
        self.path, self.rows = str(path), np.asarray(rows, dtype=np.int64)
        self._images = np.load(self.path, mmap_mode="r")

    def __reduce__(self):
        return CachedPixels, (self.path, self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        _, height, width, channels = self._images.shape
        return torch.Size((len(self.rows), channels, height, width))

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = self.rows[index]
        if np.ndim(rows) == 0:
            return self[np.array([index])][0]
        pixels = torch.from_numpy(np.ascontiguousarray(self._images[rows]))  # (n, H, W, C) uint8
        x = torch.empty((len(rows), *self.shape[1:]), memory_format=torch.channels_last)
        x.permute(0, 2, 3, 1).copy_(pixels).div_(255.0)
        return x

    def to(self, device) -> "CachedPixels | torch.Tensor":
        """Itself on the CPU; every image copied to ``device`` otherwise."""
        return self if torch.device(device).type == "cpu" else self[:].to(device)


def validation_draw(labels: torch.Tensor, num_classes: int, fraction: float, seed: int) -> torch.Tensor:
    """A mask of the training images moved to validation: ``round(fraction * n)`` of each class, at
    least one while the class keeps one for training, drawn with ``seed``.  Stratified, unlike the
    built-in datasets' draw: a user's small classes would otherwise often get no validation image,
    and the few-shot protocol draws a fixed number from each class of it."""
    generator, mask = torch.Generator().manual_seed(seed), torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        count = min(max(1, round(fraction * len(members))), len(members) - 1) if fraction > 0 else 0
        mask[members[torch.randperm(len(members), generator=generator)[:count]]] = True
    return mask


def channel_mean_std(sums: np.ndarray, rows: np.ndarray, pixels_per_image: int) -> tuple[tuple, tuple]:
    """Per-channel mean and (population) std in [0, 1] of the images ``rows``, from their exact
    pixel sums (:func:`functions.data.image_cache.cached_sums`)."""
    total = sums[rows].sum(axis=0, dtype=np.uint64)  # (channels, 2), exact
    count = float(len(rows) * pixels_per_image)
    mean = total[:, 0].astype(np.float64) / (255.0 * count)
    squares = total[:, 1].astype(np.float64) / (255.0 ** 2 * count)
    std = np.sqrt(np.maximum(squares - np.square(mean), 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-6)) for s in std)


def normalised(images: np.ndarray, index: np.ndarray, mean: tuple, std: tuple) -> torch.Tensor:
    """``images[index]`` (uint8, ``(N, H, W, C)``) as a channels-last float32 ``(N, C, H, W)``
    tensor of ``v * (1 / (255 std)) - mean / std`` per channel: two elementwise passes (multiply,
    then add: each rounded once, so every CPU and chunk size gives the same bits), filled
    :data:`FILL_CHUNK` images at a time from the cache (no second copy of the split in memory)."""
    channels, size = images.shape[-1], images.shape[1]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32)
    x = torch.empty((len(index), channels, size, size), memory_format=torch.channels_last)
    out = x.permute(0, 2, 3, 1)  # the same memory, (N, H, W, C)
    for start in range(0, len(index), FILL_CHUNK):
        part = out[start:start + FILL_CHUNK]
        part.copy_(torch.from_numpy(np.ascontiguousarray(images[index[start:start + FILL_CHUNK]])))
        part.mul_(scale).add_(shift)
    return x


def resolve(path_or_name) -> Path:
    """A folder or CSV path, or the name of a prepared folder under the data root (``clipart``);
    a built-in dataset's name is refused with the way to load it (write ``./MNIST`` for a folder
    of that name)."""
    if str(path_or_name) in SPECS:
        raise DataError(f"{path_or_name} is a built-in dataset, not a folder of images: load it with "
                        f"functions.data.tasks.load_task({str(path_or_name)!r}, classes, val_split, seed)")
    path = Path(path_or_name)
    if path.exists():
        return path
    prepared = data_root() / str(path_or_name)
    if not path.is_absolute() and len(path.parts) == 1 and prepared.is_dir():
        return prepared
    raise DataError(f"{path_or_name}: no such folder or CSV file, and no prepared dataset of that name in "
                    f"{data_root()}; give an image folder or CSV, or prepare it (python -m functions prepare-data "
                    f"{path_or_name})")


def load_dataset(path_or_name, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED,
                 cache_root: Path | None = None) -> ImageDataset:
    """A folder (``root/<label>/<image>`` or ``root/{train,val,test}/<label>/<image>``), a CSV
    (``path,label[,split][,domain]``) or a prepared dataset's name, read and checked: every file
    hashed, no pixels decoded yet.  A one-split folder gets a drawn test split (``test_fraction``
    of each class, ``seed``), recorded in its manifest."""
    return ImageDataset(read_manifest(resolve(path_or_name), test_fraction, seed), cache_root)
