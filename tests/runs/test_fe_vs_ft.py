"""Feature extraction against fine-tuning: the few-shot protocol, the two pipelines, their costs and records."""
import numpy as np
import pytest
import torch
from torch import nn

from functions.__main__ import main
from functions.analysis import tradeoff
from functions.core.errors import DataError
from functions.data.fewshot import few_shot_index, validation_index
from functions.models.backbones import Backbone
from functions.models.registry import PretrainedRecord, create_backbone
from functions.runs import fe_vs_ft
from functions.runs.features import FeatureStore, extract
from functions.runs.tracking import Tracker
from functions.train.classifiers import FeatureClassifier, Standardiser, ternary
from functions.train.evaluation import crop_scores, majority_vote, mean_probability, scores
from functions.train.finetune import EarlyStopping, Finetuner


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0", input_size=32)


def identity_backbone(size=14, channels=3):
    record = PretrainedRecord("identity", "test", "identity", size, channels, (0.0,), (1.0,), size, "file")
    return Backbone(record, {"pixels": nn.Identity()})


# ----------------------------------------------------------------------------- the protocol

def test_training_splits_are_balanced_nested_and_seeded():
    labels = torch.arange(300) % 3
    five = few_shot_index(labels, 3, 5, seed=0, split=0)
    ten = few_shot_index(labels, 3, 10, seed=0, split=0)
    assert torch.bincount(labels[five]).tolist() == [5, 5, 5]
    assert set(five.tolist()) <= set(ten.tolist())  # the 5-shot set of a split is inside its 10-shot set
    assert torch.equal(five, few_shot_index(labels, 3, 5, seed=0, split=0))
    assert not torch.equal(five, few_shot_index(labels, 3, 5, seed=0, split=1))
    assert not torch.equal(five, few_shot_index(labels, 3, 5, seed=1, split=0))


def test_more_samples_than_the_smallest_class_names_that_class():
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 50)
    with pytest.raises(DataError, match=r"class shoe has only 3 images.*at most 3"):
        few_shot_index(labels, 3, 4, seed=0, split=0, class_names=["shirt", "shoe", "bag"])


def test_validation_and_training_images_never_overlap():
    from functions.config import get_setup, profile
    cfg, _ = profile("quick", get_setup("MNIST"))
    task = cfg.target_task()
    target = fe_vs_ft.target_of(task, val_per_class=20, seed=0)
    assert torch.bincount(target.val.y).tolist() == [20] * 5
    val_rows = {bytes(x.numpy().tobytes()) for x in target.val.x}
    for n in (1, 10, 100):
        for split in range(3):
            index = few_shot_index(target.train.y, 5, n, seed=0, split=split)
            train_rows = {bytes(x.numpy().tobytes()) for x in target.train.x[index]}
            assert not val_rows & train_rows
    assert len(target.test) == len(task.test) == 4861  # the official test split of digits 5-9


# ----------------------------------------------------------------------------- features and heads

def test_standardisation_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train_x, train_y = rng.normal(size=(40, 6)), np.arange(40) % 2
    train_x[train_y == 1] += 1.5
    test_x = rng.normal(loc=4.0, size=(30, 6))  # shifted: statistics of this set would move every row
    head = FeatureClassifier("logistic").fit(train_x, train_y)
    assert np.allclose(head.standardiser.mean, train_x.mean(0))
    one_by_one = np.array([head.predict(row[None])[0] for row in test_x])
    assert np.array_equal(head.predict(test_x), one_by_one)
    refitted = Standardiser.fit(test_x)
    assert not np.allclose(refitted(test_x), head.standardiser(test_x))


def test_full_network_embedding_thresholds():
    z = np.array([-1.0, -0.25, -0.2499, 0.0, 0.15, 0.1501, 2.0])
    assert ternary(z).tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("head", ["linear_svc", "logistic", "svc", "knn", "ridge"])
def test_every_classifier_separates_separable_features(head):
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    x = rng.normal(scale=0.3, size=(60, 4)) + np.eye(4)[y] * 3
    model = FeatureClassifier(head, embedding="fne" if head == "ridge" else "standard").fit(x, y)
    assert (model.predict(x) == y).mean() == 1.0
    assert (model.predict_proba(x) is None) == (head in ("linear_svc", "svc", "ridge"))


