"""Each zoo model by feature extraction (at its last stage, and at the stage chosen on validation)
and by fine-tuning on a sample of the bank's tasks: which tasks, the validation images the choices
are made on, the records (real committed study models on real pools), and the candidates a
recommendation weighs with their costs."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from functions.__main__ import main
from functions.analysis.model_zoo import files, matrix, ways
from functions.core.errors import DataError
from functions.data import task_bank
from functions.models import zoo_catalog
from functions.runs import zoo, zoo_matrix, zoo_ways
from functions.runs.cost import CostMeter
from functions.train.classifiers import FeatureClassifier

MODELS = ["mnist_0-4_d6_w16", "fashion_all_d6_w16"]


def test_ways_tasks_spread_over_class_counts_at_each_datasets_fewest_images():
    chosen = zoo_ways.ways_tasks(task_bank.bank())
    assert [t.dataset for t in chosen] == [d for d in task_bank.BANK_DATASETS for _ in range(zoo_ways.TASKS_PER_DATASET)]
    for dataset in task_bank.BANK_DATASETS:
        own = [t for t in chosen if t.dataset == dataset]
        assert {t.per_class for t in own} == {10}
        counts = [len(t.classes) for t in own]
        assert counts == sorted(counts) and counts[0] == 2 and counts[-1] == 10


def test_a_task_whose_draw_takes_a_class_whole_is_not_fine_tuned():
    toy = SimpleNamespace(train_y=np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]))
    whole = task_bank.TaskSpec("toy", (0, 1), 6)  # 3 of class 0's 3 images: none left to stop on
    room = task_bank.TaskSpec("toy", (1, 2), 6)
    assert zoo_ways.ways_tasks([whole, room], {"toy": toy}) == [room]
    assert zoo_ways.ways_tasks([whole], {"toy": toy}) == []
    with pytest.raises(DataError, match="takes every training image of class 0"):
        zoo_ways.validation_rows(whole, np.arange(3), toy)


def test_validation_images_come_from_outside_the_draw():
    task = zoo_ways.ways_tasks(task_bank.bank())[1]
    data = task_bank.pool(task.dataset)
    train, _ = task_bank.task_rows(task, zoo_ways.DRAW, data)
    val = zoo_ways.validation_rows(task, train, data)
    labels = data.train_y.numpy()
    assert not set(val) & set(train) and set(labels[val]) == set(task.classes)
    assert np.bincount(labels[val])[list(task.classes)].tolist() == [zoo_ways.VAL_PER_CLASS] * len(task.classes)
    assert list(val) == list(zoo_ways.validation_rows(task, train, data))  # seeded


@pytest.fixture(scope="module")
def measured():
    """Two committed study models, both ways, on the first two sampled tasks of MNIST and FashionMNIST."""
    sample = zoo_ways.ways_tasks(task_bank.bank())
    tasks = [t for t in sample if t.dataset != "digits"][::3][:3]
    with CostMeter() as meter:
        rows = [r for name in MODELS for r in zoo_ways.model_ways(zoo_catalog.zoo_model(name), tasks, meter,
                                                                  log=lambda *_: None)]
    return pd.DataFrame(rows), tasks


def test_every_way_sees_the_same_draw_and_is_charged_what_adapting_costs(measured):
    frame, tasks = measured
    assert len(frame) == len(MODELS) * len(tasks) * 3 and set(frame["way"]) == set(zoo_ways.WAYS)
    assert frame["accuracy"].between(0, 1).all() and (frame["adapt_seconds_per_image"] > 0).all()
    # the probe's accuracy is the matrix's own on draw 0
    net = zoo.network(zoo_catalog.zoo_model(MODELS[0]))
    feats = zoo.pool_features(net, tasks[0].dataset)
    fe = frame[(frame["model"] == MODELS[0]) & (frame["task"] == tasks[0].name) & (frame["way"] == "FE")].iloc[0]
    assert fe["accuracy"] == pytest.approx(zoo_matrix.linear_probe(feats, tasks[0], 0)[0])
    # FE: one forward pass per training image; FT: more, since it trains and validates each epoch
    flops = zoo.metadata(zoo_catalog.zoo_model(MODELS[0]), net)["flops"] / 1e9
    assert fe["adapt_gflops_per_image"] == pytest.approx(flops)
    tuned = frame[frame["way"] == "FT"]
    assert tuned["epochs"].between(1, zoo_ways.RECIPE["max_epochs"]).all()
    assert (tuned["n_val"] == tuned["num_classes"] * zoo_ways.VAL_PER_CLASS).all()
    paired = frame.pivot_table(index=["model", "task"], columns="way", values="adapt_gflops_per_image")
    assert (paired["FT"] > paired["FE"]).all()
    assert tuned["protocol"].str.contains("block5 to block6 fine-tuned \\(4 of 6 frozen\\)").all()
    assert frame.loc[frame["way"] == "FE", "protocol"].str.contains("linear probe").all()


def test_the_stage_is_chosen_on_validation_images_alone(measured):
    frame, tasks = measured
    net = zoo.network(zoo_catalog.zoo_model(MODELS[0]))
    layered = frame[(frame["model"] == MODELS[0]) & (frame["way"] == "FE-layer")].set_index("task")
    assert layered["layer"].isin(net.backbone.layer_names).all() and layered["val_accuracy"].between(0, 1).all()
    task = tasks[0]
    data = task_bank.pool(task.dataset)
    train, _ = task_bank.task_rows(task, zoo_ways.DRAW, data)
    val = zoo_ways.validation_rows(task, train, data)
    y_train, y_val = (task_bank.task_labels(task, data.train_y.numpy()[rows], data) for rows in (train, val))
    by_hand = []  # each stage's probe scored on the validation images, the test split never seen
    for features_train, features_val in zip(zoo_ways.stage_features(net, data.train_x[train]),
                                            zoo_ways.stage_features(net, data.train_x[val])):
        probe = FeatureClassifier(zoo_matrix.PROBE, seed=0).fit(features_train, y_train)
        by_hand.append((probe.predict(features_val) == y_val).mean())
    best = max(i for i, score in enumerate(by_hand) if score == max(by_hand))  # the deepest of a tie
    assert layered.loc[task.name, "layer"] == net.backbone.layer_names[best]
    assert layered.loc[task.name, "val_accuracy"] == pytest.approx(max(by_hand))
    assert layered["protocol"].str.contains("stage whose probe scores best on 5 validation images").all()


def test_gains_pair_fine_tuning_with_feature_extraction_by_model_and_task():
    rows = []
    for model, family, fe, ft in (("a", "x", [0.5, 0.6, 0.7], [0.6, 0.8, 0.6]), ("b", "y", [0.9, 0.9], [0.8, 0.7])):
        for i, (e, t) in enumerate(zip(fe, ft)):
            for way, accuracy, gflops, seconds in (("FE", e, 1.0, 0.1), ("FT", t, 4.0, 0.5)):
                rows.append({"model": model, "family": family, "task": f"t{i}", "way": way, "accuracy": accuracy,
                             "adapt_gflops_per_image": gflops, "adapt_seconds_per_image": seconds})
    rows.append({**rows[-1], "way": "FE-layer", "task": "t9"})  # another way, and a task not measured both ways
    table = ways.gains(pd.DataFrame(rows))
    assert table.loc["x", "gain"] == pytest.approx(np.mean([0.1, 0.2, -0.1])) and table.loc["y", "pairs"] == 2
    assert table.loc["x", "wins"] == pytest.approx(2 / 3) and table.loc["y", "wins"] == 0
    assert table.loc["y", "gflops_ratio"] == 4 and table.loc["y", "seconds_ratio"] == pytest.approx(5)
    assert table.loc["y", "ci95_high"] < 0
    assert "y: fine-tuning (last two stages) loses to feature extraction (linear probe)" in ways.verdict(table)


def test_candidates_weigh_each_model_both_ways_and_the_budget_picks_the_best_affordable():
    probe = pd.DataFrame({"model": ["small", "big"], "accuracy_predicted": [0.7, 0.72], "low": [0.6, 0.62],
                          "high": [0.8, 0.82]})
    tuned = probe.assign(accuracy_predicted=[0.75, 0.9], low=[0.65, 0.8], high=[0.85, 1.0])
    cost = pd.DataFrame({"model": ["small", "small", "big"], "way": ["FE", "FT", "FT"],
                         "adapt_seconds_per_image": [0.001, 0.01, 0.5], "adapt_gflops_per_image": [0.01, 0.05, 8.0],
                         "adapt_mwh_per_image": [1e-3, 1e-2, 1.0]}).set_index(["model", "way"])
    task = pd.DataFrame({"model": ["small", "big"], "flops": [1e7, 2e9], "extraction_ms_per_image": [0.1, 40.0]})
    table = ways.candidates(probe, {"FT": tuned}, cost, task).set_index(["model", "way"])
    assert len(table) == 4
    assert table.loc[("big", "FE"), "adapt_gflops_per_image"] == 2.0  # no measured cost: its forward pass
    assert table.loc[("big", "FE"), "adapt_seconds_per_image"] == pytest.approx(0.04)
    # the big model's features cost more than fine-tuning the small one, which is predicted more accurate
    assert table["pareto"].to_dict() == {("big", "FT"): True, ("small", "FT"): True, ("big", "FE"): False,
                                         ("small", "FE"): True}
    flat = table.reset_index()
    assert ways.choose_within(flat, 0.05)[["model", "way"]].tolist() == ["small", "FT"]
    assert ways.choose_within(flat, 10)[["model", "way"]].tolist() == ["big", "FT"]
    assert ways.choose_within(flat, 0.001) is None
    assert len(ways.candidates(probe, {}, cost.iloc[:0], task)) == 2  # nothing measured another way: FE alone


def test_ways_files_merge_and_the_recommendation_weighs_fine_tuning(measured, output_root, capsys):
    frame, tasks = measured
    records, _ = zoo_matrix.build([zoo_catalog.zoo_model(n) for n in MODELS],
                                  list(dict.fromkeys([t for t in task_bank.bank() if t.n_train <= 150][::4] + tasks)),
                                  matrix.scores,
                                  seeds=1, log=lambda *_: None)
    files.save(records)
    others = frame["way"] != "FE-layer"
    files.save_ways(frame[others].drop(columns="layer").iloc[:2])
    path = files.save_ways(frame[others].drop(columns="layer"))  # a second save adds the missing rows
    files.save_ways(frame[~others])  # a way with a column of its own keeps the others' rows
    assert len(pd.read_csv(path)) == len(frame) and files.load_every_ways().shape[0] == len(frame)
    from functions.notebooks import zoo as zoo_steps
    known = tasks[0].name
    table = zoo_steps.recommend_model(known, log=lambda *_: None)
    candidates = table.attrs["candidates"]
    assert set(candidates["way"]) == set(zoo_ways.WAYS) and len(candidates) == 3 * len(MODELS)
    tuned = candidates[candidates["way"] == "FT"].set_index("model")
    measured_here = frame[(frame["task"] == known) & (frame["way"] == "FT")].set_index("model")["accuracy"]
    assert tuned["measured_accuracy"].to_dict() == measured_here.to_dict()
    assert ((candidates["low"] <= candidates["accuracy_predicted"]) &
            (candidates["accuracy_predicted"] <= candidates["high"])).all()
    assert main(["recommend-model", "--task", known, "--budget-gflops", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert ("every model each way (feature extraction (linear probe); feature extraction at the stage chosen on "
            "validation; fine-tuning (last two stages))") in out
    assert "within 1e-09 GFLOPs per training image: nothing; the cheapest choice costs" in out
