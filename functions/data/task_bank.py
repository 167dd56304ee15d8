"""A bank of small target tasks for ranking pretrained models: class subsets of MNIST,
FashionMNIST and the 8 x 8 digits at several training sizes, and the same drawing over a user's
folder or CSV of images (:class:`DatasetPool`, :func:`dataset_tasks`).

Every task draws from one fixed *pool* per dataset (a seeded, class-balanced sample of the
official training split and of the official test split), so that a model's features are
computed once per (model, dataset) and every task of that dataset is a choice of rows: the whole
model x task matrix then costs feature extraction plus linear fits.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import DataError
from .catalog import spec
from .image_dataset import ImageDataset
from .sources import read_split

BANK_DATASETS = ("MNIST", "FashionMNIST", "digits")
DOMAINS = {"MNIST": "handwritten digits, 28 x 28", "FashionMNIST": "clothing photographs, 28 x 28",
           "digits": "handwritten digits, 8 x 8 scans"}
CLASS_NAMES = {
    "MNIST": tuple(str(c) for c in range(10)),
    "digits": tuple(str(c) for c in range(10)),
    "FashionMNIST": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
}
# images per class in a dataset's pool (the 8 x 8 digits have about 120 training and 60 test
# images per class: all of them)
POOL_PER_CLASS = {"train": 200, "test": 100}
POOL_SEED = 7
# the bank: class subsets per class count, and training images per class, per dataset
SUBSETS_PER_CLASS_COUNT = {2: 4, 3: 3, 4: 1, 5: 3, 10: 1}
IMAGES_PER_CLASS = {"MNIST": (10, 50, 200), "FashionMNIST": (10, 50, 200), "digits": (10, 40, 100)}
BANK_SEED = 2024


@dataclass(frozen=True)
class TaskSpec:
    """A target task: ``n_train`` training images, balanced over ``classes`` of ``dataset``."""

    dataset: str
    classes: tuple
    n_train: int

    @property
    def name(self) -> str:
        return f"{self.dataset}:{','.join(str(c) for c in self.classes)}:{self.n_train}"

    @property
    def per_class(self) -> int:
        return self.n_train // len(self.classes)


def parse_task(text: str) -> TaskSpec:
    """``<dataset>:<classes>:<n>``, classes as ``0,3,5`` or a range ``0-4``; checked against the pool."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise DataError(f"task {text!r} is not <dataset>:<classes>:<n>, e.g. MNIST:0,1,2:300 or digits:0-4:100")
    dataset, classes_text, n_text = parts
    try:
        if "-" in classes_text and "," not in classes_text:
            low, high = (int(v) for v in classes_text.split("-"))
            if high < low:
                raise DataError(f"task {text!r}: the class range {low}-{high} is empty because it descends; write "
                                f"the lower class first ({dataset}:{high}-{low}:{n_text}) or list the classes (4,3,2)")
            classes = tuple(range(low, high + 1))
        else:
            classes = tuple(int(v) for v in classes_text.split(","))
        n_train = int(n_text)
    except ValueError:
        raise DataError(f"task {text!r}: classes must be integers (0,3,5 or 0-4) and n an integer") from None
    return check_task(TaskSpec(dataset, classes, n_train))


def check_task(task: TaskSpec) -> TaskSpec:
    """Refuse unknown datasets or classes, repeated classes, and more images than the pool holds."""
    if task.dataset not in BANK_DATASETS:
        raise DataError(f"unknown task dataset {task.dataset!r}; choose one of {list(BANK_DATASETS)}")
    count = spec(task.dataset).num_classes
    unknown = [c for c in task.classes if not 0 <= c < count]
    if unknown:
        raise DataError(f"{task.dataset} has no class(es) {unknown}: its classes are 0..{count - 1} "
                        f"({', '.join(CLASS_NAMES[task.dataset])})")
    if len(set(task.classes)) != len(task.classes) or len(task.classes) < 2:
        raise DataError(f"task {task.name}: give at least two different classes")
    available = len(task.classes) * min(pool_counts(task.dataset)[c] for c in task.classes)
    if not len(task.classes) <= task.n_train <= available:
        raise DataError(f"task {task.name} asks for {task.n_train} training images; balanced over these classes the "
                        f"{task.dataset} pool gives {len(task.classes)} to {available}")
    return task


