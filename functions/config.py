"""One config object per experiment, the study's class setups and the named profiles.

The config's fields are exactly the keys of a results file's parameters dict (element 0), named
as the upstream study named them, so that files written by either load with one reader.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import DataError, check_percentage, validate_classes

MODES = {
    "F": {"freeze": True, "reinit": False, "truncate": False},
    "FR": {"freeze": True, "reinit": True, "truncate": False},
    "FT": {"freeze": True, "reinit": False, "truncate": True},
}


@dataclass(frozen=True)
class Setup:
    """A study folder's source and target task."""

    folder: str
    name: str
    source_dataset: str
    pre_train_classes: tuple
    target_dataset: str
    fine_tune_classes: tuple


SETUPS = {
    (s.folder, s.name): s
    for s in (
        Setup("MNIST", "regular", "MNIST", (0, 1, 2, 3, 4), "MNIST", (5, 6, 7, 8, 9)),
        Setup("FashionMNIST", "regular", "FashionMNIST", (0, 1, 2, 3, 4, 6, 8), "FashionMNIST", (5, 7, 9)),
        Setup("FashionMNIST", "random", "FashionMNIST", (0, 1, 2, 4, 6, 7, 9), "FashionMNIST", (3, 5, 8)),
        Setup("CIFAR", "regular", "CIFAR10", (0, 1, 8, 9), "CIFAR10", (2, 3, 4, 5, 6, 7)),
        Setup("CIFAR", "reverse", "CIFAR10", (2, 3, 4, 5, 6, 7), "CIFAR10", (0, 1, 8, 9)),
        Setup("CIFAR", "random", "CIFAR10", (5, 6, 7, 8, 9), "CIFAR10", (0, 1, 2, 3)),
        Setup("MNIST_to_FashionMNIST", "cross", "MNIST", tuple(range(10)), "FashionMNIST", tuple(range(10))),
        Setup("FashionMNIST_to_MNIST", "cross", "FashionMNIST", tuple(range(10)), "MNIST", tuple(range(10))),
    )
}
FOLDERS = sorted({folder for folder, _ in SETUPS})


def get_setup(folder: str, name: str) -> Setup:
    if folder not in FOLDERS:
        raise DataError(f"unknown dataset folder {folder!r}; choose one of {FOLDERS}")
    if (folder, name) not in SETUPS:
        names = sorted(n for f, n in SETUPS if f == folder)
        raise DataError(f"unknown setup {name!r} for {folder}; choose one of {names}")
    return SETUPS[(folder, name)]


