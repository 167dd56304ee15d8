"""A bank of small target tasks for ranking pretrained models: class subsets of MNIST,
FashionMNIST and the 8 x 8 digits at several training sizes.

Every task draws from one fixed *pool* per dataset (a seeded, class-balanced sample of the
official training split and of the official test split), so that a model's features are
computed once per (model, dataset) and every task of that dataset is a choice of rows: the whole
model x task matrix then costs feature extraction plus linear fits.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import DataError
from .catalog import spec
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
    tasks = []
    for dataset in BANK_DATASETS:
        count = spec(dataset).num_classes
        for k, subsets in SUBSETS_PER_CLASS_COUNT.items():
            drawn: list[tuple] = []
            while len(drawn) < subsets:
                classes = tuple(sorted(int(c) for c in rng.choice(count, size=k, replace=False)))
                if classes not in drawn:
                    drawn.append(classes)
            tasks += [TaskSpec(dataset, classes, per_class * k)
                      for classes, per_class in itertools.product(drawn, IMAGES_PER_CLASS[dataset])]
    return tasks


def task_metadata(task: TaskSpec) -> dict:
    """The task's row of ``target_dataset_meta_data.csv``."""
    return {"task": task.name, "source_dataset": task.dataset, "domain": DOMAINS[task.dataset],
            "num_classes": len(task.classes), "classes": " ".join(str(c) for c in task.classes),
            "class_names": "; ".join(CLASS_NAMES[task.dataset][c] for c in task.classes),
            "n_train": task.n_train, "n_test": int(np.isin(pool(task.dataset).test_y.numpy(), task.classes).sum())}


# ----------------------------------------------------------------------------- pools

@dataclass
class Pool:
    """A dataset's pool: images in [0, 1] (N, 1, H, W) and their original labels, per split."""

    dataset: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


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


def task_rows(task: TaskSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) of ``task`` in its dataset's pool: ``n_train // k`` training
    images per class drawn with ``seed`` (the remainder to the first classes), and every pool
    test image of its classes."""
    data = pool(task.dataset)
    rng = np.random.default_rng([seed, *task.classes, task.n_train])
    train_y, test_y = data.train_y.numpy(), data.test_y.numpy()
    k = len(task.classes)
    rows = []
    for i, c in enumerate(task.classes):
        members = rng.permutation(np.flatnonzero(train_y == c))
        rows.append(members[:task.n_train // k + (i < task.n_train % k)])
    test = np.flatnonzero(np.isin(test_y, task.classes))
    return np.sort(np.concatenate(rows)), test


def task_labels(task: TaskSpec, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Original labels as the task's labels ``0..k-1`` (in the order of ``task.classes``)."""
    lookup = np.full(spec(task.dataset).num_classes, -1)
    lookup[list(task.classes)] = np.arange(len(task.classes))
    return lookup[np.asarray(labels)]
