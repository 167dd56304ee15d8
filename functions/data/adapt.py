"""Input adaptation between domains whose images differ in size or colour.

A cross-dataset study feeds target images to a network built for the source's images: the 8 x 8
digits go to a 28 x 28 MNIST network, MNIST to an 8 x 8 one, grey images to RGB networks.  Images
are resized in pixel space (bilinear; antialiased when shrinking, so that thin strokes are
averaged rather than skipped) and grey becomes RGB by repeating the channel, RGB becomes grey by
its luminance.  Normalisation statistics follow the channels the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import DataError
from .catalog import check_adaptable, spec

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B


def adapt_pixels(x: torch.Tensor, want: tuple, mode: str = "bilinear") -> torch.Tensor:
    """Images ``(N, C, H, W)`` with values in [0, 1] as ``want = (C', H', W')``, resized by
    ``mode`` (``bilinear``; the ImageNet backbones' preprocessing uses ``bicubic``)."""
    check_adaptable(tuple(x.shape[1:]), tuple(want))
    channels, height, width = want
    if x.shape[1] != channels:
        x = x.expand(-1, 3, -1, -1) if channels == 3 else \
            (x * torch.tensor(LUMINANCE, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(x.shape[2:]) != (height, width):
        shrink = height < x.shape[2] or width < x.shape[3]
        x = F.interpolate(x, size=(height, width), mode=mode, align_corners=False, antialias=shrink)
    return x.clamp(0.0, 1.0).contiguous()


def channel_stats(dataset: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's normalisation mean and std as ``(1, channels, 1, 1)`` tensors for images
    adapted to ``channels`` (grey repeated, or RGB's luminance)."""
    stats = spec(dataset)
    mean, std = torch.tensor(stats.mean), torch.tensor(stats.std)
    if len(mean) != channels:
        check_adaptable((len(mean), 1, 1), (channels, 1, 1), f"{dataset} images")
        weights = torch.tensor(LUMINANCE)
        mean, std = (mean.expand(3), std.expand(3)) if channels == 3 else \
            ((weights * mean).sum(0, keepdim=True), (weights * std).sum(0, keepdim=True))
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
