"""torchvision's dataset classes, the readers and downloaders of the data root's layout.

A module of its own so that torchvision (over a second to import: it pulls in torch's compiler
stack) loads only when a dataset is decoded or downloaded, not in every command or Ray worker
that merely imports the data layer.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from torchvision import datasets


class _CIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader; integrity is judged on the decoded arrays instead of file MD5s,
    so that files in CIFAR's own format written by tests go through the same code path."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
            self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


READERS = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST, "CIFAR10": _CIFAR10}
