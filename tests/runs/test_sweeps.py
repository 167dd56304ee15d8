import json
import shutil

import pytest
import torch

from functions.analysis import summary
from functions.core import atomic
from functions.runs import pretrained, store, sweep
from functions.config import Config, Grid, get_setup
from functions.core.errors import DataError, Interrupted

SETUP = get_setup("MNIST", "regular")
CFG = Config(num_channels=4, depth=2, num_train=2, num_train_pretrain=1, batch_size=64, early_stop_patience=2)
GRID = Grid((0.002,), (0, 1, 2), {0.002: 2})


@pytest.fixture(scope="session")
def source_models(tmp_path_factory):
    """Pretrain the small source model once; tests copy it instead of retraining it."""
    root = tmp_path_factory.mktemp("source")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFER_OUTPUT_ROOT", str(root))
        pretrained.load_pretrained(SETUP, CFG, log=lambda *_: None)
    return root / "MNIST" / "pretrained_models"


@pytest.fixture
def output_root(output_root, source_models):
    shutil.copytree(source_models, output_root / "MNIST" / "pretrained_models")
    return output_root


def _without_seconds(path):
    params, records = store.load_results(path)
    return params, [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_sweep_writes_contract_files_and_is_deterministic(output_root, source_models, tmp_path_factory,
                                                         monkeypatch):
    first = sweep.run_sweep(SETUP, CFG, GRID, progress=False, log=lambda *_: None)
    params, records = store.load_results(first["results"])
    assert params == CFG.params() and len(records) == 6
    assert {(r["sampled_cut_point"], r["repeat"]) for r in records} == {(c, r) for c in (0, 1, 2) for r in (0, 1)}
    assert all({"lr", "sampled_percentage", "train_acc", "test_acc", "val_acc", "status"} <= set(r) for r in records)
    base_params, baselines = store.load_results(first["baselines"])
    assert [r["sampled_cut_point"] for r in baselines] == [-1, -1] and "reinit" not in base_params
    json.loads(first["results"].read_text())  # plain JSON

    other = tmp_path_factory.mktemp("again")
    shutil.copytree(source_models, other / "MNIST" / "pretrained_models")
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(other))
    second = sweep.run_sweep(SETUP, CFG, GRID, progress=False, log=lambda *_: None)
    for kind in ("results", "baselines"):
        assert _without_seconds(first[kind]) == _without_seconds(second[kind])


def test_interrupted_sweep_resumes_without_lost_or_duplicated_runs(output_root, monkeypatch):
    train_group, cells = sweep.train_group, []

    def interrupted_in_third_cell(*args):
        cells.append(args[3])
        if len(cells) == 3:
            raise KeyboardInterrupt  # as Ctrl-C while the cell at cut 2 trains
        return train_group(*args)

    monkeypatch.setattr(sweep, "train_group", interrupted_in_third_cell)
    with pytest.raises(Interrupted, match="4 runs are saved .* re-running the same command resumes"):
        sweep.run_sweep(SETUP, CFG, GRID, progress=False, log=lambda *_: None)
    path = store.results_path("MNIST", "results", "regular", "FR")
    assert [(r["sampled_cut_point"], r["repeat"]) for r in store.load_results(path)[1]] == \
        [(0, 0), (0, 1), (1, 0), (1, 1)]
    monkeypatch.setattr(sweep, "train_group", train_group)
    resumed = []
    sweep.run_sweep(SETUP, CFG, GRID, progress=False, log=lambda *_: None, on_run=resumed.append)
    assert [r["sampled_cut_point"] for r in resumed] == [2, 2, -1, -1]
    records = store.load_results(path)[1]
    keys = [(r["sampled_cut_point"], r["repeat"]) for r in records]
    assert sorted(keys) == sorted({(c, r) for c in (0, 1, 2) for r in (0, 1)})


def test_an_interrupted_cut_point_keeps_the_cells_it_finished(output_root, monkeypatch):
    """Two percentages at one cut point are two cells: Ctrl-C in the second keeps the first."""
    train_group, cells = sweep.train_group, []

    def interrupted_in_second_cell(*args):
        cells.append(args[4])
        if len(cells) == 2:
            raise KeyboardInterrupt
        return train_group(*args)

    monkeypatch.setattr(sweep, "train_group", interrupted_in_second_cell)
    with pytest.raises(Interrupted, match="1 runs are saved"):
        sweep.run_sweep(SETUP, CFG, Grid((0.002, 0.004), (2,), {0.002: 1, 0.004: 1}), progress=False,
                        log=lambda *_: None)
    saved = store.load_results(store.results_path("MNIST", "results", "regular", "FR"))[1]
    assert [(r["sampled_cut_point"], r["sampled_percentage"]) for r in saved] == [(2, 0.002)]


