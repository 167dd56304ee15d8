"""A pretrained network as a list of named stages: the one object every use of a network shares.

Feature extraction pools the output of chosen stages; fine-tuning freezes the first k stages and
trains the rest with a new head; the model zoo reads the last stage and the source head; the
service runs a prefix.  All need the same picture of a network (an ordered list of stages, each
with a name and an output width) and the input its weights expect, so every network the registry
creates (:func:`functions.models.registry.create_backbone`) is one :class:`Backbone`.

Inputs are images in [0, 1], (N, C, H, W), of any size, grey or RGB: they are adapted to the
network's record (channels, size, interpolation, mean and std) by
:func:`functions.data.adapt.adapt_images`.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.errors import DataError
from ..data.adapt import adapt_images

if TYPE_CHECKING:
    from .registry import PretrainedRecord

POOLINGS = ("avg", "max", "flatten")


def pool(h: torch.Tensor, pooling: str = "avg") -> torch.Tensor:
    """A stage's output as one vector per image: global average or max over space, or flattened."""
    if h.ndim != 4 or pooling == "flatten":
        return h.flatten(1)
    return h.mean(dim=(2, 3)) if pooling == "avg" else h.amax(dim=(2, 3))


def state_sha256(module: nn.Module, prefix: str = "") -> str:
    """Identity of a network's weights: the same parameters (named with ``prefix``) give the same hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict(prefix=prefix).items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


class Backbone(nn.Module):
    """Named stages run in order, taking the input ``record`` describes at ``input_size`` pixels
    (default the record's).  ``network`` is the whole pretrained network the stages come from, its
    source head included; it is kept beside the module, not inside it, so the backbone's parameters
    and state are the stages' alone."""

    def __init__(self, record: PretrainedRecord, stages: dict[str, nn.Module], input_size: int | None = None,
                 network: nn.Module | None = None):
        super().__init__()
        self.record, self.name, self.channels = record, record.name, record.channels
        self.input_size, self.native_size = int(input_size or record.input_size), record.native_size
        object.__setattr__(self, "network", network)
        self.stages = nn.ModuleDict(stages)
        for key in ("mean", "std"):
            value = torch.tensor(getattr(record, key), dtype=torch.float32)
            self.register_buffer(key, value.expand(self.channels).reshape(1, -1, 1, 1).clone())
        self.eval()
        with torch.inference_mode():
            outputs = self.pooled(torch.zeros(1, self.channels, self.input_size, self.input_size), self.layer_names)
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

    def adapt(self, images: torch.Tensor, size: int | None = None, *, interpolation: str | None = None,
              antialias: str = "shrink", crop_pct: float | None = None, clamp: bool = True,
              drop_alpha: bool = False) -> torch.Tensor:
        """Images in [0, 1] (N, C, H, W) as this network's input at ``size`` (default: its input
        size), channels-last; interpolation by default the record's, the other arguments as
        :func:`~functions.data.adapt.adapt_images` takes them."""
        x = adapt_images(images, self.channels, self.input_size if size is None else size, self.mean, self.std,
                         interpolation=interpolation or self.record.interpolation, antialias=antialias,
                         crop_pct=crop_pct, clamp=clamp, drop_alpha=drop_alpha)
        return x.contiguous(memory_format=torch.channels_last)

    def crops(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Ten-crop inputs: images resized to the input size / the record's crop fraction, then the
        four corners, the centre, and the five mirrored, each (N, C, size, size); computed on the fly."""
        size = self.input_size
        big = self.adapt(images, round(size / self.record.crop_pct))
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