def bank() -> list[TaskSpec]:
    """The task bank: for each dataset, seeded class subsets of 2, 3, 4, 5 and 10 classes, each at
    the dataset's training sizes (10 to 200 images per class; 8 x 8 digits: 10 to 100)."""
    rng = np.random.default_rng(BANK_SEED)
    return [task for dataset in BANK_DATASETS
            for task in draw_tasks(dataset, spec(dataset).num_classes, IMAGES_PER_CLASS[dataset], rng)]


def draw_tasks(dataset: str, count: int, sizes, rng: np.random.Generator) -> list[TaskSpec]:
    """Seeded class subsets of ``dataset``'s ``count`` classes (``SUBSETS_PER_CLASS_COUNT``, as
    many as there are for a small ``count``), each at ``sizes`` training images per class."""
    tasks = []
    for k, subsets in SUBSETS_PER_CLASS_COUNT.items():
        if k > count:
            continue
        drawn: list[tuple] = []
        while len(drawn) < min(subsets, math.comb(count, k)):
            classes = tuple(sorted(int(c) for c in rng.choice(count, size=k, replace=False)))
            if classes not in drawn:
                drawn.append(classes)
        tasks += [TaskSpec(dataset, classes, per_class * k) for classes, per_class in itertools.product(drawn, sizes)]
    return tasks


def dataset_tasks(data: DatasetPool, log=print) -> list[TaskSpec]:
    """The bank's tasks over a user's dataset: its class subsets drawn as the bank draws them, at
    the bank's training sizes (10, 50, 200 per class) that its smallest class offers."""
    sizes = data.sizes(IMAGES_PER_CLASS["MNIST"], log)
    return draw_tasks(data.dataset, len(data.class_names), sizes, np.random.default_rng(BANK_SEED))


def dataset_task(data: DatasetPool, log=print) -> TaskSpec:
    """A user's whole task as one bank task: every class, balanced at its smallest class's
    training images (saying so when that leaves images of the other classes out)."""
    (per_class,) = data.sizes([int(data.train_counts().max())], log)
    return TaskSpec(data.dataset, tuple(range(len(data.class_names))), per_class * len(data.class_names))


def task_metadata(task: TaskSpec, data=None) -> dict:
    """The task's row of ``target_dataset_meta_data.csv`` (``data``: its pool, default the bank's)."""
    data = data or pool(task.dataset)
    return {"task": task.name, "source_dataset": task.dataset, "domain": data.domain,
            "num_classes": len(task.classes), "classes": " ".join(str(c) for c in task.classes),
            "class_names": "; ".join(data.class_names[c] for c in task.classes),
            "n_train": task.n_train, "n_test": int(np.isin(np.asarray(data.test_y), task.classes).sum())}


# ----------------------------------------------------------------------------- pools

@dataclass
class Pool:
    """A dataset's pool: images in [0, 1] (N, 1, H, W) and their original labels, per split."""

    dataset: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    domain = property(lambda self: DOMAINS[self.dataset])
    class_names = property(lambda self: CLASS_NAMES[self.dataset])

    def images(self, split: str, size: int, channels: int) -> torch.Tensor:
        """The split's images as drawn (28 x 28 or 8 x 8 grey: each network adapts them itself)."""
        return self.train_x if split == "train" else self.test_x

    def key(self, split: str, size: int, channels: int) -> dict:
        """What names the split's images in the feature store (the bank's pools, drawn once, by name)."""
        return {"pool": self.dataset, "split": split, "count": len(self.train_y if split == "train" else self.test_y)}


