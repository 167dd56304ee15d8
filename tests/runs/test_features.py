"""The one feature store: per-image and whole-split requests, extra outputs, one key."""
import numpy as np
import torch
from torch import nn

from functions.models.backbones import Backbone
from functions.models.registry import PretrainedRecord
from functions.runs.features import FEATURE_FORMAT, FeatureStore, store_key


class Doubled:
    """Features 2x, and an extra output, of images (N, 1, 2, 2); counts the images it computed."""

    network = {"kind": "doubled", "weights_sha256": "0"}
    layers, pooling, view = ["pixels"], "sum", "image"

    def __init__(self):
        self.seen = 0

    def __call__(self, batch):
        self.seen += len(batch)
        flat = batch.flatten(1).numpy()
        return {"features": 2 * flat, "sums": flat.sum(1)}


IMAGES = torch.arange(40, dtype=torch.float32).reshape(10, 1, 2, 2)


def test_rows_and_extra_outputs_are_computed_once_per_image(tmp_path):
    computed = Doubled()
    store = FeatureStore.of(computed, {"data": "ramp"}, IMAGES, tmp_path)
    rows = store.rows([4, 1])
    assert np.array_equal(rows["features"], 2 * IMAGES[[4, 1]].flatten(1).numpy())
    assert np.array_equal(rows["sums"], IMAGES[[4, 1]].sum((1, 2, 3)).numpy()) and computed.seen == 2
    again = FeatureStore.of(computed, {"data": "ramp"}, IMAGES, tmp_path)
    assert np.array_equal(again.get([1]), rows["features"][1:]) and computed.seen == 2
    whole = again.split()
    assert computed.seen == 10 and again.computed == 8  # only the missing eight
    assert np.array_equal(whole["sums"], IMAGES.sum((1, 2, 3)).numpy())
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_missing_images_are_read_and_computed_a_chunk_at_a_time(tmp_path, monkeypatch):
    from functions.runs import features
    monkeypatch.setattr(features, "EXTRACT_ROWS", 3)
    read = []

    class Counted:  # images indexed by a tensor of rows, as a lazily read split is
        def __len__(self):
            return len(IMAGES)

        def __getitem__(self, rows):
            read.append(len(rows))
            return IMAGES[rows]

    whole = FeatureStore.of(Doubled(), {"data": "ramp"}, Counted(), tmp_path).split()
    assert read == [3, 3, 3, 1]  # never more than a chunk of images at once
    assert np.array_equal(whole["features"], 2 * IMAGES.flatten(1).numpy())
    assert np.array_equal(whole["sums"], IMAGES.sum((1, 2, 3)).numpy())


def test_a_whole_split_given_as_a_function_is_loaded_only_when_an_image_is_missing(tmp_path):
    loads = []
    images = lambda: loads.append(1) or IMAGES  # noqa: E731
    first = FeatureStore.of(Doubled(), {"data": "ramp", "split": "train"}, images, tmp_path).split()
    again = FeatureStore.of(Doubled(), {"data": "ramp", "split": "train"}, images, tmp_path)
    assert np.array_equal(again.split()["features"], first["features"]) and loads == [1] and again.computed == 0


def test_the_key_names_the_network_layers_pooling_view_and_images():
    base = dict(network={"kind": "a", "weights_sha256": "0", "input_size": 28}, layers=["x"], pooling="avg",
                view="image", data={"dataset": "MNIST", "split": "train"})
    key = store_key(**base)
    for change in ({"network": {**base["network"], "weights_sha256": "1"}},
                   {"network": {**base["network"], "input_size": 32}}, {"layers": ["y"]}, {"pooling": "max"},
                   {"view": "crops"}, {"data": {**base["data"], "split": "test"}}):
        assert store_key(**{**base, **change}) != key, change
    assert FEATURE_FORMAT >= 2


def test_a_backbone_store_keeps_the_ten_crops_on_their_own_axis(tmp_path):
    record = PretrainedRecord("identity", "test", "identity", 2, 1, (0.0,), (1.0,), 2, "file")
    backbone = Backbone(record, {"pixels": nn.Identity()})
    plain = FeatureStore(backbone, ["pixels"], {"data": "ramp"}, IMAGES / 40, cache_dir=tmp_path)
    crops = FeatureStore(backbone, ["pixels"], {"data": "ramp"}, IMAGES / 40, crops=True, cache_dir=tmp_path)
    assert plain.get([3, 0]).shape == (2, 1) and plain.layers == ["pixels"] and plain.path != crops.path
    assert crops.get([3, 0]).shape == (10, 2, 1) and crops.split()["features"].shape == (10, 10, 1)
    assert np.array_equal(crops.get([0, 3]), crops.split()["features"][:, [0, 3]])
