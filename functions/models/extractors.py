"""The frozen extractor of the HTTP service and the sample-efficiency benchmark: a view of a
:class:`~functions.models.backbones.Backbone` giving one pooled vector per image.

It runs the first ``cut`` stages and averages the output over space.  Images of any size and
channel count in 0..1 are adapted as this service has always fed its networks: RGBA loses its
alpha, bilinear resizing with antialiasing, no clipping, then the backbone's normalisation.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.device import forward_chunk
from ..core.errors import DataError
from .backbones import Backbone, pool, state_sha256



class Extractor:
    """``backbone``'s first ``cut`` stages (default all), pooled by global average."""

    def __init__(self, backbone: Backbone, cut: int | None = None):
        depth = len(backbone.layer_names)
        if cut is not None and not (isinstance(cut, int) and 0 <= cut <= depth):
            raise DataError(f"cut {cut!r} is outside 0..{depth}: {backbone.name} has {depth} stages")
        self.backbone, self.kind = backbone.requires_grad_(False), backbone.name
        self.cut = depth if cut is None else cut
        self.in_shape = (backbone.channels, backbone.input_size, backbone.input_size)
        # the whole source network, its keys under "model." as the service has always hashed them
        self.weights_sha256 = state_sha256(backbone.network, prefix="model.")
        with torch.inference_mode():
            self.dim = int(self._pooled(torch.zeros(1, *self.in_shape)).shape[1])

    def identity(self) -> dict:
        return {"kind": self.kind, "cut": self.cut, "in_shape": list(self.in_shape),
                "weights_sha256": self.weights_sha256}

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) pixels in 0..1 -> the normalised input of the network."""
        return self.backbone.adapt(images, interpolation="bilinear", antialias="always", clamp=False, drop_alpha=True)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return pool(self.backbone.run(x.contiguous(memory_format=torch.channels_last), 0, self.cut), "avg")

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Features (N, dim) float32 of images (N, C, H, W) in 0..1."""
        parts, chunk = [], forward_chunk(images.device)
        with torch.inference_mode():
            for i in range(0, len(images), chunk):
                parts.append(self._pooled(self.adapt(images[i:i + chunk].float())))
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.dim), dtype=np.float32)

    def of_pixels(self, images: list[np.ndarray]) -> np.ndarray:
        """Features of images given one by one as (H, W, C) arrays of 0..255, each of its own size."""
        with torch.inference_mode():
            adapted = [self.adapt(torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255.0) for image in images]
            chunk = forward_chunk("cpu")  # the arrays come from numpy, on the CPU
            return torch.cat([self._pooled(torch.cat(adapted[i:i + chunk]))
                              for i in range(0, len(adapted), chunk)]).numpy()