class DatasetPool:
    """A user's dataset (:class:`~functions.data.image_dataset.ImageDataset`) as the bank's pool:
    a sample of its train and test splits drawn as the bank's pools are (``POOL_PER_CLASS``),
    given to each network at its own input size and channels from the decoded-image cache (the
    images of a given ``val`` split are left out)."""

    def __init__(self, data: ImageDataset):
        self.data, self.dataset, self.class_names = data, data.name, list(data.classes)
        self.domain = f"your images: {data.name}"
        labels = data.labels()
        self._rows = {}
        for split, train in (("train", True), ("test", False)):
            rows = np.array([i for i, e in enumerate(data.manifest.entries) if e.split == split], dtype=np.int64)
            self._rows[split] = rows[_draw(labels[rows], POOL_PER_CLASS[split], POOL_SEED + train)]
        self.train_y, self.test_y = (torch.from_numpy(labels[self._rows[s]]) for s in ("train", "test"))

    def train_counts(self) -> np.ndarray:
        return np.bincount(self.train_y.numpy(), minlength=len(self.class_names))

    def sizes(self, sizes, log=print) -> list[int]:
        """``sizes`` (training images per class) up to what the smallest class has, said in one
        line naming the class when that stops one."""
        counts = self.train_counts()
        smallest = int(counts.min())
        kept = sorted({min(int(n), smallest) for n in sizes})
        if smallest < max(sizes):
            log(f"{self.dataset}: at most {smallest} training images per class, what its smallest class "
                f"{self.class_names[int(counts.argmin())]!r} has")
        return kept

    def images(self, split: str, size: int, channels: int) -> torch.Tensor:
        """The split's images in [0, 1], ``(N, channels, size, size)``."""
        pixels = torch.from_numpy(np.ascontiguousarray(self.data.images(size, channels)[self._rows[split]]))
        return pixels.permute(0, 3, 1, 2).float().div_(255.0)

    def key(self, split: str, size: int, channels: int) -> dict:
        """What names the split's images in the feature store: the dataset's key (its fingerprint
        and test draw), the split and the size and channels they are read at."""
        return {"pool": self.data.key, "split": split, "size": size, "channels": channels,
                "count": len(self._rows[split])}


def _draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(rows))


@functools.lru_cache(maxsize=3)
def pool(dataset: str) -> Pool:
    """The dataset's pool, drawn once per process from the official splits (see the module doc)."""
    if dataset not in BANK_DATASETS:
        raise DataError(f"unknown task dataset {dataset!r}; choose one of {list(BANK_DATASETS)}")
    parts = []
    for split, train in (("train", True), ("test", False)):
        images, labels = read_split(dataset, train)
        rows = _draw(labels, POOL_PER_CLASS[split], POOL_SEED + train)
        parts += [torch.from_numpy(images[rows]).float().div(255.0).unsqueeze(1), torch.from_numpy(labels[rows])]
    return Pool(dataset, *parts)


def pool_counts(dataset: str) -> np.ndarray:
    """Training images per class in the dataset's pool."""
    return np.bincount(pool(dataset).train_y.numpy(), minlength=spec(dataset).num_classes)


# how task_rows splits, in the words a record keeps beside the accuracies it gave
SPLIT_PROTOCOL = ("train: n_train / classes images per class (the remainder to the first classes) drawn from the "
                  "pool's training split by numpy default_rng([seed, *classes, n_train]); test: every pool test "
                  "image of the classes")


def task_rows(task: TaskSpec, seed: int, data=None) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) of ``task`` in its pool (``data``, default its dataset's):
    ``n_train // k`` training images per class drawn with ``seed`` (the remainder to the first
    classes), and every pool test image of its classes."""
    data = data or pool(task.dataset)
    rng = np.random.default_rng([seed, *task.classes, task.n_train])
    train_y, test_y = np.asarray(data.train_y), np.asarray(data.test_y)
    k = len(task.classes)
    rows = []
    for i, c in enumerate(task.classes):
        members = rng.permutation(np.flatnonzero(train_y == c))
        rows.append(members[:task.n_train // k + (i < task.n_train % k)])
    test = np.flatnonzero(np.isin(test_y, task.classes))
    return np.sort(np.concatenate(rows)), test


def task_labels(task: TaskSpec, labels: torch.Tensor | np.ndarray, data=None) -> np.ndarray:
    """Original labels as the task's labels ``0..k-1`` (in the order of ``task.classes``)."""
    lookup = np.full(len((data or pool(task.dataset)).class_names), -1)
    lookup[list(task.classes)] = np.arange(len(task.classes))
    return lookup[np.asarray(labels)]
