"""The model zoo, the task bank, the model x task matrix and the recommenders: real pools of
MNIST, FashionMNIST and the 8 x 8 digits, the committed study source models, and records the
tests make themselves."""
import json
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from functions.__main__ import main
from functions.analysis.model_zoo import files, matrix, recommenders, ways
from functions.analysis.transferability.recommender import forward_flops
from functions.core.errors import DataError
from functions.data import task_bank
from functions.data.catalog import spec
from functions.models import zoo_catalog
from functions.runs import zoo, zoo_matrix

STUDY_MODELS = ["mnist_0-4_d6_w16", "fashion_all_d6_w16", "mnist_all_d6_w16"]


def test_bank_holds_over_a_hundred_seeded_tasks_of_every_dataset_size_and_class_count():
    tasks = task_bank.bank()
    assert len(tasks) >= 100 and tasks == task_bank.bank()  # the same bank every time
    assert {t.dataset for t in tasks} == set(task_bank.BANK_DATASETS)
    assert {len(t.classes) for t in tasks} == {2, 3, 4, 5, 10}
    assert min(t.n_train for t in tasks) == 20 and max(t.n_train for t in tasks) == 2000
    assert len({t.name for t in tasks}) == len(tasks)
    row = task_bank.task_metadata(task_bank.parse_task("FashionMNIST:0,9:40"))
    assert row["class_names"] == "T-shirt/top; Ankle boot" and (row["n_train"], row["n_test"]) == (40, 200)


def test_task_rows_are_balanced_seeded_and_drawn_from_the_pool():
    task = task_bank.parse_task("digits:0-4:103")
    train, test = task_bank.task_rows(task, 0)
    labels = task_bank.pool("digits").train_y.numpy()[train]
    assert len(train) == 103 and sorted(np.bincount(labels)[:5]) == [20, 20, 21, 21, 21]
    assert np.array_equal(train, task_bank.task_rows(task, 0)[0]) and not np.array_equal(train, task_bank.task_rows(task, 1)[0])
    assert set(task_bank.pool("digits").test_y.numpy()[test]) == {0, 1, 2, 3, 4}
    assert list(task_bank.task_labels(task, [4, 0, 2])) == [4, 0, 2]


@pytest.mark.parametrize("text, message", [
    ("MNIST:3,12:40", "MNIST has no class.*12.*0..9"),
    ("digits:0,1:500", "digits pool gives 2 to 2"),
    ("SVHN:0,1:20", "unknown task dataset 'SVHN'"),
    ("MNIST:0,1", "not <dataset>:<classes>:<n>"),
    ("MNIST:0,0:10", "two different classes"),
    ("MNIST:zero,1:10", "classes must be integers"),
])
def test_bad_task_specs_are_refused_naming_the_problem(text, message):
    with pytest.raises(DataError, match=message):
        task_bank.parse_task(text)


def test_zoo_has_twenty_models_of_both_families_depths_and_widths():
    assert len(zoo_catalog.ZOO) >= 20 and len({m.name for m in zoo_catalog.ZOO}) == len(zoo_catalog.ZOO)
    study = [m for m in zoo_catalog.ZOO if m.family == "study CNN"]
    assert {m.depth for m in study} == {2, 4, 6, 8} and {m.width for m in study} == {8, 16, 32, 64}
    assert {m.dataset for m in study} == {"MNIST", "FashionMNIST"}
    assert sum(m.family == "EfficientNet-Lite" for m in zoo_catalog.ZOO) == 3
    with pytest.raises(DataError, match="no model 'resnet9'"):
        zoo_catalog.zoo_model("resnet9")


def test_metadata_counts_what_an_independent_count_gives():
    model = zoo_catalog.zoo_model("mnist_0-4_d6_w16")
    net = zoo.network(model)
    row = zoo.metadata(model, net)
    cnn = zoo.study_network(model)
    assert row["params"] == sum(p.numel() for p in cnn.parameters())
    assert row["flops"] == forward_flops(cnn)  # torch's counter against the layer-shape formula
    assert (row["input_size"], row["feature_dim"], row["pretrain_classes"]) == (28, 144, 5)
    assert 0.9 < row["pretrain_accuracy"] <= 1.0


