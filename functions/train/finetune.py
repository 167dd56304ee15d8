"""Fine-tuning a pretrained backbone: a new head, the first k stages frozen, the general trainer.

Frozen stages keep their BatchNorm statistics (they stay in eval mode while the rest trains), so
their output never changes: it is computed once for the training and validation images and
training runs only the stages after them, as the study's engine does for its frozen prefixes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.errors import DataError
from ..data.tasks import Split
from ..models.backbones import POOLINGS, Backbone, pool
from .evaluation import crop_scores, scores

OPTIMIZERS = ("adam", "sgd")
# Images per forward pass of a backbone: tf_efficientnet_lite0 on 2 cores runs 3x faster in
# batches of 16 than of 256 (small activations stay in the CPU's caches).
CHUNK = 16


class FineTuneNet(nn.Module):
    """A backbone (its first ``frozen`` stages frozen), pooling (``avg``, ``max`` or ``flatten``),
    and a new head: linear, or ``hidden`` layers of those sizes with ReLU (and dropout before
    each linear layer after the first, when ``dropout`` > 0).

    ``frozen_stages`` names the stages whose pretrained weights stay fixed; they stay in eval mode
    while the rest trains, so their BatchNorm layers keep their pretrained statistics, even when
    adapters or biases inside them train.
    """

    def __init__(self, backbone: Backbone, num_classes: int, frozen: int = 0, hidden=(), pooling: str = "avg",
                 dropout: float = 0.0):
        super().__init__()
        depth = len(backbone.layer_names)
        if not 0 <= frozen <= depth:
            raise DataError(f"frozen depth {frozen} is outside 0..{depth}: {backbone.name} has {depth} stages "
                            f"({backbone.layer_names})")
        if pooling not in POOLINGS:
            raise DataError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
        if not 0 <= dropout < 1:
            raise DataError(f"dropout={dropout} must be in [0, 1)")
        hidden = (hidden,) if isinstance(hidden, int) and hidden else tuple(hidden or ())
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise DataError(f"head hidden sizes {list(hidden)} must be positive integers")
        self.backbone, self.pooling = backbone, pooling
        with torch.no_grad():
            probe = torch.zeros(1, backbone.channels, backbone.input_size, backbone.input_size)
            width = pool(backbone.eval().run(probe), pooling).shape[1]
        layers, sizes = [], [width, *hidden]
        for i, (size_in, size_out) in enumerate(zip(sizes, sizes[1:])):
            layers += ([nn.Dropout(dropout)] if dropout and i else []) + [nn.Linear(size_in, size_out), nn.ReLU()]
        last = nn.Linear(sizes[-1], num_classes)
        self.head = last if not hidden else nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout else []), last)
        self.frozen_stages: set[str] = set()
        self.freeze(backbone.layer_names[:frozen])

    @property
    def frozen(self) -> int:
        """How many leading stages are frozen with no trainable parameter: their output never
        changes, so it can be computed once."""
        count = 0
        for name, stage in self.backbone.stages.items():
            if name not in self.frozen_stages or any(p.requires_grad for p in stage.parameters()):
                break
            count += 1
        return count

    def freeze(self, names) -> None:
        for name in names:
            self.backbone.stages[name].requires_grad_(False)
            self.frozen_stages.add(name)

    def unfreeze(self, names) -> None:
        for name in names:
            self.backbone.stages[name].requires_grad_(True)
            self.frozen_stages.discard(name)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen_stages:
            self.backbone.stages[name].eval()  # frozen BatchNorm layers keep their pretrained statistics
        return self

    def from_stage(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the output of the first ``start`` stages (0: an adapted image)."""
        return self.head(pool(self.backbone.run(h, start), self.pooling))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_stage(x, 0)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@torch.no_grad()
def staged(backbone: Backbone, images: torch.Tensor, frozen: int) -> torch.Tensor:
    """Images in [0, 1] adapted and run through the first ``frozen`` stages (in eval mode), in chunks:
    what the trainable part of every network frozen there sees."""
    backbone.eval()
    parts = [backbone.run(backbone.adapt(images[i:i + CHUNK]), 0, frozen) for i in range(0, len(images), CHUNK)]
    return torch.cat(parts).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(net: FineTuneNet, images: torch.Tensor, crops: bool = False,
            prefix: torch.Tensor | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(predicted classes, class probabilities) of images in [0, 1]: one pair for the centre view,
    or ten for the ten crops.  ``prefix``: the centre views already through the frozen stages
    (:func:`staged`), shared by every network frozen there."""
    net.eval()
    if prefix is not None:
        p = torch.cat([net.from_stage(prefix[i:i + CHUNK], net.frozen).softmax(1)
                       for i in range(0, len(prefix), CHUNK)])
        return [(p.argmax(1).numpy(), p.numpy())]
    views = 10 if crops else 1
    labels, probabilities = [[] for _ in range(views)], [[] for _ in range(views)]
    for i in range(0, len(images), CHUNK):
        chunk = images[i:i + CHUNK]
        inputs = net.backbone.crops(chunk) if crops else [net.backbone.adapt(chunk)]
        for v, x in enumerate(inputs):
            p = net(x).softmax(1)
            labels[v].append(p.argmax(1).numpy())
            probabilities[v].append(p.numpy())
    return [(np.concatenate(l), np.concatenate(p)) for l, p in zip(labels, probabilities)]


def evaluate(net: FineTuneNet, test: Split, num_classes: int, crops: bool = False,
             prefix: torch.Tensor | None = None) -> dict:
    """Test accuracy and mean per-class accuracy (ten-crop: by vote and by mean probability)."""
    views = predict(net, test.x, crops, None if crops else prefix)
    y = test.y.numpy()
    if not crops:
        return scores(y, views[0][0])
    return crop_scores(y, [v[0] for v in views], [v[1] for v in views], num_classes)