def test_results_file_with_other_parameters_is_refused_naming_the_keys(output_root):
    sweep.run_sweep(SETUP, CFG, Grid((0.002,), (2,), {0.002: 1}), progress=False, log=lambda *_: None)
    with pytest.raises(DataError, match=r"different parameters \(lr_fine_tune: file 0.001 vs now 0.01"):
        sweep.run_sweep(SETUP, CFG.replace(lr_fine_tune=0.01), Grid((0.002,), (2,), {0.002: 1}),
                              progress=False, log=lambda *_: None)


def _rewrite_params(path, edit):
    params, records = store.load_results(path)
    atomic.write_json_atomic(path, [edit(dict(params)), *records])


def test_file_written_before_a_parameter_existed_resumes_when_its_old_value_is_asked(output_root, monkeypatch):
    """Files from before ``schema_version`` and before a parameter was added resume; the missing
    parameter counts as the value the old code used, and nothing is retrained."""
    small = Grid((0.002,), (2,), {0.002: 1})
    paths = sweep.run_sweep(SETUP, CFG, small, progress=False, log=lambda *_: None)
    drop = lambda params: {k: v for k, v in params.items() if k not in ("schema_version", "reinit_both_dense")}
    for path in paths.values():
        _rewrite_params(path, drop)
    # as if reinit_both_dense had been added after these files, its default being the old behaviour
    monkeypatch.setattr(sweep, "LEGACY_VALUES", {"reinit_both_dense": True})
    trained = []
    sweep.run_sweep(SETUP, CFG, Grid((0.002,), (2,), {0.002: 2}), progress=False, log=lambda *_: None,
                    on_run=trained.append)
    assert [(r["sampled_cut_point"], r["repeat"]) for r in trained] == [(2, 1), (-1, 1)]
    params, records = store.load_results(paths["results"])
    assert params == CFG.params() and params["schema_version"] == 2 and len(records) == 2

    _rewrite_params(paths["results"], drop)
    with pytest.raises(DataError, match=r"reinit_both_dense: file True vs now False"):
        sweep.run_sweep(SETUP, CFG.replace(reinit_both_dense=False), small, progress=False, log=lambda *_: None)
    monkeypatch.setattr(sweep, "LEGACY_VALUES", {})
    with pytest.raises(DataError, match=r"reinit_both_dense: file None vs now True"):
        sweep.run_sweep(SETUP, CFG, small, progress=False, log=lambda *_: None)


def test_committed_results_files_resume_under_the_current_parameters():
    """Every committed sweep file still matches the parameters its profile gives today, with the
    folder's own settings (those its notebooks and `make` run with)."""
    from functions.core.paths import REPO_ROOT
    from functions.notebooks.study import plan
    from functions.config import folder_settings
    checked = 0
    for path in sorted(REPO_ROOT.glob("*/results/results_*_*.json")):
        folder, (_, setup, mode) = path.parts[-3], path.stem.split("_", 2)
        _, cfg, _ = plan(folder, setup, "quick", mode, overrides=folder_settings(folder))
        found, _ = store.load_results(path)
        store.refuse_other_parameters(path, found, cfg.params(), sweep.LEGACY_VALUES)
        checked += 1
    assert checked >= 15


def test_diverging_run_is_recorded_and_the_sweep_goes_on(output_root):
    cfg = CFG.replace(lr_fine_tune=1e12)
    paths = sweep.run_sweep(SETUP, cfg, Grid((0.002,), (0, 2), {0.002: 1}), baselines=False,
                                  progress=False, log=lambda *_: None)
    records = store.load_results(paths["results"])[1]
    assert len(records) == 2 and "diverged" in {r["status"] for r in records}


def test_pretrained_model_is_reused_when_the_config_matches(output_root):
    logs = []
    pretrained.load_pretrained(SETUP, CFG, log=logs.append)
    assert logs == []
    with pytest.raises(DataError, match="no pretrained model"):
        pretrained.load_pretrained(SETUP, CFG.replace(num_channels=5), train_if_missing=False)
    assert pretrained.pretrained_path(SETUP, CFG) != pretrained.pretrained_path(SETUP, CFG.replace(depth=3))


