"""The notebooks' re-check: stored runs trained again from scratch come back as the sweep made them."""
import pytest

from functions.config import Config, Grid, get_setup
from functions.core.atomic import write_json_atomic
from functions.notebooks import study
from functions.runs import store, sweep

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


def test_stored_runs_come_back_exactly_when_trained_again(swept, monkeypatch):
    root, plans = swept
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(root))
    for cfg, cut in ((plans["F"][1], 1), (plans["FR"][1], 1), (CFG, -1)):
        for repeat in (0, 1):
            check = study.recheck_run(SETUP, cfg, cut, 0.002, repeat, device="cpu")
            assert check["test_acc"] == check["stored_test_acc"], (cfg.mode, cut, repeat)
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
        assert table.loc["baseline", "trained again"] == f"{true_acc:.3f}"
    finally:
        write_json_atomic(path, [params, *records])


def test_parameter_table_lists_later_parameters_only_away_from_their_old_value():
    from functions.notebooks.study import parameter_table, plan
    quick = parameter_table(*plan("MNIST", None, "quick", "FR")[1:])
    one_pass = parameter_table(*plan("MNIST", None, "quick", "FR", overrides={"min_steps_per_epoch": 1})[1:])
    assert quick.loc["min_steps_per_epoch", "value"] == "100" and "precision" not in quick.index
    assert "min_steps_per_epoch" not in one_pass.index  # the value every file had before the parameter
    assert quick.loc["num_channels", "value"] == "16" and quick.loc["percentages", "value"] == "[0.01, 0.05]"
