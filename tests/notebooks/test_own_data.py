"""The your-data notebook's steps on a small generated folder: counts, the sample grid saved under
the folder's figures, the backbones' scores, and the guideline in words from the accuracies."""
import numpy as np
import pytest
from PIL import Image

from functions.notebooks import own_data

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path / "out"))
    rng = np.random.default_rng(0)
    for label, colour in COLOURS.items():
        (tmp_path / "paints" / label).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "paints" / label / f"{i}.png")
    return own_data.load_dataset(tmp_path / "paints")


def test_class_counts_have_every_class_and_the_totals(dataset):
    table = own_data.class_counts(dataset)
    assert list(table.index) == ["blue", "green", "red", "all"]
    assert list(table.columns) == ["train", "test", "all"]
    assert table.loc["all", "all"] == 24 and (table.loc[["blue", "green", "red"], "all"] == 8).all()


def test_the_sample_grid_has_a_row_per_class_and_is_saved(dataset, tmp_path):
    figure = own_data.sample_grid(dataset, "MNIST", per_class=3, size=16)
    assert len(figure.axes) == 3 * 3
    assert [ax.get_ylabel() for ax in figure.axes[::3]] == ["blue", "green", "red"]
    assert (tmp_path / "out" / "MNIST" / "results" / "figures" / "your_data_samples_paints.png").is_file()


@pytest.mark.slow  # builds an EfficientNet
def test_backbone_scores_rank_the_networks(dataset):
    table = own_data.backbone_scores(dataset, input_size=32, backbones=("efficientnet_lite0",))
    assert list(table.index) == ["efficientnet_lite0"] and list(table.columns) == ["rank", "features", "logme", "hscore_shrinkage"]
    assert table.loc["efficientnet_lite0", "features"] == 1280 and np.isfinite(table.logme).all()


def _records(ft_minus_fe: dict) -> list[dict]:
    records = []
    for n, gap in ft_minus_fe.items():
        for split in range(3):
            for pipeline, acc in (("FE", 0.5 + 0.01 * split), ("FT", 0.5 + 0.01 * split + gap + 0.002 * split)):
                records.append({"pipeline": pipeline, "samples_per_class": n, "split": split, "test_acc": acc,
                                "test_mean_class_acc": acc, "training_seconds": 1.0, "training_energy_kwh": 1e-6,
                                "training_flops": 1e9, "total_seconds": 2.0, "total_energy_kwh": 2e-6,
                                "total_flops": 2e9})
    return records


def test_the_guideline_gives_the_accuracies_per_size_and_the_verdict(dataset):
    words = own_data.guideline(_records({1: 0.0, 10: 0.2}), dataset, "efficientnet_lite0")
    lines = words.splitlines()
    assert lines[0] == "On paints (3 classes) with efficientnet_lite0:"
    assert lines[1].startswith("  1 image per class: FE 0.51, FT 0.51") and "within noise" in lines[1]
    assert lines[2].startswith("  10 images per class: FE 0.51, FT 0.71") and "FT better" in lines[2]
    assert lines[3] == ("Feature extraction is as good as fine-tuning (within noise, or better) up to 1 images per "
                        "class; above that fine-tuning is better.")
    assert "seconds" not in words and "energy" not in words  # nothing that depends on the machine


def test_the_zoo_recommendation_is_kept_per_dataset_version(dataset, tmp_path, monkeypatch):
    import pandas as pd
    from functions.core.errors import DataError
    asked = []

    def ranked(task, recommender, data):  # the zoo's own ranking is tested in tests/analysis; here, the keeping
        asked.append(recommender)
        table = pd.DataFrame({"model": ["a", "b"], "family": ["x", "x"], "predicted": [0.2, 0.1],
                              "measured_accuracy": [float("nan")] * 2}).rename_axis("rank")
        table.attrs.update(task="paints:0,1,2:6", data=dataset.version)
        return table

    monkeypatch.setattr(own_data.zoo, "recommend_model", ranked)
    first = own_data.zoo_recommendation(tmp_path / "paints")
    again = own_data.zoo_recommendation(tmp_path / "paints")
    assert asked == ["gradient boosting"] and list(again["model"]) == ["a", "b"] and again.index.name == "rank"
    pd.testing.assert_frame_equal(first, again)
    assert again.attrs["data"]["fingerprint"] == dataset.fingerprint
    own_data.zoo_recommendation(tmp_path / "paints", recommender="logme")  # another recommender: asked again
    assert asked == ["gradient boosting", "logme"]
    Image.new("RGB", (12, 12), (250, 250, 0)).save(tmp_path / "paints" / "red" / "new.png")
    with pytest.raises(DataError, match=r"recommendation_paints.json was made from another version of paints: "
                                        r"1 file added \(red/new.png\)"):
        own_data.zoo_recommendation(tmp_path / "paints")
