"""The trainable end of a cut backbone seen as the study CNN's blocks.

Domain adaptation (:mod:`functions.train.adaptation`) was written against the study CNN's
interface: ``blocks``, ``features(x, start, stop)``, ``head(h)`` and ``forward_from(h, start)``.
A backbone cut at stage k trains only the stages after k; their input, the output of the frozen
first k stages, is computed once.  This view presents those stages, then the pooling, as blocks
and the network's classifier as the head, so that the same adaptation code runs on an ImageNet
network: features aligned after the last block are the pooled vector the classifier reads
(the bottleneck where DANN and CORAL align), and AdaBN re-estimates the BatchNorm statistics of
the stages that trained on the source.  The view shares its modules with the network it shows.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import pool


class Pool(nn.Module):
    """A stage's output as one vector per image (:func:`~functions.models.backbones.pool`)."""

    def __init__(self, pooling: str):
        super().__init__()
        self.pooling = pooling

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return pool(h, self.pooling)


class StageView(nn.Module):
    """Stages ``start..`` of a fine-tuned backbone network and its pooling as ``blocks``, its
    classifier as ``head``; inputs are the output of its first ``start`` stages."""

    def __init__(self, stages, pooling: str, classifier: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList([*stages, Pool(pooling)])
        self.classifier = classifier

    @classmethod
    def of(cls, network, start: int) -> "StageView":
        """The view of ``network`` (a backbone with ``pooling`` and ``head``: the fine-tuned
        network) from stage ``start`` on."""
        return cls(list(network.backbone.stages.values())[start:], network.pooling, network.head)

    def features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(h)

    def forward_from(self, h: torch.Tensor, start: int) -> torch.Tensor:
        return self.head(self.features(h, start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)
