"""The study's CNN and cutting it at a conv layer: freeze (F), freeze + re-init (FR), truncate (FT).

The network is an explicit list of conv blocks plus a head, so that "the first k blocks" is a
slice, the frozen prefix can be run once and cached, and truncation is just a shorter list.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..core.errors import DataError


def activation(name: str) -> nn.Module:
    # upstream files store the class repr, e.g. "<class 'torch.nn.modules.activation.ReLU'>"
    short = name.rsplit(".", 1)[-1].strip("'>")
    if not hasattr(nn, short):
        raise DataError(f"unknown activation_function {name!r}; give a torch.nn name such as 'ReLU'")
    return getattr(nn, short)()


class ConvBlock(nn.Sequential):
    """conv [-> batch norm] -> activation [-> 2x2 average pooling]."""

    def __init__(self, in_channels: int, cfg: Config, pool: bool):
        layers = [nn.Conv2d(in_channels, cfg.num_channels, cfg.kernel_size, padding=cfg.kernel_size // 2),
                  *([nn.BatchNorm2d(cfg.num_channels)] if cfg.batch_norm else []),
                  activation(cfg.activation_function)]
        if pool:
            layers.append(nn.AvgPool2d(2, stride=cfg.pooling_stride))
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]


class StudyCNN(nn.Module):
    """``depth`` conv blocks (pooling after every ``pooling_every_n_layers``-th), then one or two
    linear layers.  ``blocks`` may be shorter than ``cfg.depth`` after truncation."""

    def __init__(self, cfg: Config, in_shape: tuple, num_classes: int, num_blocks: int | None = None):
        super().__init__()
        num_blocks = cfg.depth if num_blocks is None else num_blocks
        channels = [in_shape[0]] + [cfg.num_channels] * num_blocks
        self.blocks = nn.ModuleList(
            ConvBlock(channels[i], cfg, cfg.use_pooling and (i + 1) % cfg.pooling_every_n_layers == 0)
            for i in range(num_blocks)
        )
        with torch.no_grad():
            flat = self.eval().features(torch.zeros(1, *in_shape)).numel()  # eval: batch norm statistics stay
        self.train()
        self.hidden = nn.Sequential(nn.Linear(flat, cfg.hidden_dim_lin), activation(cfg.activation_function)) \
            if cfg.two_linear_layers else None
        self.fc = nn.Linear(cfg.hidden_dim_lin if cfg.two_linear_layers else flat, num_classes)
        self.in_shape = tuple(in_shape)

    def features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def head(self, h: torch.Tensor) -> torch.Tensor:
        h = h.flatten(1)
        if self.hidden is not None:
            h = self.hidden(h)
        return self.fc(h)

    def forward_from(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the activation entering block ``start`` (0: the image)."""
        return self.head(self.features(h, start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)


def build(cfg: Config, in_shape: tuple, num_classes: int, seed: int) -> StudyCNN:
    """A freshly initialised network; the seed makes the initial weights reproducible."""
    torch.manual_seed(seed)
    return StudyCNN(cfg, in_shape, num_classes).to(memory_format=torch.channels_last)


def cut(pretrained: StudyCNN, cut_point: int, cfg: Config, num_classes: int, seed: int) -> StudyCNN:
    """Transfer ``pretrained`` at ``cut_point`` in the mode given by ``cfg`` (freeze/reinit/truncate).

    Blocks ``< cut_point`` keep the pretrained weights (frozen if ``cfg.freeze``); blocks
    ``>= cut_point`` are re-initialised (FR), kept and fine-tuned (F) or removed (FT).  The
    output layer is always new; with two linear layers the hidden one is re-initialised
    too when ``reinit_both_dense`` is set, and otherwise kept and fine-tuned.
    """
    cfg.check_cut(cut_point)
    torch.manual_seed(seed)
    num_blocks = cut_point if cfg.truncate else cfg.depth
    model = StudyCNN(cfg, pretrained.in_shape, num_classes, num_blocks)
    # copy what is transferred; the fresh modules built above already hold the seeded re-inits
    keep = range(num_blocks) if not cfg.reinit else range(cut_point)
    for i in keep:
        model.blocks[i].load_state_dict(pretrained.blocks[i].state_dict())
    if model.hidden is not None and not cfg.reinit_both_dense and not cfg.truncate:
        model.hidden.load_state_dict(pretrained.hidden.state_dict())
    if cfg.freeze:
        for block in model.blocks[:cut_point]:
            block.requires_grad_(False)
    return model.to(memory_format=torch.channels_last)


def frozen_prefix_length(model: StudyCNN) -> int:
    """How many leading blocks have no trainable parameter: their output can be computed once."""
    n = 0
    for block in model.blocks:
        if any(p.requires_grad for p in block.parameters()):
            break
        n += 1
    return n

