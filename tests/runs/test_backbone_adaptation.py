"""Domain adaptation of a cut backbone from one folder of images to another of the same classes:
the source model is the cut-point study's F run, each method's records, resuming, refusals and
the command line."""
import numpy as np
import pytest
from PIL import Image

from functions.__main__ import main
from functions.config import DANN_SCHEDULES, TUNED_LEARNING_RATES
from functions.notebooks.backbone_adaptation import chosen_cut
from functions.runs.backbone_adaptation import ALIGNMENT_WEIGHTS, AdaptationSettings, AdaptationStudy, candidates
from functions.runs.backbone_study import CutStudy, CutStudySettings, grid
from functions.runs.store import load_results

COMMON = dict(input_size=32, max_epochs=2, patience=2, min_steps_per_epoch=2, batch_size=4)
SETTINGS = AdaptationSettings(**COMMON, adapt_epochs=1, adapt_min_steps=2)


def _tints(root, labels=("red", "green", "blue")):
    """The paints' classes in another domain: paler colours on a brighter ground."""
    rng = np.random.default_rng(1)
    colours = {"red": (240, 120, 120), "green": (120, 240, 120), "blue": (120, 120, 240), "grey": (128, 128, 128)}
    for label in labels:
        (root / "tints" / label).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(np.array(colours[label]) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "tints" / label / f"{i}.png")
    return root / "tints"


def test_each_method_starts_from_the_cut_studys_source_run_and_the_sweep_resumes(paints):
    tints = _tints(paints.parent)
    study = AdaptationStudy(paints, tints, settings=SETTINGS, log=lambda *_: None)
    assert study.folder == "Paints_to_Tints"
    paths = study.run(cut_points=(7,), repeats=1, progress=False)
    records = {method: load_results(path)[1] for method, path in paths.items()}
    assert set(records) == {"source_only", "adabn", "dann", "coral", "mcc", "cdan"}
    assert all(len(r) == 1 for r in records.values())
    (source_only,), (adabn,) = records["source_only"], records["adabn"]
    assert source_only["sampled_cut_point"] == 7 and source_only["stage"] == "block6"
    assert source_only["sampled_percentage"] == 1.0 and source_only["n_train"] == len(study.target.train)
    # every method starts from the same source model: the cut-point study's F run on the whole pool
    assert len({r[0]["source_test_acc"] for r in records.values()}) == 1
    same = CutStudy(paints, "F", CutStudySettings(**COMMON), log=lambda *_: None)
    f_run = same.train_cell(same.cells(grid((), (1.0,), (7,), 1), baselines=False)[0])[0]
    assert f_run["test_acc"] == source_only["source_test_acc"]
    # source only is the source model on the target's test images; AdaBN changes statistics, not weights
    assert source_only["val_acc"] == f_run["val_acc"] and source_only["epochs"] == 0 == adabn["epochs"]
    for method in ("dann", "coral"):
        (record,) = records[method]
        assert record["chosen_weight"] in ALIGNMENT_WEIGHTS[method] and record["epochs"] == 1
        assert {f"dev_risk_{w:g}" for w in ALIGNMENT_WEIGHTS[method]} <= set(record)
    params, _ = load_results(paths["dann"])
    assert params["mode"] == "dann" and params["alignment_weights"] == list(ALIGNMENT_WEIGHTS["dann"])
    assert params["source_data"]["name"] == "paints" and params["data"]["name"] == "tints"
    # resumed: nothing is pending; a method asked for alone later finds its runs done
    assert study.cells((7,), 1) == []
    assert AdaptationStudy(paints, tints, ("coral",), SETTINGS, log=lambda *_: None).cells((7,), 1) == []


def test_other_classes_a_cut_without_stages_before_it_and_unknown_methods_are_refused(paints):
    others = _tints(paints.parent, ("red", "green", "grey"))
    with pytest.raises(Exception, match="are not paints's"):
        AdaptationStudy(paints, others, settings=SETTINGS, log=lambda *_: None)
    with pytest.raises(Exception, match=r"adaptation method\(s\) \['jan'\]"):
        AdaptationStudy(paints, paints, ("jan",), SETTINGS, log=lambda *_: None)
    study = AdaptationStudy(paints, paints, ("adabn",), SETTINGS, folder=str(paints.parent / "out" / "x"),
                            log=lambda *_: None)
    for cut in (0, 9):
        with pytest.raises(Exception, match=f"adaptation cut point {cut} is outside 1..8"):
            study.cells((cut,), 1)


