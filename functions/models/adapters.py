"""LoRA on convolutions computed in weight space: one convolution with ``W + scale * B A``.

peft's LoRA convolution runs the frozen convolution and then two more (``A``: rank filters of the
kernel's size, ``B``: 1 x 1) over the same activations.  On the small convolutions of the study CNN
those extra passes cost more than the weight gradient that freezing saves: a LoRA training step
took 1.5-1.8x a full fine-tuning step on a 2-core CPU.  Adding the low-rank update to the weight
first gives the same function (merging is exactly this sum) with one convolution per layer; the
gradient reaches ``A`` and ``B`` through the sum.  Everything else (targeting, scaling, merging,
unloading) is peft's own.
"""
from __future__ import annotations

import torch
from torch.func import functional_call
from peft.tuners.lora.layer import Conv2d as LoraConv2d
from torch import nn


class WeightSpaceLoraConv2d(LoraConv2d):
    """peft's LoRA ``Conv2d`` whose unmerged forward convolves once with the updated weight
    (with LoRA dropout, or several adapters mixed per batch, it falls back to peft's forward)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        adapters = [a for a in self.active_adapters if a in self.lora_A]
        plain = all(isinstance(self.lora_dropout[a], nn.Identity) and a not in self.lora_variant for a in adapters)
        if self.disable_adapters or self.merged or not plain or args or kwargs:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        weight = base.weight + sum(self.get_delta_weight(a) for a in adapters)
        # the base layer's own forward (timm's "same"-padded convolutions pad in theirs)
        return functional_call(base, {"weight": weight.to(x.dtype)}, (x,), strict=False)


def weight_space_lora(config):
    """``config`` (a peft ``LoraConfig``) with convolutions adapted by :class:`WeightSpaceLoraConv2d`."""
    config._register_custom_module({nn.Conv2d: WeightSpaceLoraConv2d})
    return config