def test_upstream_results_files_load_with_the_same_reader(tmp_path):
    upstream = [{"depth": 6, "activation_function": "<class 'torch.nn.modules.activation.ReLU'>",
                 "pre_train_classes": [0, 1, 8, 9], "fine_tune_classes": [2, 3, 4, 5, 6, 7], "reinit": True},
                {"lr": 0.001, "sampled_percentage": 0.001, "sampled_cut_point": 0, "repeat": 0,
                 "train_acc": 0.375, "test_acc": 0.2961}]
    path = tmp_path / "cuts_reverse_classes_FR.json"
    path.write_text(json.dumps(upstream))
    params, records = store.load_results(path)
    assert params["depth"] == 6 and records[0]["test_acc"] == 0.2961
    assert "cut 0" in summary.summary_table(summary.records_frame(path)).index


@pytest.mark.parametrize("changes, message", [
    ({"fine_tune_classes": (3, 4, 5)}, r"share \[3, 4\]"),
    ({"pre_train_classes": ()}, "empty"),
    ({"fine_tune_classes": (5, 5)}, "more than once"),
    ({"fine_tune_classes": (5, 12)}, "out of range"),
])
def test_bad_class_setups(changes, message):
    with pytest.raises(DataError, match=message):
        CFG.replace(**changes)


def test_cross_dataset_classes_may_share_labels():
    assert Config(source_dataset="MNIST", target_dataset="FashionMNIST", pre_train_classes=tuple(range(10)),
                  fine_tune_classes=tuple(range(10))).mode == "FR"


def test_unknown_folder_setup_and_bad_grid():
    with pytest.raises(DataError, match="unknown dataset folder"):
        get_setup("SVHN", "regular")
    with pytest.raises(DataError, match="unknown setup 'reverse' for MNIST"):
        get_setup("MNIST", "reverse")
    with pytest.raises(DataError, match=r"outside \(0, 1\]"):
        Grid((0.0,), (0,), {})
    with pytest.raises(DataError, match="outside 0..2"):
        sweep.run_sweep(SETUP, CFG, Grid((0.002,), (3,), {0.002: 1}), progress=False)


