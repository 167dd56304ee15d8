"""The cut-point study on a backbone and a folder of images: the grid, the records, the shared
frozen prefix, resuming, and the command line."""
import pytest

from functions.__main__ import main
from functions.config import REGULARISER_WEIGHTS
from functions.train import finetune
from functions.runs.backbone_study import CutStudy, CutStudySettings, Size, StrategySettings, grid
from functions.runs.store import load_results

SETTINGS = CutStudySettings(input_size=32, max_epochs=2, patience=2, min_steps_per_epoch=2, batch_size=4)


def test_a_sweep_writes_the_studys_records_with_paired_subsets_and_resumes(paints, monkeypatch):
    staged_at = []
    real_staged = finetune.staged
    monkeypatch.setattr(finetune, "staged", lambda b, x, k: staged_at.append(k) or real_staged(b, x, k))
    study = CutStudy(paints, "FR", SETTINGS, log=lambda *_: None)
    assert study.folder == "Paints"
    sweep = grid(per_class=(2,), fractions=(1.0,), cut_points=(9, 1), repeats=2)
    trained = []
    paths = study.run(sweep, progress=False, on_run=trained.append)
    assert len(trained) == 2 * 2 * 3  # (baseline, cut 1, cut 9) x 2 sizes x 2 repeats
    # each cut point's frozen prefix is computed once for the training, validation and test images
    assert staged_at == [0] * 3 + [1] * 3 + [9] * 3
    params, records = load_results(paths["results"])
    assert params["mode"] == "FR" and params["stages"][0] == "stem" and params["input_size"] == 32
    assert {(r["sampled_cut_point"], r["stage"]) for r in records} == {(1, "stem"), (9, "head")}
    _, baselines = load_results(paths["baselines"])
    assert {r["sampled_cut_point"] for r in baselines} == {-1}
    for record in records + baselines:
        assert {"sampled_percentage", "sampled_cut_point", "repeat", "test_acc", "val_acc", "samples_per_class",
                "trainable_params", "epochs", "n_train"} <= set(record)
        assert 0.0 <= record["test_acc"] <= 1.0
    pool = len(study.task.train)
    whole = [r for r in records + baselines if r["samples_per_class"] is None]
    assert {r["n_train"] for r in whole} == {pool} and {r["sampled_percentage"] for r in whole} == {1.0}
    two = [r for r in records + baselines if r["samples_per_class"] == 2]
    assert {r["n_train"] for r in two} == {6}
    # the head alone trains at the last cut; the whole network, new, in the baseline
    assert {r["trainable_params"] for r in records if r["sampled_cut_point"] == 9} == {1281 * 3}
    assert min(r["trainable_params"] for r in baselines) > 3_000_000
    # resumed: nothing trains again; a lost run is trained again alone, the same as before
    again = []
    assert study.run(sweep, progress=False, on_run=again.append) == paths and again == []
    kept = [r for r in records if not (r["sampled_cut_point"] == 9 and r["repeat"] == 1
                                       and r["samples_per_class"] == 2)]
    import json
    paths["results"].write_text(json.dumps([params, *kept]))
    fresh = CutStudy(paints, "FR", SETTINGS, log=lambda *_: None)
    fresh.run(sweep, progress=False, on_run=again.append)
    lost = next(r for r in records if r not in kept)
    assert len(again) == 1 and again[0]["test_acc"] == lost["test_acc"] and again[0]["val_acc"] == lost["val_acc"]


def test_other_settings_or_another_version_of_the_images_are_refused(paints):
    CutStudy(paints, "FT", SETTINGS, log=lambda *_: None).run(grid((1,), (), (9,), 1), progress=False)
    with pytest.raises(Exception, match="lr"):
        CutStudy(paints, "FT", CutStudySettings(**{**SETTINGS.__dict__, "lr": 0.01}), log=lambda *_: None)
    with pytest.raises(Exception, match=r"cut point 0 is outside 1\.\.9 for mode FT"):
        CutStudy(paints, "FT", SETTINGS, log=lambda *_: None).cells(grid((1,), (), (0,), 1))
    with pytest.raises(Exception, match=r"at most"):
        CutStudy(paints, "FT", SETTINGS, log=lambda *_: None).cells(grid((50,), (), (9,), 1))


