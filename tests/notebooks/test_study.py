"""The notebooks' re-check: stored runs trained again from scratch come back as the sweep made them,
to the float rounding between a run trained alone and the sweep's group of repeats."""
import pytest

from functions.config import Config, Grid, get_setup
from functions.core.atomic import write_json_atomic
from functions.notebooks import study
from functions.runs import store, sweep
from functions.runs.recheck import FLOAT32_TOLERANCE

SETUP = get_setup("MNIST", "regular")
CFG = Config(num_channels=4, depth=2, num_train=2, num_train_pretrain=1, batch_size=64, early_stop_patience=2)
GRID = Grid((0.002,), (1,), {0.002: 2})


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFER_OUTPUT_ROOT", str(root))
        plans = {mode: (SETUP, CFG.with_mode(mode), GRID) for mode in ("F", "FR")}
        for plan in plans.values():
            sweep.run_sweep(*plan, progress=False, log=lambda *_: None)
        yield root, plans


def test_stored_runs_come_back_when_trained_again_alone(swept, monkeypatch):
    root, plans = swept
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(root))
    for cfg, cut in ((plans["F"][1], 1), (plans["FR"][1], 1), (CFG, -1)):
        for repeat in (0, 1):  # each trained alone, not in the group of two the sweep trained
            check = study.recheck_run(SETUP, cfg, cut, 0.002, repeat, device="cpu")
            assert check["reproduced"] and abs(check["test_acc"] - check["stored_test_acc"]) <= FLOAT32_TOLERANCE
    table = study.recheck_table(SETUP, plans, cut_point=1, percentage=0.002, device="cpu")
    assert list(table.index) == ["F cut 1", "FR cut 1", "baseline"]
    assert (table["trained again"] == table["stored test accuracy"]).all()


def test_a_changed_result_prints_the_new_number(swept, monkeypatch, tmp_path):
    root, plans = swept
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(root))
    path = store.results_path("MNIST", "baselines", "regular")
    params, records = store.load_results(path)
    true_acc = next(r["test_acc"] for r in records if r["repeat"] == 0)
    shifted = [{**r, "test_acc": r["test_acc"] + 0.05} if r["repeat"] == 0 else r for r in records]
    write_json_atomic(path, [params, *shifted])
    try:
        table = study.recheck_table(SETUP, plans, cut_point=1, percentage=0.002, device="cpu")
        assert table.loc["baseline", "stored test accuracy"] == f"{true_acc + 0.05:.3f}"
        assert abs(float(table.loc["baseline", "trained again"]) - true_acc) <= FLOAT32_TOLERANCE
    finally:
        write_json_atomic(path, [params, *records])


def test_parameter_table_lists_later_parameters_only_away_from_their_old_value():
    from functions.notebooks.study import parameter_table, plan
    quick = parameter_table(*plan("MNIST", None, "quick", "FR")[1:])
    one_pass = parameter_table(*plan("MNIST", None, "quick", "FR", overrides={"min_steps_per_epoch": 1})[1:])
    assert quick.loc["min_steps_per_epoch", "value"] == "100" and "precision" not in quick.index
    assert "min_steps_per_epoch" not in one_pass.index  # the value every file had before the parameter
    assert quick.loc["num_channels", "value"] == "16" and quick.loc["percentages", "value"] == "[0.01, 0.05]"


def test_adaptation_features_show_both_networks_on_both_domains_and_the_float32_accuracy(output_root):
    import numpy as np
    from functions.runs.store import load_results
    short = {"num_train": 1, "min_steps_per_epoch": 3, "dann_weights": (1.0,)}
    setup, cfg, grid = study.plan("MNIST_to_digits", None, "quick", "dann", [0.05], 1, [6], overrides=short)
    (record,) = load_results(sweep.run_sweep(setup, cfg, grid, progress=False, baselines=False)["results"])[1]
    features, labels, line = study.adaptation_features(setup, cfg, 6, 0.05, 20, device="cpu")
    networks = ("before: the source network", "after: dann")
    assert set(features) == set(labels) == {(n, d) for n in networks for d in ("source", "target")}
    assert all(len(features[key]) == len(labels[key]) == 20 for key in features)
    # the same images through both networks: DANN's training moved the target's features
    assert (labels[networks[0], "target"] == labels[networks[1], "target"]).all()
    assert not np.allclose(features[networks[0], "target"], features[networks[1], "target"])
    assert line.endswith(f"(stored: {record['test_acc']:.3f})") and "dann at cut 6 trained again in float32" in line