def test_notebook_steps_train_on_the_device_they_are_given(output_root):
    from functions.notebooks import study
    sweep.run_sweep(SETUP, CFG, Grid((0.002,), (1,), {0.002: 1}), progress=False, log=lambda *_: None)
    check = study.recheck_run(SETUP, CFG, cut_point=1, percentage=0.002, repeat=0, device="cpu")
    assert check["reproduced"] and check["compared"] == "float32 within 0.01"
    model = study.fine_tuned_model(SETUP, CFG, 1, 0.002, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    for step in (lambda: study.recheck_run(SETUP, CFG, cut_point=1, percentage=0.002, repeat=0, device="nodevice"),
                 lambda: study.fine_tuned_model(SETUP, CFG, 1, 0.002, device="nodevice")):
        with pytest.raises(RuntimeError, match="nodevice"):
            step()


def test_baseline_and_every_cut_point_of_a_repeat_train_on_the_same_images(output_root, monkeypatch):
    """The paired tests compare a cut point with the baseline repeat by repeat: both must see one subset."""
    grid = Grid((0.002, 0.004), (0, 2), {0.002: 2, 0.004: 1})
    cells, handed = [], []
    train_group, fit_group = sweep.train_group, sweep.fit_group

    def recording_train_group(cfg, task, pretrained, cut_point, runs, inputs):
        cells.append((cut_point, list(runs)))
        return train_group(cfg, task, pretrained, cut_point, runs, inputs)

    def recording_fit_group(models, trains, *args, **kwargs):
        handed.append([view.index.clone() for view in trains])
        return fit_group(models, trains, *args, **kwargs)

    monkeypatch.setattr(sweep, "train_group", recording_train_group)
    monkeypatch.setattr(sweep, "fit_group", recording_fit_group)
    sweep.run_sweep(SETUP, CFG, grid, progress=False, log=lambda *_: None)
    assert len(cells) == len(handed) == 3 * 2  # (baseline, cut 0, cut 2) x two percentages

    images: dict = {}  # (percentage, repeat) -> {cut point: indices into the training split}
    for (cut_point, runs), indices in zip(cells, handed):
        assert len(runs) == len(indices)
        for (percentage, repeat), index in zip(runs, indices):
            images.setdefault((percentage, repeat), {})[cut_point] = index
    assert sorted(images) == [(0.002, 0), (0.002, 1), (0.004, 0)]
    labels = CFG.target_task().train.y
    for (percentage, repeat), by_cut in images.items():
        assert sorted(by_cut) == [-1, 0, 2]
        baseline = by_cut[-1]
        per_class = int(percentage * len(labels) / 5)
        assert torch.bincount(labels[baseline], minlength=5).tolist() == [per_class] * 5
        for cut_point in (0, 2):
            assert torch.equal(by_cut[cut_point], baseline), (percentage, repeat, cut_point)
    assert not torch.equal(images[(0.002, 0)][-1], images[(0.002, 1)][-1])


def test_source_model_is_pretrained_on_the_source_classes(output_root):
    """The source model learnt digits 0-4 (not the target digits 5-9) on the source task's training split."""
    from functions.train.trainer import accuracy
    model = pretrained.load_pretrained(SETUP, CFG, log=lambda *_: None)
    info = pretrained.pretrained_info(SETUP, CFG)
    source = CFG.source_task()
    assert source.classes == list(CFG.pre_train_classes) == [0, 1, 2, 3, 4]
    assert info["config"]["pre_train_classes"] == [0, 1, 2, 3, 4]
    assert model.fc.out_features == len(CFG.pre_train_classes)
    measured = accuracy(model, source.test)
    assert measured > 0.8  # chance is 0.2
    assert info["test_acc"] == pytest.approx(measured, abs=1e-9)
    assert info["n_train"] == len(source.train) != len(CFG.target_task().train)



@pytest.mark.parametrize("mode", ["FR-tuned", "bitfit-tuned"])
def test_a_tuned_mode_keeps_per_run_the_learning_rate_with_the_best_validation_accuracy(mode, output_root):
    cfg = CFG.with_mode(mode)
    assert cfg.mode == mode and len(cfg.learning_rates) == 3
    grid = Grid((0.002,), (1,), {0.002: 2})
    path = sweep.run_sweep(SETUP, cfg, grid, baselines=False, progress=False, log=lambda *_: None)["results"]
    params, records = store.load_results(path)
    assert path.name == f"results_regular_{mode}.json" and params["lr_fine_tunes"] == list(cfg.learning_rates)
    for record in records:
        candidates = {lr: record[f"val_acc_lr{lr:g}"] for lr in cfg.learning_rates}
        assert record["val_acc"] == max(candidates.values()) and record["lr"] == record["chosen_lr"]
        assert record["chosen_lr"] == next(lr for lr, acc in candidates.items() if acc == record["val_acc"])
        # the chosen candidate is the run its rate alone makes: same seeds, same subset
        alone = cfg.as_chosen(record)
        assert alone.learning_rates == (record["chosen_lr"],) and alone.mode == mode.removesuffix("-tuned")
        task = alone.target_task()
        source = pretrained.load_pretrained(SETUP, alone, log=lambda *_: None)
        (_, again), = sweep.train_group(alone, task, source, 1, [(0.002, record["repeat"])],
                                        sweep.run_inputs(alone, task, source, 1, "cpu"))
        assert again.val_acc == record["val_acc"] and again.test_acc == pytest.approx(record["test_acc"], abs=0.01)


def test_only_the_fine_tuning_and_aligning_modes_choose_a_learning_rate_and_older_files_resume():
    from functions.config import LEGACY_VALUES, TUNED_LEARNING_RATES
    assert Config().with_mode("lora_r2-tuned").mode == "lora_r2-tuned"
    dann = Config().with_mode("dann-tuned")
    assert dann.mode == "dann-tuned" and dann.learning_rates == TUNED_LEARNING_RATES and dann.batch_norm
    for mode in ("adabn-tuned", "distill-tuned", "nothing-tuned"):
        with pytest.raises(DataError, match="choose their learning rate"):
            Config().with_mode(mode)
    with pytest.raises(DataError, match="does not choose its learning rate"):
        Config().with_mode("source_only").replace(lr_fine_tunes=(0.001, 0.01))
    with pytest.raises(DataError, match="lr_fine_tunes"):
        Config().replace(lr_fine_tunes=(0.001, 0.0))
    untuned = Config().with_mode("FR").params()
    older = {k: v for k, v in untuned.items() if k != "lr_fine_tunes"}  # a file written before the list
    assert store.differing_keys(older, untuned, LEGACY_VALUES) == []
    assert "lr_fine_tunes" not in sweep.baseline_params(Config().with_mode("FR-tuned"))