def test_the_command_line_runs_the_study_on_a_folder_and_refuses_what_it_does_not_take(paints, capsys):
    options = ["--set", "input_size=32", "--set", "max_epochs=1", "--set", "min_steps_per_epoch=1"]
    assert main(["run", "--data", str(paints), "--mode", "F", "--cuts", "0", "9", "--per-class", "2",
                 "--repeats", "2", "--no-progress", *options]) == 0
    out = capsys.readouterr().out
    assert "Paints: efficientnet_lite0 at 32 px, mode F" in out and "Gain over the baseline" in out
    assert "results/real/results_efficientnet_lite0_F.json" in out
    for argv, message in [
        (["--mode", "dann"], "--mode dann is an adaptation method: give --source PATH"),
        (["--mode", "distill"], "mode 'distill' is not a mode of the study on a backbone; choose one of ['F', 'FR', 'FT', "
                              "'progressive', 'discriminative', 'lora_r4', 'ia3', 'bitfit', 'l2sp', 'delta', "
                              "'bss', 'F-tuned', "),
        (["--mode", "lora", "--set", "lr_decay=2"], "lr_decay"),
        (["--profile", "range"], "--profile range is not an option of the study on your own images"),
        (["--source", str(paints), "--executor", "ray"], "--executor ray is not an option of adaptation (--source)"),
        (["--set", "depth=3"], "depth"),
        (["--set", "max_epochs=0"], "max_epochs"),
    ]:
        assert main(["run", "--data", str(paints), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["run", "--backbone", "efficientnet_lite0"]) == 2
    assert "add --data PATH" in capsys.readouterr().err
    assert main(["run", "MNIST", "--per-class", "2"]) == 2
    assert "--per-class is an option of the study on your own images" in capsys.readouterr().err


STRATEGY_SETTINGS = StrategySettings(**SETTINGS.__dict__, stage_epochs=1)


def _one_run_at_cut_5(paints, mode: str, monkeypatch) -> tuple:
    """(study, its results' parameters, its one record, the stages the splits were staged at) of one
    run of ``mode`` at cut 5."""
    staged_at = []
    real_staged = finetune.staged
    monkeypatch.setattr(finetune, "staged", lambda b, x, k: staged_at.append(k) or real_staged(b, x, k))
    study = CutStudy(paints, mode, STRATEGY_SETTINGS, log=lambda *_: None)
    paths = study.run(grid(per_class=(2,), cut_points=(5,), repeats=1), baselines=False, progress=False)
    params, (record,) = load_results(paths["results"])
    assert paths["results"].name == f"results_efficientnet_lite0_{mode}.json"
    return study, params, record, staged_at


@pytest.mark.parametrize("mode", ["progressive", "discriminative", "lora_r2", "ia3", "bitfit"])
def test_each_fine_tuning_strategy_runs_on_the_backbone_from_the_stage_it_leaves_frozen(paints, mode, monkeypatch):
    study, params, record, staged_at = _one_run_at_cut_5(paints, mode, monkeypatch)
    assert params["mode"] == mode and params["strategy"] == mode.split("_")[0] and params["lr_decay"] == 0.5
    assert params.get("lora_rank") == (2 if mode == "lora_r2" else None)
    assert record["sampled_cut_point"] == 5 and record["stage"] == "block4" and 0 <= record["test_acc"] <= 1
    # progressive and discriminative never change the first 5 stages: they train from their output
    assert staged_at == [5 if mode in ("progressive", "discriminative") else 0] * 3
    # F at the same cut trains every stage after it; the adapters add a few weights before it
    f_trainable = CutStudy(paints, "F", SETTINGS, log=lambda *_: None).fine_tuned(5, Size(per_class=2))[1][
        "trainable_params"]
    if mode in ("progressive", "discriminative"):
        assert record["trainable_params"] == f_trainable
    else:
        assert record["trainable_params"] > f_trainable
    again = study.recheck(5, Size(per_class=2))
    assert again["reproduced"] and again["test_acc"] == record["test_acc"]


@pytest.mark.parametrize("mode", ["l2sp", "delta", "bss"])
def test_each_regulariser_trains_the_stages_after_the_cut_as_f_does_choosing_its_weight(paints, mode, monkeypatch):
    study, params, record, staged_at = _one_run_at_cut_5(paints, mode, monkeypatch)
    assert params["strategy"] == mode and params["regularisation_weights"] == list(REGULARISER_WEIGHTS[mode])
    assert staged_at == [5] * 3  # the stages before the cut stay frozen: their output is computed once
    assert record["chosen_weight"] in REGULARISER_WEIGHTS[mode] and 0 <= record["test_acc"] <= 1
    assert {f"val_acc_weight{w:g}" for w in REGULARISER_WEIGHTS[mode]} <= set(record)
    f_trainable = CutStudy(paints, "F", SETTINGS, log=lambda *_: None).fine_tuned(5, Size(per_class=2))[1][
        "trainable_params"]
    assert record["trainable_params"] == f_trainable
    assert study.recheck(5, Size(per_class=2))["test_acc"] == record["test_acc"]


def test_a_cut_modes_files_keep_only_the_cut_studys_settings_and_every_mode_shares_the_baselines(paints):
    study = CutStudy(paints, "F", STRATEGY_SETTINGS, log=lambda *_: None)
    assert not hasattr(study.settings, "lr_decay") and "strategy" not in study.files["results"].params
    lora = CutStudy(paints, "lora_r2", SETTINGS, log=lambda *_: None)
    assert lora.files["baselines"].params == study.files["baselines"].params
    assert lora.files["results"].params["lr_decay"] == 0.5 and lora.files["results"].params["lora_rank"] == 2


def test_the_new_head_has_its_own_rate_beside_a_stage_named_head():
    from functions.models.registry import create_backbone
    from functions.train.strategies import strategy_finetuner
    backbone = create_backbone("efficientnet_lite0", input_size=32)
    tuner = strategy_finetuner(backbone, "discriminative", 7, 3, 0, lr=1e-3, lr_decay=0.5)
    rates = {group["name"]: group["lr"] for group in tuner.param_groups()}
    assert rates == {"block7": 1e-3 * 0.5 ** 2, "head": 1e-3 * 0.5, "classifier": 1e-3}


def test_a_tuned_mode_runs_at_the_cut_its_untuned_runs_pick_and_keeps_the_best_rate_on_validation(paints, capsys):
    options = ["--set", "input_size=32", "--set", "max_epochs=1", "--set", "min_steps_per_epoch=1", "--no-progress",
               "--per-class", "2", "--no-baselines"]
    assert main(["run", "--data", str(paints), "--mode", "bitfit-tuned", "--at-chosen-cut", *options]) == 2
    assert "run the cut points there first (the same command with --mode bitfit" in capsys.readouterr().err
    # with its baselines: a tuned mode's runs share them (they train at the one rate)
    assert main(["run", "--data", str(paints), "--mode", "bitfit", "--cuts", "3", "7", "--repeats", "1",
                 *options[:-1]]) == 0
    _, untuned = load_results(paints.parent / "out/Paints/results/real/results_efficientnet_lite0_bitfit.json")
    picked = max(untuned, key=lambda r: r["val_acc"])["sampled_cut_point"]
    capsys.readouterr()
    assert main(["run", "--data", str(paints), "--mode", "bitfit-tuned", "--at-chosen-cut", "--repeats", "2",
                 "--set", "lrs=0.0003,0.003", *options]) == 0
    assert "mode bitfit-tuned" in capsys.readouterr().out
    params, records = load_results(paints.parent / "out/Paints/results/real/results_efficientnet_lite0_bitfit-tuned.json")
    assert params["lrs"] == [0.0003, 0.003] and "lrs" not in load_results(
        paints.parent / "out/Paints/results/real/results_efficientnet_lite0_bitfit.json")[0]
    assert {r["sampled_cut_point"] for r in records} == {picked} and len(records) == 2
    for record in records:
        rates = {lr: record[f"val_acc_lr{lr:g}"] for lr in (0.0003, 0.003)}
        assert record["val_acc"] == max(rates.values()) and rates[record["chosen_lr"]] == record["val_acc"]
        assert record["lr"] == record["chosen_lr"]
    settings = StrategySettings(input_size=32, max_epochs=1, min_steps_per_epoch=1, lrs=(0.0003, 0.003))
    study = CutStudy(paints, "bitfit-tuned", settings, log=lambda *_: None)
    again = study.recheck(picked, Size(per_class=2))
    assert again["reproduced"] and again["test_acc"] == records[0]["test_acc"]