def test_bad_head_settings_are_refused():
    with pytest.raises(DataError, match="unknown classifier 'tree'"):
        FeatureClassifier("tree")
    with pytest.raises(DataError, match="C=0"):
        FeatureClassifier(C=0)


def test_ten_crops_are_the_corners_centre_and_their_mirrors():
    backbone = identity_backbone(size=14)
    images = torch.rand(2, 1, 30, 30)
    big = backbone.adapt(images, 16)  # 14 * 256 / 224 = 16
    views = backbone.crops(images)
    assert len(views) == 10 and all(v.shape == (2, 3, 14, 14) for v in views)
    expected = [big[..., :14, :14], big[..., :14, 2:], big[..., 2:, :14], big[..., 2:, 2:], big[..., 1:15, 1:15]]
    for view, want in zip(views[:5], expected):
        assert torch.equal(view, want)
    for view, mirror in zip(views[5:], views[:5]):
        assert torch.equal(view, mirror.flip(-1))


def test_crop_votes_and_mean_probabilities():
    y = np.array([0, 1, 2])
    predictions = [np.array([0, 1, 1]), np.array([0, 2, 2]), np.array([1, 1, 2])]
    assert majority_vote(predictions, 3).tolist() == [0, 1, 2]
    probabilities = [np.eye(3)[p] * 0.6 + 0.1 for p in predictions]
    assert mean_probability(probabilities).tolist() == [0, 1, 2]
    out = crop_scores(y, predictions, probabilities, 3)
    assert out["test_acc"] == 1.0 and out["test_prob_acc"] == 1.0
    assert scores(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) == {"test_acc": 0.75, "test_mean_class_acc": 0.5}


