"""Pretrained networks as a list of named stages, for feature extraction and fine-tuning alike.

Feature extraction pools the output of chosen stages; fine-tuning freezes the first k stages and
trains the rest with a new head.  Both need the same picture of a network (an ordered list of
stages, each with a name and an output width) and the same input adaptation, so every backbone
(the ImageNet EfficientNet-Lite networks, torchvision's ResNet-50 / MobileNetV2 from a weights
file, the study's own source CNNs) is wrapped into one :class:`Backbone`.

Inputs are images in [0, 1], (N, C, H, W), of any size, grey or RGB: grey becomes three
channels (or RGB grey, for one-channel networks), images are resized bicubically to the
backbone's input size and normalised as its weights were trained.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import DataError
from ..data.adapt import adapt_pixels
from .extractors import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_ARCHS, state_sha256, torchvision_model
from .imagenet import BACKBONES as IMAGENET_BACKBONES
from .imagenet import MEAN as LITE_MEAN
from .imagenet import STD as LITE_STD
from .imagenet import load_backbone
from .study_cnn import StudyCNN

# ten-crop: images are resized to this multiple of the input size, then cropped (224 <- 256)
CROP_RESIZE = 256 / 224
STUDY = "study"
NAMES = (*IMAGENET_BACKBONES, *TORCHVISION_ARCHS, STUDY)
POOLINGS = ("avg", "max", "flatten")


def pool(h: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    """A stage's output as one vector per image: global average or max over space, or flattened."""
    if h.ndim != 4 or pooling == "flatten":
        return h.flatten(1)
    return h.mean(dim=(2, 3)) if pooling == "avg" else h.amax(dim=(2, 3))


class Backbone(nn.Module):
    """Named stages run in order; ``channels`` input channels at ``input_size`` pixels, normalised
    with ``mean``/``std``; ``native_size`` is the size its weights were trained at."""

    def __init__(self, name: str, stages: dict[str, nn.Module], channels: int, input_size: int, mean, std,
                 native_size: int):
        super().__init__()
        self.name, self.channels, self.input_size, self.native_size = name, channels, int(input_size), native_size
        self.stages = nn.ModuleDict(stages)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1).clone())
        self.eval()
        with torch.inference_mode():
            outputs = self.pooled(torch.zeros(1, channels, self.input_size, self.input_size), self.layer_names)
        self.widths = {name: int(out.shape[1]) for name, out in zip(self.layer_names, outputs)}

    @property
    def layer_names(self) -> list[str]:
        return list(self.stages)

    def check_layers(self, layers) -> list[str]:
        """``layers`` in network order; unknown names refused with the names there are."""
        layers = list(layers)
        unknown = [name for name in layers if name not in self.stages]
        if unknown or not layers:
            raise DataError(f"{self.name} has no layer(s) {unknown or '(none given)'}; its layers are "
                            f"{self.layer_names}")
        return [name for name in self.layer_names if name in layers]

    def identity(self) -> dict:
        """What decides the features: weights, input size and normalisation (the weights' hash is
        computed once: it reads every tensor)."""
        if not hasattr(self, "_weights_sha256"):
            self._weights_sha256 = state_sha256(self.stages)
        return {"backbone": self.name, "weights_sha256": self._weights_sha256, "input_size": self.input_size,
                "channels": self.channels}

    # ----------------------------------------------------------------- input

    def adapt(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Images in [0, 1] (N, C, H, W) as this network's input at ``size`` (default: its input
        size), channels-last."""
        size = self.input_size if size is None else size
        if images.ndim != 4 or images.shape[1] not in {1, 3, self.channels}:
            raise DataError(f"{self.name} takes images (N, C, H, W) with 1 (grey) or 3 (RGB) channels, or "
                            f"{self.channels}; got shape {tuple(images.shape)}: convert them to grey or RGB first")
        images = adapt_pixels(images, (self.channels, size, size), mode="bicubic")
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def crops(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Ten-crop inputs: images resized to ``CROP_RESIZE`` x the input size, then the four corners,
        the centre, and the five mirrored, each (N, C, size, size); computed on the fly."""
        size = self.input_size
        big = self.adapt(images, round(size * CROP_RESIZE))
        edge = big.shape[-1] - size
        corners = [(0, 0), (0, edge), (edge, 0), (edge, edge), (edge // 2, edge // 2)]
        views = [big[..., top:top + size, left:left + size] for top, left in corners]
        return [v.contiguous(memory_format=torch.channels_last) for v in views + [v.flip(-1) for v in views]]

    # ----------------------------------------------------------------- forward

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Stages ``start`` to ``stop`` (exclusive) over an adapted input or a stage's output."""
        for stage in list(self.stages.values())[start:stop]:
            x = stage(x)
        return x

    def pooled(self, x: torch.Tensor, layers, pooling: str = "avg") -> list[torch.Tensor]:
        """The pooled output (see :func:`pool`) of each of ``layers`` for adapted input ``x``;
        stages after the last one asked for are not run."""
        wanted = set(layers)
        last = max(self.layer_names.index(name) for name in wanted)
        out = []
        for name, stage in list(self.stages.items())[:last + 1]:
            x = stage(x)
            if name in wanted:
                out.append(pool(x, pooling))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled output of the last stage."""
        return self.pooled(x, [self.layer_names[-1]])[0]


def _lite(name: str, weights, input_size: int | None) -> Backbone:
    net = load_backbone(name, weights)
    stages = {"stem": nn.Sequential(net.conv_stem, net.bn1)}
    stages.update({f"block{i + 1}": block for i, block in enumerate(net.blocks)})
    stages["head"] = nn.Sequential(net.conv_head, net.bn2)
    native = IMAGENET_BACKBONES[name].input_size
    return Backbone(name, stages, 3, input_size or native, LITE_MEAN, LITE_STD, native)


def _torchvision(arch: str, weights, input_size: int | None) -> Backbone:
    model = torchvision_model(arch, weights)
    if arch == "resnet50":
        stages = {"stem": nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
                  **{f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)}}
    else:
        stages = {f"features{i}": block for i, block in enumerate(model.features)}
    return Backbone(arch, stages, 3, input_size or 224, IMAGENET_MEAN, IMAGENET_STD, 224)


def study_backbone(model: StudyCNN, mean, std) -> Backbone:
    """A study source CNN's conv blocks, with its source dataset's normalisation; its input size
    is the one it was trained at."""
    channels, size, _ = model.in_shape
    stages = {f"block{i + 1}": block for i, block in enumerate(model.blocks)}
    return Backbone(STUDY, stages, channels, size, mean, std, size)


def load(name: str, weights=None, input_size: int | None = None) -> Backbone:
    """An ImageNet backbone by name (``weights``: another state-dict file; ``input_size``: pixels,
    default the native size).  Study CNNs come from :func:`study_backbone`."""
    if input_size is not None and not 8 <= input_size <= 1024:
        raise DataError(f"input size {input_size} is out of range: give 8..1024 pixels")
    if name in IMAGENET_BACKBONES:
        return _lite(name, weights, input_size)
    if name in TORCHVISION_ARCHS:
        return _torchvision(name, weights, input_size)
    raise DataError(f"unknown backbone {name!r}; choose one of {list(NAMES)}")
