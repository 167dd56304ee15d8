"""Regularisers of fine-tuning that keep what pretraining learned: L2-SP, DELTA and BSS.

Each is a term added to the cross-entropy of a :class:`~functions.train.finetune.Finetuner` run
(the trainer's extra loss), written from its paper's formula:

* **L2-SP** (Li, Grandvalet & Davoine 2018): ``alpha / 2 * ||w - w0||^2`` over the reused
  weights that train (``w0``: their pretrained values) plus ``beta / 2 * ||w_head||^2`` on the new
  head, so fine-tuning starts from and stays near the pretrained point rather than the origin.
* **DELTA** (Li et al. 2019): ``alpha * sum_j W_j ||FM_j(w, x) - FM_j(w0, x)||^2`` over the
  channels ``j`` of the last stage's feature map (the map the head reads), against the pretrained
  network's map of the same image, plus the same ``beta`` term on the head.  ``W_j`` is the paper's
  supervised attention: the softmax over channels of how much the loss grows when channel ``j`` is
  removed, measured once before training with a linear classifier fitted on the pretrained
  features of the training images (the paper's classifier, fitted on the target task).
* **BSS** (Chen et al. 2019, Batch Spectral Shrinkage): ``eta * sum_{i<=k} sigma_{-i}^2``, the
  ``k`` smallest singular values of the batch's feature matrix (the head's input), whose
  directions carry what does not transfer.

The weight (``alpha``, ``eta``) is the mode's setting, chosen on validation like a learning rate;
``beta`` is the papers' 0.01 and ``k`` is BSS's 1.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from ..core.device import forward_chunk
from ..core.errors import DataError
from ..data.tasks import Split
from ..models.backbones import pool

REGULARISERS = ("l2sp", "delta", "bss")
HEAD_WEIGHT = 0.01  # beta of L2-SP and DELTA: the plain L2 on the new head
BSS_COMPONENTS = 1  # k of BSS: how many of the smallest singular values shrink


def head_penalty(head: list[torch.Tensor], beta: float = HEAD_WEIGHT) -> torch.Tensor:
    """``beta / 2 * sum ||h||^2``: plain L2 on the new head's weights, which have no pretrained value."""
    return beta / 2 * sum((h.square().sum() for h in head), torch.zeros(()))


def l2sp_penalty(weights: list[torch.Tensor], anchors: list[torch.Tensor], head: list[torch.Tensor], alpha: float,
                 beta: float = HEAD_WEIGHT) -> torch.Tensor:
    """``alpha / 2 * sum ||w - w0||^2 + beta / 2 * sum ||h||^2``."""
    if len(weights) != len(anchors):
        raise DataError(f"L2-SP pairs each reused weight with its pretrained value; got {len(weights)} weights "
                        f"and {len(anchors)} pretrained values")
    total = sum(((w - w0).square().sum() for w, w0 in zip(weights, anchors)), torch.zeros(()))
    return alpha / 2 * total + head_penalty(head, beta)


def delta_penalty(maps: torch.Tensor, reference: torch.Tensor, channel_weights: torch.Tensor) -> torch.Tensor:
    """``sum_j W_j ||FM_j - FM0_j||^2`` for feature maps ``(n, c, ...)``, averaged over the batch."""
    if maps.shape != reference.shape or channel_weights.shape != (maps.shape[1],):
        raise DataError(f"DELTA compares maps of one shape with one weight per channel; got maps {tuple(maps.shape)}, "
                        f"reference {tuple(reference.shape)}, weights {tuple(channel_weights.shape)}")
    per_channel = (maps - reference).square().flatten(2).sum(2)  # (n, c)
    return (per_channel * channel_weights).sum(1).mean()


def bss_penalty(features: torch.Tensor, components: int = BSS_COMPONENTS) -> torch.Tensor:
    """The sum of the squares of the ``components`` smallest singular values of ``(n, d)`` features."""
    if features.dim() != 2:
        raise DataError(f"BSS takes a (batch, features) matrix; got shape {tuple(features.shape)}")
    if not 1 <= components <= min(features.shape):
        raise DataError(f"BSS shrinks 1..{min(features.shape)} singular values of a {tuple(features.shape)} "
                        f"batch; got {components}")
    return torch.linalg.svdvals(features)[-components:].square().sum()


