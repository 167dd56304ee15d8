"""The model zoo: ImageNet EfficientNet-Lite networks and study CNNs of several depths and widths
pretrained on MNIST, FashionMNIST and their class subsets, each with a metadata row, and their
features over the task bank's pools, computed once per (model, dataset).

A model's features are what a new linear head sees: the last stage's output averaged over space
(EfficientNet-Lite: 1,280 values), or, for a study CNN, averaged onto a 3 x 3 grid and flattened
(9 x width values: what the depth-6 networks' own heads read, and no more than that for the
shallow ones, whose last blocks are 14 x 14 or 28 x 28).  Beside them, the source head's class
probabilities on the same images (ImageNet's 1,000 classes, or the source classes), from the
network's own forward pass, which LEEP and NCE need.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, Setup
from ..core.device import configure_threads, forward_chunk
from ..core.errors import DataError
from ..data.task_bank import BANK_DATASETS, pool as task_pool
from ..models.backbones import Backbone, pool, state_sha256
from ..models.registry import create_backbone
from ..models.zoo_catalog import IMAGENET_TOP1, ZOO_FOLDER, ZooModel
from ..models.study_cnn import StudyCNN
from .cost import count_flops
from .features import FeatureStore
from .pretrained import load_pretrained, pretrained_info, pretrained_path, source_backbone

# ----------------------------------------------------------------------------- study CNNs

def source_setup(model: ZooModel) -> Setup:
    """Where a study CNN's source model lives: its study folder's setup, or the zoo folder.  The
    zoo's own models have no target task; the 8 x 8 digits stand in, as a setup needs one."""
    if model.home is not None:
        from ..config import get_setup
        return get_setup(*model.home)
    return Setup(ZOO_FOLDER, model.name, model.dataset, model.classes, "digits", tuple(range(10)))


def source_config(model: ZooModel) -> Config:
    """The quick profile's pretraining protocol (batch 64, at most 5 epochs, patience 3) at the
    model's depth and width."""
    setup = source_setup(model)
    return Config(source_dataset=setup.source_dataset, pre_train_classes=setup.pre_train_classes,
                  target_dataset=setup.target_dataset, fine_tune_classes=setup.fine_tune_classes,
                  depth=model.depth, num_channels=model.width, batch_size=64, num_train=10,
                  early_stop_patience=3, num_train_pretrain=5)


def _check_trained(model: ZooModel, train_if_missing: bool) -> None:
    setup, cfg = source_setup(model), source_config(model)
    if not train_if_missing and not pretrained_path(setup, cfg).exists():
        raise DataError(f"the zoo model {model.name} is not trained yet ({pretrained_path(setup, cfg)}); run "
                        f"`python -m functions zoo pretrain --models {model.name}` (or `make zoo`)")


def study_network(model: ZooModel, train_if_missing: bool = False, log=print) -> StudyCNN:
    _check_trained(model, train_if_missing)
    return load_pretrained(source_setup(model), source_config(model), log, train_if_missing=train_if_missing)


# ----------------------------------------------------------------------------- networks

STUDY_GRID = 3  # a study CNN's last block is averaged onto this many cells per side