def test_the_command_line_adapts_between_folders_and_refuses_what_it_does_not_take(paints, capsys):
    tints = _tints(paints.parent)
    options = [f"--set={key}={value}" for key, value in {**COMMON, "adapt_epochs": 1, "adapt_min_steps": 2}.items()]
    assert main(["run", "--data", str(tints), "--source", str(paints), "--mode", "coral", "--cuts", "8",
                 "--repeats", "2", "--no-progress", *options]) == 0
    out = capsys.readouterr().out
    assert "Paints_to_Tints: efficientnet_lite0, test accuracy on the target images" in out
    assert "results/real/results_efficientnet_lite0_coral.json" in out and "(n=2)" in out
    for argv, message in [
        (["--mode", "FR"], "--mode FR is not an adaptation method"),
        (["--per-class", "2"], "--per-class is not an option of adaptation"),
        (["--set", "adapt_epochs=0"], "adapt_epochs"),
    ]:
        assert main(["run", "--data", str(tints), "--source", str(paints), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["run", "MNIST", "--source", str(paints)]) == 2
    assert "--source is an option of the study on your own images" in capsys.readouterr().err


def test_a_tuned_method_chooses_its_rate_too_where_the_source_validation_picks_the_cut(paints, capsys):
    tints = _tints(paints.parent)
    options = [f"--set={key}={value}" for key, value in {**COMMON, "adapt_epochs": 1, "adapt_min_steps": 2}.items()]
    tuned = ["run", "--data", str(tints), "--source", str(paints), "--mode", "coral-tuned", "--at-chosen-cut",
             "--repeats", "1", "--no-progress", *options]
    assert main(tuned) == 2  # nothing to pick the cut from yet
    assert "holds no source-only runs to pick a cut point from" in capsys.readouterr().err
    assert main(["run", "--data", str(tints), "--source", str(paints), "--mode", "source_only", "--cuts", "5", "8",
                 "--repeats", "1", "--no-progress", *options]) == 0
    assert main(tuned) == 0
    capsys.readouterr()
    study = AdaptationStudy(paints, tints, ("source_only", "coral-tuned"), SETTINGS, log=lambda *_: None)
    _, source_only = load_results(study.path("source_only"))
    best = max(source_only, key=lambda r: r["val_acc"])["sampled_cut_point"]  # one repeat: the best validation
    assert chosen_cut(study) == best
    params, (record,) = load_results(study.path("coral-tuned"))
    assert record["sampled_cut_point"] == best and params["lrs"] == list(TUNED_LEARNING_RATES)
    assert record["lr"] == record["chosen_lr"] in TUNED_LEARNING_RATES
    tried = [(w, lr) for w in ALIGNMENT_WEIGHTS["coral"] for lr in TUNED_LEARNING_RATES]
    assert {f"{what}_{w:g}_lr{lr:g}" for what in ("dev_risk", "test_acc") for w, lr in tried} <= set(record)
    assert record[f"test_acc_{record['chosen_weight']:g}_lr{record['chosen_lr']:g}"] == record["test_acc"]
    # the same source model as the untuned methods of that cut and repeat
    same_cut = next(r for r in source_only if r["sampled_cut_point"] == best)
    assert record["source_test_acc"] == same_cut["source_test_acc"]
    assert main([*tuned, "--cuts", "5"]) == 2
    assert "--at-chosen-cut picks the cut point from the saved source-only runs: drop --cuts" in capsys.readouterr().err


def test_only_dann_chooses_a_schedule_and_only_the_tuned_forms_a_rate():
    assert candidates("dann-tuned", 1e-3) == {"weights": ALIGNMENT_WEIGHTS["dann"], "lrs": TUNED_LEARNING_RATES,
                                              "schedules": DANN_SCHEDULES}
    assert candidates("cdan-tuned", 1e-3)["schedules"] == ("ramp",)
    assert candidates("coral", 2e-3) == {"weights": ALIGNMENT_WEIGHTS["coral"], "lrs": (2e-3,), "schedules": ("ramp",)}
    assert candidates("adabn", 1e-3)["weights"] == (1.0,)