def test_pool_features_are_computed_once_and_the_source_head_gives_probabilities(tmp_path):
    net = zoo.network(zoo_catalog.zoo_model("fashion_all_d6_w16"))
    first = zoo.pool_features(net, "digits", cache_dir=tmp_path)
    cached = zoo.pool_features(net, "digits", cache_dir=tmp_path)
    assert first.train.shape == (1201, 144) and first.test.shape == (596, 144)
    assert np.array_equal(first.train, cached.train) and len(list(tmp_path.iterdir())) == 2  # train, test
    assert first.seconds_per_image == cached.seconds_per_image > 0
    assert np.allclose(first.train_probs.sum(1), 1.0, atol=1e-5) and first.train_probs.shape[1] == 10
    # what the source network computes on the 8 x 8 digits resized to its 28 x 28 and normalised as
    # its FashionMNIST images were: its last block (3 x 3 at depth 6) flattened, and its softmax
    cnn, stats = zoo.study_network(zoo_catalog.zoo_model("fashion_all_d6_w16")), spec("FashionMNIST")
    x = F.interpolate(task_bank.pool("digits").train_x[:4], size=(28, 28), mode="bicubic").clamp(0, 1)
    x = (x - stats.mean[0]) / stats.std[0]
    with torch.no_grad():
        np.testing.assert_allclose(first.train[:4], cnn.features(x).flatten(1).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(first.train_probs[:4], cnn(x).softmax(1).numpy(), rtol=1e-4, atol=1e-6)


def test_images_a_model_cannot_take_are_refused():
    net = zoo.network(zoo_catalog.zoo_model("mnist_0-4_d6_w16"))
    with pytest.raises(DataError, match="1 \\(grey\\) or 3 \\(RGB\\) channels.*got shape \\(2, 4, 8, 8\\)"):
        net.backbone.adapt(torch.zeros(2, 4, 8, 8))


@pytest.fixture(scope="module")
def small_records():
    """Three committed study models on twelve bank tasks of all three datasets (real features)."""
    tasks = [t for t in task_bank.bank() if t.n_train <= 150][::4]
    records, timing = zoo_matrix.build([zoo_catalog.zoo_model(n) for n in STUDY_MODELS], tasks, matrix.scores, seeds=2,
                                       log=lambda *_: None)
    return records, timing


def test_matrix_records_every_pair_with_scores_and_measured_accuracy(small_records):
    records, timing = small_records
    tasks = records["task"].nunique()
    assert len(records) == len(STUDY_MODELS) * tasks and records["source_dataset"].nunique() == 3
    assert records[[*matrix.SCORES, "accuracy"]].notna().all().all()
    assert records["accuracy"].between(0, 1).all() and (records["zoo_version"] == zoo_catalog.ZOO_VERSION).all()
    assert set(timing.as_dict()["feature_extraction_s_per_model"]) == set(STUDY_MODELS)
    assert matrix.score_matrix(records).shape == (len(STUDY_MODELS), tasks)
    # how each accuracy was obtained, kept beside it
    assert (records["split"] == task_bank.SPLIT_PROTOCOL).all() and (records["probe_seeds"] == "0 1").all()
    assert records["probe"].str.contains("head logistic.*solver lbfgs, max_iter 2000").all()
    assert records["probe_iterations"].between(1, 2000).all() and (records["extraction_ms_per_image"] >= 0).all()


def test_stored_rows_of_older_code_are_measured_again_not_kept(small_records, output_root):
    records, _ = small_records
    files.save(records.drop(columns="knn").assign(accuracy=0.0))  # a file from before the k-NN score
    stored = pd.read_csv(files.save(records)["records"])
    assert stored["knn"].notna().all() and (stored["accuracy"] > 0).all()
    files.save(records.assign(accuracy=0.0).iloc[:1])  # rows measured as this code measures stay
    assert (pd.read_csv(files.records_path())["accuracy"] > 0).all()


def test_files_are_written_in_the_seed_layout_and_another_zoo_version_is_refused(small_records, output_root):
    records, _ = small_records
    paths = files.save(records)
    assert {p.name for p in paths.values()} == {"source_model_meta_data.csv", "target_dataset_meta_data.csv",
                                                "record_default.csv", "LogME.csv"}
    assert len(pd.read_csv(paths["models"])) == len(STUDY_MODELS)
    assert pd.read_csv(paths["logme"]).shape == (len(STUDY_MODELS), records["task"].nunique() + 1)
    pd.testing.assert_frame_equal(files.load_records(), pd.read_csv(paths["records"]))
    records.assign(zoo_version=zoo_catalog.ZOO_VERSION + 1).to_csv(paths["records"], index=False)
    with pytest.raises(DataError, match=f"zoo version\\(s\\) \\[{zoo_catalog.ZOO_VERSION + 1}\\].*version {zoo_catalog.ZOO_VERSION}"):
        files.load_records()


def _synthetic(tasks_per_dataset=4, models=6, seed=0):
    """Records where LogME orders the models as their accuracy does and LEEP in reverse."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset in ("MNIST", "FashionMNIST", "digits"):
        for t in range(tasks_per_dataset):
            for m in range(models):
                accuracy = 0.5 + 0.07 * m + 0.01 * t
                rows.append({"model": f"m{m}", "family": "study CNN", "task": f"{dataset}:{t}", "source_dataset": dataset,
                             "params": 1000 * (m + 1), "flops": 10_000 * (m + 1), "depth": 2 + m % 4, "width": 8,
                             "input_size": 28, "feature_dim": 144, "pretrain_classes": 5, "pretrain_dataset": "MNIST",
                             "pretrain_accuracy": rng.uniform(0.9, 1.0), "num_classes": 2 + t, "n_train": 20 * (t + 1),
                             "accuracy": accuracy, "logme": accuracy * 3 - t, "leep": -accuracy,
                             **{s: rng.normal() for s in matrix.SCORES if s not in ("logme", "leep")}})
    return pd.DataFrame(rows)


def test_recommenders_are_scored_per_task_and_a_monotone_score_ranks_perfectly():
    table = recommenders.evaluate(_synthetic())
    for protocol in recommenders.PROTOCOLS:
        assert table.loc["logme", (protocol, "weighted_tau")] == pytest.approx(1.0)
        assert table.loc["logme", (protocol, "top1_hit")] == 1.0 and table.loc["logme", (protocol, "regret")] == 0
        assert table.loc["leep", (protocol, "weighted_tau")] < 0 and table.loc["leep", (protocol, "regret")] > 0
    assert table.loc["gradient boosting"].notna().all()
    assert table.loc["logme", ("leave one task out", "tau_ci95_low")] == pytest.approx(1.0)  # every task ranked right
    assert table.loc["params", ("leave one task out", "weighted_tau")] == pytest.approx(1.0)  # bigger is better here
    spread = table.loc["gradient boosting", "leave one dataset out"]
    assert spread["tau_ci95_low"] <= spread["weighted_tau"] <= spread["tau_ci95_high"]
    gain = recommenders.tau_difference(table, "logme", "leep")
    tasks = _synthetic()["task"].nunique()
    assert gain["tasks"] == tasks and gain["difference"] == pytest.approx(1.0 - table.loc["leep", ("leave one dataset out",
                                                                                                   "weighted_tau")])
    assert gain["ci95_low"] > 0


def test_zoo_evaluate_writes_the_evaluation_again_from_the_stored_matrix(small_records, output_root, capsys):
    records, _ = small_records
    files.save(records)
    assert main(["zoo", "evaluate", "--models", STUDY_MODELS[0]]) == 2
    assert "--models: options of zoo build, which zoo evaluate would ignore" in capsys.readouterr().err
    assert main(["zoo", "evaluate"]) == 0
    written = json.loads((files.zoo_dir() / "recommenders.json").read_text())
    assert set(written) == set(recommenders.RECOMMENDERS)
    assert "('leave one dataset out', 'tau_ci95_low')" in written["logme"]


def test_leave_one_dataset_out_never_trains_on_the_held_out_dataset(monkeypatch):
    seen = []

    def spy(train, x, test, y):
        seen.append((set(train["source_dataset"]), set(test["source_dataset"])))
        return np.zeros(len(test))

    monkeypatch.setattr(recommenders, "LEARNED", {"spy": spy})
    recommenders.predictions(_synthetic(), "leave one dataset out")
    assert len(seen) == 3 and all(not (train & test) and len(test) == 1 for train, test in seen)
    with pytest.raises(DataError, match="unknown protocol"):
        recommenders.predictions(_synthetic(), "leave nothing out")


def test_recommend_model_ranks_the_zoo_for_a_bank_task_and_a_new_one(small_records, output_root, capsys):
    records, _ = small_records
    files.save(records)
    known = records["task"].iloc[0]
    assert main(["recommend-model", "--task", known, "--budget-gflops", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert f"models for {known}" in out and all(name in out for name in STUDY_MODELS)
    assert "90% conformal intervals" in out and "within 1e-09 GFLOPs per training image: nothing; the cheapest" in out
    assert main(["recommend-model", "--task", known, "--level", "1"]) == 2
    assert "--level" in capsys.readouterr().err
    from functions.notebooks import zoo as zoo_steps
    fresh = zoo_steps.recommend_model("MNIST:1,7:60", "logme", log=lambda *_: None)
    assert list(fresh["predicted"]) == sorted(fresh["predicted"], reverse=True) and fresh["measured_accuracy"].isna().all()
    assert ((fresh["low"] <= fresh["accuracy_predicted"]) & (fresh["accuracy_predicted"] <= fresh["high"])).all()
    candidates = fresh.attrs["candidates"]  # no ways file: each model by feature extraction, at its forward pass
    assert set(candidates["way"]) == {"FE"} and len(candidates) == len(fresh)
    assert candidates.set_index("model")["adapt_gflops_per_image"].to_dict() == fresh.set_index("model")["gflops"].to_dict()
    front = candidates[candidates["pareto"]].sort_values("adapt_gflops_per_image")  # each more accurate than the last
    assert front["accuracy_predicted"].is_monotonic_increasing and candidates["pareto"].any()
    best = ways.choose_within(candidates, candidates["adapt_gflops_per_image"].max())
    assert best["accuracy_predicted"] == fresh["accuracy_predicted"].max()
    with pytest.raises(DataError, match="unknown recommender"):
        zoo_steps.recommend_model(known, "oracle")
    assert main(["recommend-model", "--task", "MNIST:0,10:20"]) == 2
    assert "MNIST has no class(es) [10]" in capsys.readouterr().err


def test_trained_on_the_bank_the_fits_see_only_the_bank_and_predict_every_other_task(monkeypatch):
    seen = []

    def spy(train, x, test, y):
        seen.append((set(train["source_dataset"]), len(test)))
        return np.zeros(len(test))

    bank = _synthetic()
    images = _synthetic(seed=1).assign(source_dataset=lambda f: f.source_dataset.map(
        {"MNIST": "clipart", "FashionMNIST": "stamps", "digits": "stamps"}), task=lambda f: "img-" + f.task)
    monkeypatch.setattr(recommenders, "LEARNED", {"spy": spy})
    predicted = recommenders.predictions(images, recommenders.FROM_BANK, bank)
    assert seen == [({"MNIST", "FashionMNIST", "digits"}, len(images))] and (predicted["spy"] == 0).all()
    with pytest.raises(DataError, match="give the records to train on"):
        recommenders.predictions(images, recommenders.FROM_BANK)
    with pytest.raises(DataError, match="give the records to train on"):
        recommenders.predictions(images, "leave one task out", bank)


def test_a_bank_of_other_images_is_evaluated_also_trained_on_the_built_in_bank():
    bank, images = _synthetic(), _synthetic(seed=1)
    images = images.assign(source_dataset="clipart", task="clipart-" + images["task"])
    table = recommenders.evaluate(images, bank=bank)  # one dataset: nothing to leave out but tasks
    assert list(table.columns.levels[0]) == sorted(["leave one task out", recommenders.FROM_BANK])
    assert table.loc["logme", (recommenders.FROM_BANK, "weighted_tau")] == pytest.approx(1.0)
    assert table.loc["gradient boosting", (recommenders.FROM_BANK, "weighted_tau")] > 0.5  # the bank's lesson holds
    assert recommenders.tau_difference(table, "logme", "leep", recommenders.FROM_BANK)["difference"] > 1


def test_family_wins_counts_each_tasks_best_family_and_says_so():
    from functions.notebooks.zoo import family_verdict, family_wins
    rows = [("a", "t1", "ImageNet", 0.9), ("a", "t1", "CNN", 0.5), ("a", "t1", "CNN", 0.7),
            ("a", "t2", "ImageNet", 0.6), ("a", "t2", "CNN", 0.6), ("b", "t3", "CNN", 0.4), ("b", "t3", "ImageNet", 0.2)]
    table = family_wins(pd.DataFrame(rows, columns=["source_dataset", "task", "family", "accuracy"]))
    assert table.loc[("a", "ImageNet"), "tasks_won"] == 1.0 and table.loc[("a", "CNN"), "tasks_won"] == 0.5  # t2 a tie
    assert table.loc[("a", "CNN"), "best_model_accuracy"] == pytest.approx((0.7 + 0.6) / 2)
    assert table.loc[("a", "CNN"), "mean_accuracy"] == pytest.approx(0.6)
    assert table.loc[("b", "ImageNet"), "tasks_won"] == 0.0 and table.loc[("b", "CNN"), "tasks_won"] == 1.0
    assert family_verdict(table).splitlines() == [
        "a: the ImageNet models' best wins 100% of the tasks, at 0.750 on average, against 0.650 for the best CNN "
        "(50% of the tasks).",
        "b: the CNN models' best wins 100% of the tasks, at 0.400 on average, against 0.200 for the best ImageNet "
        "(0% of the tasks)."]
