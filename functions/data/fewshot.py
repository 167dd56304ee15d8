"""The few-shot protocol: N labelled images per class, several seeded splits, one fixed validation set.

Split ``s`` draws one seeded order of each class's training images and takes its first N, so the
5-shot training set of split ``s`` holds its 1-shot set: curves over N then vary the amount of
data, not the draw.  The validation set is drawn from the task's validation split, which is
disjoint from the training split, so it is never inside any training set.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import DataError
from .tasks import per_class_draw


def _seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


def check_samples_per_class(labels: torch.Tensor, num_classes: int, samples_per_class: int,
                            class_names=None, where: str = "the training split") -> None:
    """Refuse N larger than the smallest class offers, naming that class."""
    if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int) or samples_per_class < 1:
        raise DataError(f"samples per class {samples_per_class!r} must be a positive integer")
    counts = class_counts(labels, num_classes)
    smallest = int(np.argmin(counts))
    if samples_per_class > counts[smallest]:
        name = class_names[smallest] if class_names is not None else smallest
        raise DataError(f"{samples_per_class} samples per class asked for, but class {name} has only "
                        f"{counts[smallest]} images in {where}; give at most {counts[smallest]}")


def few_shot_index(labels: torch.Tensor, num_classes: int, samples_per_class: int, seed: int, split: int,
                   class_names=None) -> torch.Tensor:
    """Sorted indices of a class-balanced training set: ``samples_per_class`` images of each class,
    the first ones of split ``split``'s seeded order (nested over N)."""
    if split < 0:
        raise DataError(f"split {split} must be a non-negative integer")
    check_samples_per_class(labels, num_classes, samples_per_class, class_names)
    return per_class_draw(labels, num_classes, samples_per_class, _seed(seed, 7919, split))


def validation_index(labels: torch.Tensor, num_classes: int, per_class: int, seed: int,
                     class_names=None) -> torch.Tensor:
    """The fixed, class-balanced validation set: ``per_class`` images of each class of the task's
    validation split, the same for every run of a grid."""
    check_samples_per_class(labels, num_classes, per_class, class_names, where="the validation split")
    return per_class_draw(labels, num_classes, per_class, _seed(seed, 104729))
