"""The study's cut point on any pretrained backbone: which stages keep their weights, and what
becomes of the rest.

Cut point k keeps the first k stages with their pretrained weights; the study then freezes them
(their BatchNorm statistics too, as the Keras transfer-learning guide advises: a small target set
would otherwise overwrite statistics gathered on ImageNet) and treats the stages after them in
one of three ways (:data:`CUT_MODES`):

- ``F``: they keep their pretrained weights and train;
- ``FR``: they are re-initialised (the architecture's own initialisation) and train;
- ``FT``: they are removed, and the new head sits on stage k's pooled output.

The baseline is the same network with every stage re-initialised (:func:`random_backbone`).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.errors import DataError
from .backbones import Backbone

CUT_MODES = ("F", "FR", "FT")
INPUT = "input"  # the stage name of cut point 0: nothing is kept but the input


def stage_at(backbone: Backbone, cut_point: int) -> str:
    """The name of the last stage a cut point keeps (``input`` for cut point 0)."""
    return INPUT if cut_point == 0 else backbone.layer_names[cut_point - 1]


def check_cut(backbone: Backbone, cut_point: int, mode: str) -> int:
    """``cut_point`` as an int in the range ``mode`` allows on ``backbone``, or one line saying why not."""
    if mode not in CUT_MODES:
        raise DataError(f"unknown cut mode {mode!r}; choose one of {list(CUT_MODES)}")
    depth = len(backbone.layer_names)
    lowest = 1 if mode == "FT" else 0  # FT at 0 would leave no stage for the head to sit on
    if isinstance(cut_point, bool) or not isinstance(cut_point, int) or not lowest <= cut_point <= depth:
        raise DataError(f"cut point {cut_point!r} is outside {lowest}..{depth} for mode {mode} on {backbone.name} "
                        f"(stages {backbone.layer_names})")
    return cut_point


def reinitialise(modules, backbone: Backbone, seed: int) -> None:
    """Draw new weights for ``modules`` with ``seed``: timm's own initialisation for its
    EfficientNets (the one their ImageNet training started from), PyTorch's default
    (``reset_parameters``) for other architectures."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if backbone.record.family == "EfficientNet-Lite" or backbone.record.architecture.startswith(
                ("efficientnet", "tf_efficientnet")):
            from timm.models._efficientnet_builder import efficientnet_init_weights
            for module in modules:
                efficientnet_init_weights(module)
        else:
            for module in modules:
                for part in module.modules():
                    if hasattr(part, "reset_parameters"):
                        part.reset_parameters()
        for module in modules:  # fresh BatchNorm statistics as well as fresh weights
            for part in module.modules():
                if isinstance(part, nn.modules.batchnorm._BatchNorm):
                    part.reset_running_stats()


def _rebuilt(backbone: Backbone, stages: dict) -> Backbone:
    return Backbone(backbone.record, stages, backbone.input_size)


def cut_backbone(backbone: Backbone, cut_point: int, mode: str, seed: int) -> Backbone:
    """A copy of ``backbone`` as ``mode`` treats it at ``cut_point`` (the stages after the cut
    re-initialised with ``seed`` in FR, removed in FT); the freezing of the first ``cut_point``
    stages is the fine-tuned network's (:class:`~functions.train.finetune.FineTuneNet`)."""
    check_cut(backbone, cut_point, mode)
    names = backbone.layer_names
    kept = names[:cut_point] if mode == "FT" else names
    stages = {name: copy.deepcopy(backbone.stages[name]) for name in kept}
    if mode == "FR":
        reinitialise([stages[name] for name in names[cut_point:]], backbone, seed)
    return _rebuilt(backbone, stages)


def random_backbone(backbone: Backbone, seed: int) -> Backbone:
    """The baseline: the same architecture with every stage drawn anew (FR at cut point 0)."""
    return cut_backbone(backbone, 0, "FR", seed)