@dataclass(frozen=True)
class Config:
    """Everything that decides the outcome of one training run (the results file's element 0)."""

    source_dataset: str = "MNIST"
    target_dataset: str = "MNIST"
    pre_train_classes: tuple = (0, 1, 2, 3, 4)
    fine_tune_classes: tuple = (5, 6, 7, 8, 9)
    depth: int = 6
    num_channels: int = 64
    kernel_size: int = 3
    activation_function: str = "ReLU"
    use_pooling: bool = True
    pooling_every_n_layers: int = 2
    pooling_stride: int = 2
    two_linear_layers: bool = False
    hidden_dim_lin: int = 128
    lr_pretrain: float = 0.001
    lr_fine_tune: float = 0.001
    num_train: int = 40
    num_train_pretrain: int = 40
    early_stop_patience: int = 6
    batch_size: int = 4096
    val_split: float = 0.1
    generate_dataset_seed: int = 42
    freeze: bool = True
    reinit: bool = True
    truncate: bool = False
    reinit_both_dense: bool = True

    def __post_init__(self):
        validate_classes(self.source_dataset, self.pre_train_classes, "pre_train_classes")
        validate_classes(self.target_dataset, self.fine_tune_classes, "fine_tune_classes")
        if self.source_dataset == self.target_dataset:
            overlap = sorted(set(self.pre_train_classes) & set(self.fine_tune_classes))
            if overlap:
                raise DataError(f"pre_train_classes and fine_tune_classes share {overlap} within "
                                f"{self.source_dataset}; a transfer study needs disjoint class sets")
        if self.reinit and self.truncate:
            raise DataError("reinit and truncate are both set; choose one mode: F, FR or FT")
        for key in ("depth", "num_channels", "kernel_size", "num_train", "batch_size", "pooling_every_n_layers"):
            if getattr(self, key) < 1:
                raise DataError(f"{key}={getattr(self, key)} must be at least 1")

    @property
    def mode(self) -> str:
        return "FT" if self.truncate else "FR" if self.reinit else "F"

    def with_mode(self, mode: str) -> "Config":
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}; choose one of {sorted(MODES)}")
        return dataclasses.replace(self, **MODES[mode])

    def replace(self, **changes) -> "Config":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise DataError(f"unknown parameter(s) {unknown}; known: {sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})

    def params(self) -> dict:
        """JSON-safe parameters dict: classes as lists, activation as its name."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def check_cut(self, cut_point: int) -> int:
        if not (isinstance(cut_point, int) and 0 <= cut_point <= self.depth):
            raise DataError(f"cut point {cut_point!r} is outside 0..{self.depth} (depth {self.depth}): "
                            f"cut k keeps conv layers 0..k-1 of the pretrained model")
        return cut_point


SOURCE_KEYS = ("source_dataset", "pre_train_classes", "depth", "num_channels", "kernel_size",
               "activation_function", "use_pooling", "pooling_every_n_layers", "pooling_stride",
               "two_linear_layers", "hidden_dim_lin", "lr_pretrain", "num_train_pretrain",
               "early_stop_patience", "batch_size", "val_split", "generate_dataset_seed")
MODE_KEYS = ("freeze", "reinit", "truncate", "reinit_both_dense")


def baseline_params(cfg: Config) -> dict:
    """A baseline trains from scratch: the source model and the mode do not affect it."""
    skip = {"source_dataset", "pre_train_classes", "lr_pretrain", "num_train_pretrain", *MODE_KEYS}
    return {k: v for k, v in cfg.params().items() if k not in skip}


def source_params(cfg: Config) -> dict:
    return {k: cfg.params()[k] for k in SOURCE_KEYS}


@dataclass(frozen=True)
class Grid:
    """Which runs a sweep makes: percentages x repeats x cut points (not part of the parameters)."""

    percentages: tuple
    cut_points: tuple
    repeats: dict = field(default_factory=dict)  # percentage -> number of repeats

    def __post_init__(self):
        for p in self.percentages:
            check_percentage(p)

    def repeats_for(self, percentage: float) -> int:
        return self.repeats[percentage]


def paper_repeats(percentage: float) -> int:
    """The upstream study's repeats: 25 for <= 1%, 20 below 50%, 5 otherwise."""
    return 25 if percentage <= 0.01 else 20 if percentage < 0.5 else 5


PAPER_PERCENTAGES = (0.001, 0.01, 0.1, 0.5, 1.0)


def profile(name: str, setup: Setup) -> tuple[Config, Grid]:
    """``quick``: a 2-core CPU finishes a folder in minutes; ``paper``: the upstream grid."""
    cifar = setup.source_dataset == "CIFAR10"
    base = Config(source_dataset=setup.source_dataset, target_dataset=setup.target_dataset,
                  pre_train_classes=setup.pre_train_classes, fine_tune_classes=setup.fine_tune_classes)
    if cifar:
        base = base.replace(batch_size=64, num_train=10, early_stop_patience=5, num_train_pretrain=10)
    depth_cuts = tuple(range(base.depth + 1))
    if name == "paper":
        return base, Grid(PAPER_PERCENTAGES, depth_cuts, {p: paper_repeats(p) for p in PAPER_PERCENTAGES})
    if name == "quick":
        # a narrower net (16 channels) and small batches: same protocol, a 2-core CPU runs it in minutes
        quick = base.replace(num_channels=16, batch_size=64, num_train=10, early_stop_patience=3,
                             num_train_pretrain=5)
        percentages = (0.01, 0.05)
        return quick, Grid(percentages, depth_cuts, {p: 2 for p in percentages})
    raise DataError(f"unknown profile {name!r}; choose 'quick' or 'paper'")
