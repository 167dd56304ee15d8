"""Input adaptation: images of any size and colour as the input a network's weights expect.

A cross-dataset study feeds target images to a network built for the source's images (the 8 x 8
digits to a 28 x 28 MNIST network, grey images to RGB networks), the service feeds uploads of any
size, an ImageNet classifier takes photos.  One function does all of it: grey becomes RGB by
repeating the channel, RGB becomes grey by its luminance (RGBA may lose its alpha); the image is
resized (squashed to the square, or its shorter side scaled and the centre cropped) and
normalised.  What differs between callers (interpolation, antialiasing, cropping, clipping) are
arguments, so each keeps exactly the arithmetic it was measured with.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import DataError
from .catalog import check_adaptable, spec

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B
ANTIALIAS = ("shrink", "always", "never")


def adapt_images(x: torch.Tensor, channels: int, size: int | tuple[int, int], mean, std, *,
                 interpolation: str = "bicubic", antialias: str = "shrink", crop_pct: float | None = None,
                 clamp: bool = True, drop_alpha: bool = False) -> torch.Tensor:
    """Images ``(N, C, H, W)`` with values in [0, 1] as ``(N, channels, *size)`` (an int: a square), normalised
    with ``mean``/``std`` (numbers or tensors broadcasting over ``(1, channels, 1, 1)``).

    ``crop_pct`` None: resized to the square when the size differs; a fraction: the shorter side
    resized to ``size / crop_pct`` and the centre ``size`` x ``size`` kept.  ``antialias``:
    ``shrink`` (only when shrinking, so that thin strokes are averaged rather than skipped),
    ``always`` or ``never``.  ``clamp`` clips the resized pixels to [0, 1] (bicubic overshoots).
    ``drop_alpha``: RGBA images lose their alpha channel (it carries no class information)."""
    if antialias not in ANTIALIAS:
        raise DataError(f"antialias={antialias!r} is unknown; choose one of {list(ANTIALIAS)}")
    if drop_alpha and x.ndim == 4 and x.shape[1] == 4 and channels != 4:
        x = x[:, :3]
    if x.ndim != 4 or x.shape[1] not in {1, 3, channels}:
        raise DataError(f"the network takes images (N, C, H, W) with 1 (grey) or 3 (RGB) channels, or {channels}; "
                        f"got shape {tuple(x.shape)}: convert them to grey or RGB first")
    want = (size, size) if isinstance(size, int) else tuple(size)
    check_adaptable(tuple(x.shape[1:]), (channels, *want), "images")
    if x.shape[1] != channels:
        x = x.expand(-1, 3, -1, -1) if channels == 3 else \
            (x * torch.tensor(LUMINANCE, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    height, width = x.shape[-2:]
    if crop_pct is None:
        resized = want if (height, width) != want else None
    else:
        if want[0] != want[1]:
            raise DataError(f"a centre crop is square: give one size, not {want}")
        side = want[0]
        scale = side / crop_pct / min(height, width)
        resized = (max(side, round(height * scale)), max(side, round(width * scale)))
    if resized is not None:
        shrink = resized[0] < height or resized[1] < width
        x = F.interpolate(x, size=resized, mode=interpolation,
                          align_corners=False if interpolation in ("bilinear", "bicubic") else None,
                          antialias=antialias == "always" or (antialias == "shrink" and shrink))
    if clamp:
        x = x.clamp(0.0, 1.0)
    if crop_pct is not None:
        top, left = (x.shape[-2] - want[0]) // 2, (x.shape[-1] - want[1]) // 2
        x = x[..., top:top + want[0], left:left + want[1]]
    return ((x - mean) / std).contiguous()


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