@torch.no_grad()
def delta_channel_weights(maps: torch.Tensor, labels: torch.Tensor, pooling: str) -> torch.Tensor:
    """DELTA's attention: ``softmax_j(L(without channel j) - L)`` for pretrained feature maps
    ``(n, c, ...)`` of the training images, where ``L`` is the cross-entropy of a logistic
    classifier fitted on their pooled (standardised) features."""
    def pooled(x: torch.Tensor) -> np.ndarray:
        return pool(x, pooling).double().numpy()

    features = pooled(maps)
    centre, scale = features.mean(0), features.std(0) + 1e-8
    if len(torch.unique(labels)) < 2:
        raise DataError("DELTA's channel attention fits a classifier, which needs training images of two classes")
    probe = LogisticRegression(max_iter=2000).fit((features - centre) / scale, labels.numpy())
    columns = probe.classes_.searchsorted(labels.numpy())

    def loss(x: np.ndarray) -> float:
        probabilities = probe.predict_proba((x - centre) / scale)
        return float(-np.log(np.clip(probabilities[np.arange(len(x)), columns], 1e-12, None)).mean())

    full = loss(features)
    increase = []
    for channel in range(maps.shape[1]):
        removed = maps.clone()
        removed[:, channel] = 0
        increase.append(loss(pooled(removed)) - full)
    return torch.softmax(torch.tensor(increase), 0).to(maps.dtype)


class Regulariser:
    """One run's regulariser of ``method`` for a :class:`~functions.train.finetune.FineTuneNet`
    whose inputs enter at stage ``start``: its :meth:`logits` stand in for the network's forward
    pass (keeping the last stage's map for the penalty), its :meth:`loss` is the trainer's extra
    loss.  Made before training: the pretrained weights, map and attention are the network's now."""

    def __init__(self, method: str, net: nn.Module, weight: float, start: int, train: Split | None = None):
        if method not in REGULARISERS:
            raise DataError(f"unknown regulariser {method!r}; choose one of {list(REGULARISERS)}")
        if not weight > 0:
            raise DataError(f"the {method} weight must be positive; got {weight}")
        self.method, self.net, self.weight, self.start = method, net, weight, start
        self.map: torch.Tensor | None = None
        self.reused = [p for p in net.backbone.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.reused]
        self.head = [p for p in net.head.parameters() if p.requires_grad]
        if method == "delta":
            if train is None:
                raise DataError("DELTA weighs channels by the training images' loss: give the training split")
            self.reference = copy.deepcopy(net.backbone).eval().requires_grad_(False)
            self.channel_weights = delta_channel_weights(self._reference_maps(train.x), train.y, net.pooling)

    @torch.no_grad()
    def _reference_maps(self, x: torch.Tensor) -> torch.Tensor:
        chunk = forward_chunk(x.device)
        return torch.cat([self.reference.run(x[i:i + chunk], self.start) for i in range(0, len(x), chunk)])

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        self.map = self.net.backbone.run(h, self.start)
        return self.net.head(pool(self.map, self.net.pooling))

    def loss(self, model, rows, inputs: torch.Tensor, logits, labels) -> torch.Tensor:
        """The penalty on the last batch (the trainer's ``extra_loss``)."""
        if self.method == "bss":
            return self.weight * bss_penalty(pool(self.map, self.net.pooling), min(BSS_COMPONENTS, len(inputs)))
        if self.method == "l2sp":
            return l2sp_penalty(self.reused, self.anchors, self.head, self.weight)
        return self.weight * delta_penalty(self.map, self._reference_maps(inputs), self.channel_weights) + \
            head_penalty(self.head)

    def release(self) -> None:
        """Drop the last batch's map once training ends."""
        self.map = None

