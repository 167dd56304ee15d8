"""Frozen feature extractors: a network plus the input it expects, giving one pooled vector per image.

Images of any size and channel count in 0..1 are adapted to the network (grey <-> RGB, resize,
normalisation as its weights were trained), so the same extractor serves the study's grey
digits, the HTTP service's uploads and ImageNet networks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import forward_chunk
from ..core.errors import DataError
from ..data.catalog import spec
from .files import read_torch_file
from .study_cnn import StudyCNN

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION_ARCHS = ("mobilenet_v2", "resnet50")


def state_sha256(module: nn.Module) -> str:
    """Identity of a network's weights: the same parameters give the same hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


class _StudyPrefix(nn.Module):
    """The first ``cut`` conv blocks of a study CNN."""

    def __init__(self, model: StudyCNN, cut: int):
        super().__init__()
        self.model, self.cut = model, cut

    def forward(self, x):
        return self.model.features(x, 0, self.cut)


class Extractor:
    """A frozen network and the input it expects: images in 0..1 of any size and channel count
    are converted to ``in_shape`` (grey <-> RGB, bilinear resize with antialiasing), normalised
    with ``mean``/``std``, and the body's output is global-average pooled into a feature vector."""

    def __init__(self, kind: str, body: nn.Module, in_shape: tuple, mean: tuple, std: tuple, cut: int | None = None):
        self.kind, self.body, self.in_shape, self.cut = kind, body.eval().requires_grad_(False), tuple(in_shape), cut
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.weights_sha256 = state_sha256(body)
        with torch.inference_mode():
            self.dim = int(self._pooled(torch.zeros(1, *self.in_shape)).shape[1])

    def identity(self) -> dict:
        return {"kind": self.kind, "cut": self.cut, "in_shape": list(self.in_shape),
                "weights_sha256": self.weights_sha256}

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) pixels in 0..1 -> the normalised input of the network."""
        channels, height, width = self.in_shape
        if images.shape[1] == 4:  # RGBA: the alpha channel carries no class information
            images = images[:, :3]
        if images.shape[1] != channels:
            if channels == 1:  # ITU-R BT.601 luma
                images = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                images = images.expand(-1, channels, -1, -1)
        if images.shape[2:] != (height, width):
            images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x.contiguous(memory_format=torch.channels_last))
        return out.mean(dim=(2, 3)) if out.ndim == 4 else out.flatten(1)

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


def study_extractor(model: StudyCNN, source_dataset: str, cut: int | None = None) -> Extractor:
    """The pooled activation of ``model.features(x, 0, cut)`` (default: after every conv block)."""
    depth = len(model.blocks)
    cut = depth if cut is None else cut
    if not (isinstance(cut, int) and 0 <= cut <= depth):
        raise DataError(f"cut {cut!r} is outside 0..{depth}: the source model has {depth} conv blocks")
    stats = spec(source_dataset)
    return Extractor("study", _StudyPrefix(model, cut), model.in_shape, stats.mean, stats.std, cut)


def torchvision_model(arch: str, weights_path) -> nn.Module:
    """torchvision's ``arch`` (built with ``weights=None``) holding the state dict saved in
    ``weights_path``, e.g. the ImageNet weights file torchvision itself downloads."""
    import torchvision

    if arch not in TORCHVISION_ARCHS:
        raise DataError(f"unknown architecture {arch!r}; choose one of {list(TORCHVISION_ARCHS)}")
    if weights_path is None or not Path(weights_path).is_file():
        raise DataError(f"{arch} needs a weights file (a state_dict saved with torch.save, e.g. torchvision's "
                        f"ImageNet file); {weights_path} does not exist")
    model = getattr(torchvision.models, arch)(weights=None)
    state = read_torch_file(weights_path, f"a state-dict file of {arch}")
    try:
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as err:  # other tensors: missing or unexpected keys, other shapes
        raise DataError(f"{weights_path} is not a state-dict file of {arch}: its tensors do not fit "
                        f"({type(err).__name__}: {str(err)[:300]})") from err
    return model


def torchvision_extractor(arch: str, weights_path: Path, input_size: int = 224) -> Extractor:
    """:func:`torchvision_model`'s convolutional body, pooled, at ``input_size`` pixels."""
    model = torchvision_model(arch, weights_path)
    body = model.features if arch == "mobilenet_v2" else nn.Sequential(*list(model.children())[:-2])
    return Extractor(arch, body, (3, input_size, input_size), IMAGENET_MEAN, IMAGENET_STD)
