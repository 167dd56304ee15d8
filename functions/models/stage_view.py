"""The trainable end of a cut backbone seen as the study CNN's blocks.

Domain adaptation (:mod:`functions.train.adaptation`) was written against the study CNN's
interface: ``blocks``, ``features(x, start, stop)``, ``head(h)`` and ``forward_from(h, start)``.
A backbone cut at stage k trains only the stages after k; their input, the output of the frozen
first k stages, is computed once.  This view presents those stages, then the pooling, as blocks
and the network's classifier as the head, so that the same adaptation code runs on an ImageNet
network: features aligned after the last block are the pooled vector the classifier reads
(the bottleneck where DANN and CORAL align), and AdaBN re-estimates the BatchNorm statistics of
the stages that trained on the source; and so that the clustering of each layer's activations
reads a backbone's stages as it reads the study CNN's blocks.  The view shares its modules with
the network it shows.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import DataError
from .backbones import pool


class Pool(nn.Module):
    """A stage's output as one vector per image (:func:`~functions.models.backbones.pool`)."""

    def __init__(self, pooling: str):
        super().__init__()
        self.pooling = pooling

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return pool(h, self.pooling)


class StageView(nn.Module):
    """Stages of a backbone network as ``blocks`` (named ``block_names``) and its classifier as
    ``head``; inputs are the output of the stages before the first one shown.  With
    ``pool_block`` the pooling is a last block (what adaptation aligns), else the head pools."""

    def __init__(self, stages: dict, pooling: str, classifier: nn.Module, pool_block: bool = True):
        super().__init__()
        self.block_names = [*stages, *(["pool"] if pool_block else [])]
        self.blocks = nn.ModuleList([*stages.values(), *([Pool(pooling)] if pool_block else [])])
        self.classifier, self.pool = classifier, None if pool_block else Pool(pooling)

    @classmethod
    def of(cls, network, start: int, pool_block: bool = True) -> "StageView":
        """The view of ``network`` (a backbone with ``pooling`` and ``head``: the fine-tuned
        network) from stage ``start`` on."""
        stages = dict(list(network.backbone.stages.items())[start:])
        return cls(stages, network.pooling, network.head, pool_block)

    @classmethod
    def pretrained(cls, backbone) -> "StageView":
        """A pretrained backbone whole, with the classifier it was trained with (timm's
        ``get_classifier``: ImageNet's 1,000 classes), its head pooling the last stage."""
        network = getattr(backbone, "network", None)
        if network is None or not hasattr(network, "get_classifier"):
            raise DataError(f"{backbone.name} keeps no pretrained classifier to show as the head")
        return cls(dict(backbone.stages.items()), "avg", network.get_classifier(), pool_block=False)

    def features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(h if self.pool is None else self.pool(h))

    def forward_from(self, h: torch.Tensor, start: int) -> torch.Tensor:
        return self.head(self.features(h, start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)
