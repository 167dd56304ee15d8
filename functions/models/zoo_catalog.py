"""The model zoo's members: which pretrained networks it holds, each with what it was pretrained
on, and the version that its records carry.  A catalogue only (no weights are read here), so that
what reads the zoo's records needs nothing that trains or runs the networks."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import DataError
from .registry import REGISTRY

# bumped when a model is added, removed or changed: records of another version are refused
ZOO_VERSION = 1
ZOO_FOLDER = "zoo"
# top-1 ImageNet accuracy of the float EfficientNet-Lite models, as the TensorFlow release of
# EfficientNet-Lite published it
IMAGENET_TOP1 = {"efficientnet_lite0": 0.751, "efficientnet_lite1": 0.767, "efficientnet_lite2": 0.776}
MNIST_ALL, FASHION_ALL = tuple(range(10)), tuple(range(10))


@dataclass(frozen=True)
class ZooModel:
    """One pretrained model: an ImageNet backbone (``family`` EfficientNet-Lite), or a study CNN
    of ``depth`` blocks of ``width`` channels pretrained on ``classes`` of ``dataset``; ``home``
    is the study folder and setup whose committed source model it is, if any."""

    name: str
    family: str
    dataset: str
    classes: tuple
    depth: int = 0
    width: int = 0
    home: tuple | None = None


def _study(name: str, dataset: str, classes: tuple, depth: int, width: int, home: tuple | None = None) -> ZooModel:
    return ZooModel(name, "study CNN", dataset, classes, depth, width, home)


ZOO = (
    # the registry's networks whose weights ship offline
    *(ZooModel(name, r.family, r.pretrained_on, tuple(range(1000))) for name, r in REGISTRY.items()
      if r.source == "package"),
    # the study folders' committed source models
    _study("mnist_0-4_d6_w16", "MNIST", (0, 1, 2, 3, 4), 6, 16, ("MNIST", "regular")),
    _study("mnist_all_d6_w16", "MNIST", MNIST_ALL, 6, 16, ("MNIST_to_FashionMNIST", "cross")),
    _study("fashion_regular_d6_w16", "FashionMNIST", (0, 1, 2, 3, 4, 6, 8), 6, 16, ("FashionMNIST", "regular")),
    _study("fashion_random_d6_w16", "FashionMNIST", (0, 1, 2, 4, 6, 7, 9), 6, 16, ("FashionMNIST", "random")),
    _study("fashion_all_d6_w16", "FashionMNIST", FASHION_ALL, 6, 16, ("FashionMNIST_to_MNIST", "cross")),
    # depths 2-8 and widths 8-64 (the widest on the smallest task: pretraining cost grows with
    # width squared), made by `python -m functions zoo pretrain`
    _study("mnist_0-4_d2_w8", "MNIST", (0, 1, 2, 3, 4), 2, 8),
    _study("mnist_0-4_d4_w32", "MNIST", (0, 1, 2, 3, 4), 4, 32),
    _study("mnist_0-4_d8_w16", "MNIST", (0, 1, 2, 3, 4), 8, 16),
    _study("mnist_5-9_d2_w16", "MNIST", (5, 6, 7, 8, 9), 2, 16),
    _study("mnist_5-9_d6_w8", "MNIST", (5, 6, 7, 8, 9), 6, 8),
    _study("mnist_0-1_d2_w64", "MNIST", (0, 1), 2, 64),
    _study("mnist_all_d4_w16", "MNIST", MNIST_ALL, 4, 16),
    _study("mnist_all_d8_w8", "MNIST", MNIST_ALL, 8, 8),
    _study("fashion_0-4_d2_w32", "FashionMNIST", (0, 1, 2, 3, 4), 2, 32),
    _study("fashion_0-4_d4_w8", "FashionMNIST", (0, 1, 2, 3, 4), 4, 8),
    _study("fashion_5-9_d6_w32", "FashionMNIST", (5, 6, 7, 8, 9), 6, 32),
    _study("fashion_all_d4_w16", "FashionMNIST", FASHION_ALL, 4, 16),
)
BY_NAME = {m.name: m for m in ZOO}


def zoo_model(name: str) -> ZooModel:
    if name not in BY_NAME:
        raise DataError(f"the zoo has no model {name!r}; its models are {list(BY_NAME)}")
    return BY_NAME[name]