@dataclass
class Network:
    """A zoo model ready to run: its backbone, and what becomes of its last stage's output ``h``:
    ``features(h)`` for a new head, ``source_logits(h)`` the pretrained head's."""

    model: ZooModel
    backbone: Backbone
    source_head: torch.nn.Module
    grid: int | None  # None: average over space

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return pool(h, "avg") if self.grid is None else F.adaptive_avg_pool2d(h, self.grid).flatten(1)

    def source_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.source_head(pool(h, "avg") if self.grid is None else h)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, source-class probabilities) of images in [0, 1]."""
        h = self.backbone.run(self.backbone.adapt(images))
        return self.features(h), self.source_logits(h).softmax(1)


def network(model: ZooModel, train_if_missing: bool = False, log=print) -> Network:
    if model.depth == 0:  # a network of the registry
        backbone = create_backbone(model.name)
        return Network(model, backbone, backbone.network.classifier, None)
    _check_trained(model, train_if_missing)
    backbone = source_backbone(source_setup(model), source_config(model), log, train_if_missing)
    return Network(model, backbone, _StudyHead(backbone.network), STUDY_GRID)


class _StudyHead(torch.nn.Module):
    """A study CNN's own head over its last block's output (flattened inside)."""

    def __init__(self, cnn: StudyCNN):
        super().__init__()
        self.cnn = cnn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.cnn.head(h)


def metadata(model: ZooModel, net: Network | None = None) -> dict:
    """The model's row of ``source_model_meta_data.csv``: parameters, forward FLOPs and weight
    memory at its input size, and its accuracy on its own pretraining task."""
    net = net or network(model)
    size = net.backbone.input_size
    probe = torch.zeros(1, net.backbone.channels, size, size)
    modules = (net.backbone.stages, net.source_head)  # a study CNN's head holds its blocks too: count once
    params = sum(p.numel() for p in {id(p): p for m in modules for p in m.parameters()}.values())
    buffers = sum(b.numel() * b.element_size() for b in {id(b): b for m in modules for b in m.buffers()}.values())
    width = net(probe)[0].shape[1]
    flops = count_flops(lambda: net(probe))
    if model.depth == 0:
        accuracy, source = IMAGENET_TOP1[model.name], "published ImageNet top-1"
    else:
        accuracy = pretrained_info(source_setup(model), source_config(model))["test_acc"]
        source = "test accuracy on the source classes"
    return {"model": model.name, "family": model.family, "architecture": model.name if model.depth == 0
            else f"study CNN depth {model.depth} width {model.width}", "depth": model.depth or None,
            "width": model.width or None, "input_size": size, "input_channels": net.backbone.channels,
            "params": params, "flops": flops, "memory_mb": round((params * 4 + buffers) / 2 ** 20, 3),
            "feature_dim": int(width),
            "pretrain_dataset": model.dataset, "pretrain_classes": len(model.classes),
            "pretrain_accuracy": round(float(accuracy), 4), "pretrain_accuracy_source": source}


# ----------------------------------------------------------------------------- features

@dataclass
class PoolFeatures:
    """A model's features and source-head probabilities over a dataset's pool."""

    train: np.ndarray
    test: np.ndarray
    train_probs: np.ndarray
    test_probs: np.ndarray
    seconds_per_image: float


@dataclass
class _NetworkOutputs:
    """A zoo network's features and source-head probabilities, for the feature store."""

    net: Network

    @cached_property
    def network(self) -> dict:  # the head's weights decide the probabilities
        return {**self.net.backbone.identity(), "source_head_sha256": state_sha256(self.net.source_head)}

    @property
    def layers(self) -> list:
        return [list(self.net.backbone.stages)[-1]]

    @property
    def pooling(self) -> str:
        return "avg" if self.net.grid is None else f"avg {self.net.grid}x{self.net.grid} grid"

    view = "image"

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        chunk = forward_chunk(images.device)
        parts = [self.net(images[i:i + chunk]) for i in range(0, len(images), chunk)]
        return {"features": np.concatenate([f.numpy() for f, _ in parts]),
                "probs": np.concatenate([p.numpy() for _, p in parts])}


def pool_features(net: Network, dataset, cache_dir: Path | None = None) -> PoolFeatures:
    """Features of a pool through ``net``, from the feature store (computed once, then read):
    ``dataset`` is a bank dataset's name or pool, or a user's :class:`~functions.data.task_bank.DatasetPool`
    (its images at the network's input size and channels)."""
    if isinstance(dataset, str) and dataset not in BANK_DATASETS:
        raise DataError(f"unknown task dataset {dataset!r}; choose one of {list(BANK_DATASETS)}")
    data = task_pool(dataset) if isinstance(dataset, str) else dataset
    outputs = _NetworkOutputs(net)
    size, channels = net.backbone.input_size, net.backbone.channels
    stores = [FeatureStore.of(outputs, data.key(split, size, channels),
                              lambda split=split: data.images(split, size, channels), cache_dir)
              for split in ("train", "test")]
    if any(store.count is None or len(store.ids) < store.count for store in stores):
        configure_threads()
    train, test = (store.split() for store in stores)
    seconds = sum(s.totals["seconds"] for s in stores) / max(sum(s.totals["images"] for s in stores), 1)
    return PoolFeatures(train["features"], test["features"], train["probs"], test["probs"], seconds)