def test_grey_images_become_three_channels_at_the_input_size(lite0):
    x = lite0.adapt(torch.rand(2, 1, 28, 28))
    assert x.shape == (2, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert x.min() >= -1.0 and x.max() <= 1.0  # [0, 1] pixels with mean 0.5, std 0.5


def test_layers_the_backbone_lacks_are_refused(lite0):
    assert lite0.check_layers(["head", "block2"]) == ["block2", "head"]
    with pytest.raises(DataError, match=r"no layer\(s\) \['block9'\].*'stem'"):
        lite0.check_layers(["block9"])
    with pytest.raises(DataError, match="unknown network 'vgg'"):
        create_backbone("vgg")


def test_feature_store_extracts_each_image_once(lite0, tmp_path):
    images = torch.rand(12, 1, 28, 28)
    store = FeatureStore(lite0, ["block3", "head"], {"data": "random"}, images, cache_dir=tmp_path)
    first = store.get([3, 1, 7])
    assert first.shape == (3, lite0.widths["block3"] + lite0.widths["head"])
    assert np.allclose(first, extract(lite0, ["block3", "head"], images[[3, 1, 7]]), atol=1e-5)
    spent = store.totals["images"]
    again = FeatureStore(lite0, ["block3", "head"], {"data": "random"}, images, cache_dir=tmp_path)
    assert np.array_equal(again.get([7, 3]), first[[2, 0]]) and again.totals["images"] == spent == 3
    again.get([0, 7])
    assert again.totals["images"] == 4  # only image 0 was new


def test_fine_tuning_keeps_frozen_stages_and_their_batchnorm_statistics(lite0):
    generator = torch.Generator().manual_seed(0)
    from functions.data.tasks import Split
    train = Split(torch.rand(12, 1, 28, 28, generator=generator), torch.arange(12) % 3)
    val = Split(torch.rand(6, 1, 28, 28, generator=generator), torch.arange(6) % 3)
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    tuner = Finetuner(lite0, 3, freeze_layers=lite0.layer_names[:8], seed=0)
    result = tuner.fit(train, val, epochs=2, batch_size=4, callbacks=[EarlyStopping(2)], seed=0)
    net = tuner.net
    after = net.backbone.state_dict()
    frozen_keys = [k for k in before if not k.startswith("stages.head.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen_keys)  # weights and running statistics
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("stages.head."))
    assert all(torch.equal(before[k], v) for k, v in lite0.state_dict().items())  # the caller's copy untouched
    assert net.trainable_parameters() == sum(p.numel() for p in net.backbone.stages["head"].parameters()) + \
        sum(p.numel() for p in net.head.parameters())
    assert result.epochs == 2 and np.isnan(result.test_acc)


# ----------------------------------------------------------------------------- the grid

def test_grid_writes_resumes_and_logs_every_run_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = fe_vs_ft.FeVsFtSettings(backbone="study", max_epochs=3, patience=2)
    study = fe_vs_ft.run_study("MNIST", None, settings, [1, 3], 2, tracking_uri=uri, progress=False,
                               log=lambda *_: None)
    path, records = study.path, study.records
    assert path == tmp_path / "MNIST" / "results" / "fe_vs_ft_regular_study.json"
    assert sorted(fe_vs_ft.run_key(r) for r in records) == sorted(
        (p, n, s) for p in ("FE", "FT") for n in (1, 3) for s in range(2))
    for r in records:
        assert 0 <= r["test_acc"] <= 1 and r["n_train"] == 5 * r["samples_per_class"] and r["n_test"] == 4861
        assert r["total_seconds"] > 0 and r["total_flops"] > 0 and r["total_energy_kwh"] >= 0
        phases = ["feature_extraction", "classifier_training"] if r["pipeline"] == "FE" else ["fine_tuning"]
        for phase in phases + ["evaluation"]:
            assert r[f"{phase}_seconds"] >= 0 and r[f"{phase}_energy_kwh"] is not None
    ft = [r for r in records if r["pipeline"] == "FT"]
    assert all(len(r["val_curve"]) == r["epochs"] for r in ft)
    tracker = Tracker(uri)
    logged = tracker.runs("Fine-tuning")
    assert len(logged) == 4 and len(tracker.runs("Feature extraction")) == 4
    again = fe_vs_ft.run_study("MNIST", None, settings, [1, 3], 2, tracking_uri=uri, progress=False,
                               log=lambda *_: None).records
    assert again == records and len(tracker.runs("Fine-tuning")) == 4  # resumed: nothing trained or logged twice
    figures = tradeoff.report(study, "MNIST", "regular_study")
    assert [f.name for f in figures] == ["fe_vs_ft_accuracy_regular_study.png", "fe_vs_ft_cost_regular_study.png"]
    assert all(f.is_file() and f.parent == tmp_path / "MNIST" / "results" / "figures" for f in figures)
    summaries = tracker.runs("Fine-tuning")
    summary_run = summaries[summaries["tags.kind"] == "summary"]
    assert len(summary_run) == 1 and len(tracker.runs("Feature extraction")) == 5
    artifacts = {a.path for a in tracker.client.list_artifacts(summary_run.run_id.iloc[0])}
    assert artifacts == {f.name for f in figures} | {"summary.csv", "guideline.txt"}
    tradeoff.report(fe_vs_ft.run_study("MNIST", None, settings, [1, 3], 2, tracking_uri=uri, progress=False,
                                       log=lambda *_: None), "MNIST", "regular_study")
    assert len(tracker.runs("Fine-tuning")) == 5  # a resumed grid trains nothing and logs no second summary
    summary = tradeoff.summary(records)
    assert list(summary.index) == [("FE", 1), ("FE", 3), ("FT", 1), ("FT", 3)]
    assert "images per class" in tradeoff.guideline(records) or "smallest size" in tradeoff.guideline(records)
    with pytest.raises(DataError, match="max_epochs: file 3 vs now 4"):
        fe_vs_ft.run_study("MNIST", None, fe_vs_ft.FeVsFtSettings(backbone="study", max_epochs=4), [1], 1,
                           tracking_uri=uri, progress=False, log=lambda *_: None)


def test_command_line_values_are_typed_and_range_checked(capsys):
    assert main(["fe-vs-ft", "MNIST", "--splits", "0"]) == 2
    assert "splits must be in [1, 100]" in capsys.readouterr().err
    assert main(["fe-vs-ft", "MNIST", "--samples-per-class", "0"]) == 2
    assert main(["fe-vs-ft", "MNIST", "--lr", "-1"]) == 2
    assert main(["fe-vs-ft", "MNIST", "--backbone", "vgg"]) == 2


def test_asking_for_more_images_than_a_class_offers_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    code = main(["fe-vs-ft", "MNIST", "--backbone", "study", "--samples-per-class", "100000", "--no-track",
                 "--no-progress"])
    assert code == 2
    assert "100000 samples per class asked for, but class" in capsys.readouterr().err
    assert not (tmp_path / "MNIST" / "results" / "fe_vs_ft_regular_study.json").exists()


def test_model_selection_uses_validation_only_and_scores_the_test_split_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    from functions.runs.selection import fe_candidates, ft_candidates
    settings = fe_vs_ft.FeVsFtSettings(backbone="study", max_epochs=2, patience=1)
    study = fe_vs_ft.run_study("MNIST", None, settings, [2], 1, track=False, select=True, progress=False,
                               log=lambda *_: None)
    layer_names = [f"block{i}" for i in range(1, 7)]
    fe = [c for c in study.selection if c["pipeline"] == "FE"]
    ft = [c for c in study.selection if c["pipeline"] == "FT"]
    assert [c["candidate"] for c in fe] == fe_candidates(layer_names) and len(fe) == 3 * 17
    assert [c["candidate"] for c in ft] == ft_candidates(6) == [
        {"frozen": f, "lr": lr} for f in (5, 4, 3) for lr in (1e-3, 1e-4)]
    for rows in (fe, ft):
        chosen = [c for c in rows if c.get("chosen")]
        assert len(chosen) == 1 and chosen[0]["val_acc"] == max(c["val_acc"] for c in rows)
        assert chosen[0] is next(c for c in rows if c["val_acc"] == chosen[0]["val_acc"])  # first on ties
        assert [c for c in rows if "test_acc" in c] == chosen
    again = fe_vs_ft.run_study("MNIST", None, settings, [2], 1, track=False, select=True, progress=False,
                               log=lambda *_: None)
    assert again.selection == study.selection
    assert len(tradeoff.selection_table(study.selection)) == 10


def test_torchvision_backbones_load_from_a_weights_file(tmp_path):
    import torchvision
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    backbone = create_backbone("mobilenet_v2", path, input_size=32)
    assert backbone.layer_names[0] == "features0" and backbone.widths[backbone.layer_names[-1]] == 1280
    with pytest.raises(DataError, match="needs a weights file"):
        create_backbone("resnet50", tmp_path / "missing.pth")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="is not a state-dict file of mobilenet_v2"):
        create_backbone("mobilenet_v2", path)


def test_scikit_learn_digits_are_a_third_offline_target(tmp_path, monkeypatch):
    from functions.data.sources import digits_split
    train_x, train_y = digits_split(True)
    test_x, test_y = digits_split(False)
    assert len(train_y) + len(test_y) == 1797 and train_x.shape[1:] == (8, 8) and train_x.max() == 255
    assert np.bincount(test_y).min() >= 58  # every third image of each class
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    settings = fe_vs_ft.FeVsFtSettings(backbone="study", max_epochs=2, patience=1, val_per_class=5)
    study = fe_vs_ft.run_study("MNIST", None, settings, [2], 1, track=False, target="digits", progress=False,
                               log=lambda *_: None)
    assert study.path.name == "fe_vs_ft_digits_study.json"
    assert {r["n_test"] for r in study.records} == {596} and {r["n_train"] for r in study.records} == {20}
    with pytest.raises(DataError, match=r"20 samples per class asked for, but class \d has only \d+ images in "
                                        r"the validation split"):
        fe_vs_ft.run_study("MNIST", None, fe_vs_ft.FeVsFtSettings(backbone="study"), [1], 1, track=False,
                           target="digits", progress=False, log=lambda *_: None)


def test_a_folder_of_images_alone_gets_its_own_results_folder(paints, capsys):
    assert main(["fe-vs-ft", "--data", str(paints), "--pipelines", "FE", "--samples-per-class", "2", "--splits", "1",
                 "--input-size", "32", "--val-per-class", "1", "--no-track", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Paints/results/fe_vs_ft_paints_efficientnet_lite0.json" in out
    assert "Paints/results/figures/fe_vs_ft_accuracy_paints_efficientnet_lite0.png" in out
    for argv, message in [([], "give a study folder"),
                          (["--data", str(paints), "--backbone", "study"], "a folder of images has none"),
                          (["--data", str(paints), "--setup", "regular"], "--setup chooses a study folder's classes"),
                          (["MNIST", "--data", str(paints), "--output", "Mine"], "drop one")]:
        assert main(["fe-vs-ft", *argv, "--no-track"]) == 2
        assert message in capsys.readouterr().err
