"""Transfer learning in the terms of general libraries (Keras applications, timm, fastai), in one place.

``load_pretrained_model`` gives any network the project knows (the ImageNet backbones, the study
folders' source CNNs) as named layers; ``FeatureExtractor`` pools chosen layers into features,
cached on the project's feature cache; ``Finetuner`` trains a new head with layers frozen,
unfrozen or adapted.  The study's fine-tuning strategies are built on the same ``Finetuner``::

    model = load_pretrained_model("efficientnet_lite0", include_top=False, pooling="avg")
    features = FeatureExtractor(model, layers=["block6", "head"]).cache_features(images, data={...})
    tuner = Finetuner(model, num_classes=10, freeze_layers=["stem", "block1", "block2"])
    tuner.fit(train, val, callbacks=[EarlyStopping(patience=3), ModelCheckpoint()])
    tuner.evaluate(test)  # accuracy, mean per-class accuracy, top-5 accuracy, macro F1

Your own images: ``load_dataset("photos/")`` (a folder of class folders, or a CSV of
``path,label[,split][,domain]``) gives class names, counts and a fingerprint, and
``.task(size=224)`` the same task object (train/val/test splits) the built-in datasets give.

Layers are named as the model names its stages (``model.layer_names``); images are tensors in
[0, 1], (N, C, H, W), adapted to each network's input size, channels and normalisation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import FOLDERS, get_setup
from .core.errors import DataError
from .data.image_dataset import load_dataset
from .models.backbones import Backbone
from .models.registry import STUDY, create_backbone
from .runs.features import FeatureStore, extract
from .runs.pretrained import source_backbone
from .train.finetune import EarlyStopping, Finetuner, ModelCheckpoint

__all__ = ["EarlyStopping", "FeatureExtractor", "Finetuner", "ModelCheckpoint", "load_dataset", "load_pretrained_model"]

POOLING_CHOICES = ("avg", "max", None)


def load_pretrained_model(name: str, weights=None, include_top: bool = False, pooling: str | None = "avg",
                          input_size: int | None = None) -> nn.Module:
    """A pretrained network by name: a network of the registry
    (:func:`functions.models.registry.names`), any timm architecture with ``weights``, or a study
    folder (``MNIST`` or ``MNIST/regular``: a folder's setup, the quick profile's source CNN).

    ``include_top`` True: the whole classifier as trained (ImageNet's 1000 classes, or the source
    classes of a study CNN).  False: its layers as a :class:`~functions.models.backbones.Backbone`
    whose ``pooling`` (``avg``, ``max``, or None: flattened maps) a Finetuner's head uses.
    ``weights``: another weights file (a state dict, or a source model written by
    ``python -m functions pretrain``); default the offline ImageNet weights or the folder's
    committed quick-profile model.
    """
    if pooling not in POOLING_CHOICES:
        raise DataError(f"pooling={pooling!r} is unknown; choose one of {list(POOLING_CHOICES)}")
    folder, _, setup_name = name.partition("/")
    if folder in FOLDERS:
        setup = get_setup(folder, setup_name or None)
        backbone = create_backbone(STUDY, Path(weights)) if weights is not None else \
            source_backbone(setup, log=lambda _: None)
    else:
        backbone = create_backbone(name, weights, input_size)
    if include_top:
        return backbone.network
    backbone.pooling = "flatten" if pooling is None else pooling
    return backbone


class FeatureExtractor:
    """Features of chosen ``layers`` of a backbone: each layer's output pooled (``avg``, ``max``,
    or None: the maps, flattened), then ``flatten`` True: one (N, D) array of all layers side by
    side; False: a dict of arrays per layer ((N, C), or (N, C, H, W) for maps).  ``normalize``
    scales each image's features (or each layer's, unflattened) to unit L2 norm."""

    def __init__(self, model: Backbone, layers=None, pooling: str | None = "avg", flatten: bool = True,
                 normalize: bool = False):
        if not isinstance(model, Backbone):
            raise DataError("FeatureExtractor needs a model from load_pretrained_model(..., include_top=False)")
        if pooling not in POOLING_CHOICES:
            raise DataError(f"pooling={pooling!r} is unknown; choose one of {list(POOLING_CHOICES)}")
        self.model, self.pooling = model, "flatten" if pooling is None else pooling
        self.layers = model.check_layers(layers or [model.layer_names[-1]])
        self.flatten, self.normalize = flatten, normalize
        with torch.inference_mode():  # each layer's output shape, for unflattened features
            h = model.eval().adapt(torch.zeros(1, model.channels, model.input_size, model.input_size))
            self.shapes = {}
            for stage_name, stage in model.stages.items():
                h = stage(h)
                if stage_name in self.layers:
                    maps = tuple(h.shape[1:])
                    self.shapes[stage_name] = maps if pooling is None or len(maps) < 3 else maps[:1]

    def __call__(self, images: torch.Tensor):
        """Features of images in [0, 1], computed now (no cache)."""
        return self._shaped(extract(self.model, self.layers, images, pooling=self.pooling))

    def cache_features(self, images: torch.Tensor, data: dict, ids=None, cache_dir=None):
        """Features of ``images`` (rows ``ids``, default all) from the project's feature cache:
        ``data`` names the images (e.g. ``{"dataset": "MNIST", "split": "test"}``) so that the
        cache is shared with every other user of the same images; only missing rows are computed."""
        if not isinstance(data, dict) or not data:
            raise DataError("data must be a non-empty dict naming the images, e.g. {'dataset': 'MNIST', 'split': 'test'}")
        store = FeatureStore(self.model, self.layers, data, images, cache_dir=cache_dir, pooling=self.pooling)
        return self._shaped(store.get(np.arange(len(images)) if ids is None else ids))

    def _shaped(self, features: np.ndarray):
        if self.flatten:
            return _unit_rows(features) if self.normalize else features
        out, offset = {}, 0
        for name in self.layers:
            size = int(np.prod(self.shapes[name]))
            part = features[:, offset:offset + size]
            offset += size
            out[name] = (_unit_rows(part) if self.normalize else part).reshape(-1, *self.shapes[name])
        return out


def _unit_rows(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(features.dtype).tiny)
