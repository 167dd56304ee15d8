import json

import numpy as np
import pytest
import torch

from functions.analysis.clustering import layer_order, layer_scores
from functions.runs.clustering import (POOLED, SCORES, channel_features, cluster_records, clustering_scores,
                                       clustering_subset, layer_activations, layer_names, pair_precision_recall,
                                       pooled_features, run_clustering)
from functions.config import Config
from functions.runs.store import load_results
from functions.core.errors import DataError
from functions.data.tasks import Split, balanced_subset, subset_seed
from functions.models.study_cnn import build

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model():
    return build(Config(num_channels=8, depth=3), (1, 28, 28), NUM_CLASSES, seed=0)


@pytest.fixture(scope="module")
def separable():
    """Images whose brightness is their label: every layer's pooled vector separates the classes."""
    y = torch.arange(NUM_CLASSES).repeat(20)
    noise = torch.randn(len(y), 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return Split(0.05 * noise + 2.0 * y.view(-1, 1, 1, 1).float(), y)


# ----------------------------------------------------------------------------- scores

def test_perfect_clustering_scores_one():
    labels = [0, 0, 1, 1, 2, 2]
    assert clustering_scores(labels, labels) == pytest.approx(dict.fromkeys(SCORES, 1.0))


def test_permuted_cluster_names_still_score_one():
    scores = clustering_scores([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1])
    assert scores == pytest.approx(dict.fromkeys(SCORES, 1.0))


def test_pairwise_scores_and_cluster_accuracy_match_hand_count():
    # label 0: {a, b, c}; label 1: {d, e, f}; clusters {a, b} and {c, d, e, f}
    labels, clusters = [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]
    # pairs together with one label: ab, de, df, ef = 4; pairs in one cluster: 1 + 6 = 7;
    # pairs sharing a label: 3 + 3 = 6; best matching puts 2 + 3 of 6 points right
    assert pair_precision_recall(labels, clusters) == pytest.approx((4 / 7, 4 / 6))
    assert clustering_scores(labels, clusters)["cluster_acc"] == pytest.approx(5 / 6)


def test_one_big_cluster_has_full_recall_and_no_agreement_beyond_chance():
    labels = [0, 0, 1, 1]
    scores = clustering_scores(labels, [0, 0, 0, 0])
    assert scores["pair_recall"] == 1.0
    assert scores["pair_precision"] == pytest.approx(2 / 6)
    assert scores["ari"] == pytest.approx(0.0)
    assert scores["cluster_acc"] == pytest.approx(0.5)


def test_all_singletons_give_nan_precision_not_a_crash():
    precision, recall = pair_precision_recall([0, 0, 1], [0, 1, 2])
    assert np.isnan(precision) and recall == 0.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(DataError, match="equal length"):
        clustering_scores([0, 1, 1], [0, 1])


# ----------------------------------------------------------------------------- activations

def test_activations_have_the_shape_of_each_layer(model, separable):
    shapes = {name: tuple(a.shape) for name, a in layer_activations(model, separable.x[:7])}
    assert list(shapes) == layer_names(model) == ["input", "conv0", "conv1", "conv2", "fc"]
    assert shapes == {"input": (7, 1, 28, 28), "conv0": (7, 8, 28, 28), "conv1": (7, 8, 14, 14),
                      "conv2": (7, 8, 14, 14), "fc": (7, NUM_CLASSES)}


def test_last_activation_is_the_models_output(model, separable):
    *_, (name, logits) = layer_activations(model, separable.x[:4])
    with torch.no_grad():
        assert name == "fc" and torch.allclose(logits, model(separable.x[:4]))


def test_pooled_and_channel_features_are_float64_rows(model, separable):
    conv1 = dict(layer_activations(model, separable.x[:6]))["conv1"]
    assert pooled_features(conv1).shape == (6, 8) and pooled_features(conv1).dtype == np.float64
    assert channel_features(conv1, 3).shape == (6, 14 * 14)
    np.testing.assert_allclose(pooled_features(conv1)[:, 3], channel_features(conv1, 3).mean(1), rtol=1e-6)


# ----------------------------------------------------------------------------- subsets and sweeps

def test_subset_is_the_training_subset_of_the_same_percentage_and_repeat(separable):
    expected = balanced_subset(separable.y, NUM_CLASSES, 0.5, subset_seed(42, 0.5, 1))
    assert torch.equal(clustering_subset(separable, 0.5, 1, seed=42, max_images=1000), expected)


def test_large_subsets_are_thinned_to_max_images_and_stay_balanced(separable):
    index = clustering_subset(separable, 1.0, 0, seed=42, max_images=30)
    assert len(index) == 30
    assert torch.bincount(separable.y[index]).tolist() == [6] * NUM_CLASSES


def test_records_cover_every_layer_channel_percentage_repeat_and_split(model, separable):
    records = cluster_records({"pretrained": model}, {"source": separable, "target": separable},
                              [0.5, 1.0], {0.5: 2, 1.0: 1}, n_init=1)
    per_group = 2 + 3 * (1 + 8) + 1  # input: pooled + 1 channel; conv: pooled + 8 channels; fc: pooled
    assert len(records) == 2 * (2 + 1) * per_group
    first = records[0]
    assert {"model", "split", "sampled_percentage", "repeat", "layer", "layer_index", "channel",
            "n_images", "num_clusters", *SCORES} <= set(first)
    assert {(r["sampled_percentage"], r["n_images"]) for r in records} == {(0.5, 50), (1.0, 100)}
    pooled = [r for r in records if r["channel"] == POOLED and r["layer"] != "fc"]
    assert all(r["ari"] == pytest.approx(1.0) for r in pooled), "brightness separates the classes at every layer"


def test_pooled_only_gives_one_record_per_layer(model, separable):
    records = cluster_records({"m": model}, {"target": separable}, [1.0], 1, n_init=1, per_channel=False)
    assert [r["layer"] for r in records] == layer_names(model)
    assert {r["channel"] for r in records} == {POOLED}


def test_same_seed_gives_same_records(model, separable):
    def run():
        return cluster_records({"m": model}, {"target": separable}, [0.5], 1, n_init=2, per_channel=False)

    assert run() == run()


def test_missing_repeat_count_is_explained(model, separable):
    with pytest.raises(DataError, match="no entry for percentage"):
        cluster_records({"m": model}, {"target": separable}, [0.5, 1.0], {0.5: 1}, n_init=1)


# ----------------------------------------------------------------------------- files

def test_records_round_trip_and_resume_skips_finished_groups(model, separable, tmp_path):
    path = tmp_path / "results" / "ari_regular.json"
    args = ({"m": model}, {"target": separable}, [0.5, 1.0], 1)
    saved = []
    records = run_clustering(path, {"depth": 3}, *args, n_init=1, per_channel=False, progress=saved.append)
    params, loaded = load_results(path)
    assert loaded == records and len(saved) == 2
    # every layer of every group is kept, not one record per group
    assert len(records) == 2 * len(layer_names(model))
    assert {(r["sampled_percentage"], r["layer"]) for r in records} == \
        {(p, layer) for p in (0.5, 1.0) for layer in layer_names(model)}
    assert params == {"depth": 3, "clustering_seed": 42, "max_images": 1000, "n_init": 1, "per_channel": False}
    assert json.loads(path.read_text())[0] == params
    assert not list(path.parent.glob("*.tmp")), "writes go through a temporary file"

    again = run_clustering(path, {"depth": 3}, *args, n_init=1, per_channel=False, progress=saved.append)
    assert again == records and len(saved) == 2, "a re-run with the same parameters computes nothing"


def test_resume_refuses_other_parameters_and_names_them(model, separable, tmp_path):
    path = tmp_path / "ari_regular.json"
    run_clustering(path, {"depth": 3}, {"m": model}, {"target": separable}, [1.0], 1, n_init=1, per_channel=False)
    with pytest.raises(DataError, match="n_init: file 1 vs now 2"):
        run_clustering(path, {"depth": 3}, {"m": model}, {"target": separable}, [1.0], 1, n_init=2,
                       per_channel=False)


# ----------------------------------------------------------------------------- summaries

def test_layer_order_follows_the_network_whatever_its_depth():
    assert layer_order(["fc", "conv10", "input", "conv2", "conv2"]) == ["input", "conv2", "conv10", "fc"]


@pytest.fixture
def scored():
    """ARI 0.1 * channel + 0.01 * repeat on conv0 channels, 0.5 for pooled vectors."""
    def record(layer, channel, repeat, ari, split="target"):
        return {"model": "m", "split": split, "sampled_percentage": 0.1, "repeat": repeat, "layer": layer,
                "channel": channel, "ari": ari}
    return [record(layer, POOLED, r, 0.5) for layer in ("conv0", "fc") for r in (0, 1)] \
        + [record("conv0", c, r, 0.1 * c + 0.01 * r) for c in range(3) for r in (0, 1)] \
        + [record("fc", POOLED, 0, 0.9, split="source")]


def test_layer_scores_summarise_channels_or_take_the_pooled_vector(scored):
    def by_layer(frame):
        return {(row.layer, row.repeat): round(row.ari, 12) for row in frame.itertuples()}

    assert by_layer(layer_scores(scored, "target")) == {("conv0", 0): 0.5, ("conv0", 1): 0.5,
                                                        ("fc", 0): 0.5, ("fc", 1): 0.5}
    assert by_layer(layer_scores(scored, "target", channels="max")) == {("conv0", 0): 0.2, ("conv0", 1): 0.21,
                                                                        ("fc", 0): 0.5, ("fc", 1): 0.5}
    assert by_layer(layer_scores(scored, "target", channels="mean"))[("conv0", 1)] == 0.11


def test_layer_scores_name_the_available_splits_and_choices(scored):
    with pytest.raises(DataError, match="'source', 'target'"):
        layer_scores(scored, "val")
    with pytest.raises(DataError, match="choose 'pooled'"):
        layer_scores(scored, "target", channels="median")
