"""Bad input to the command line is refused before any work: one line ``error: ...`` on stderr
(argparse's own refusals add its usage), exit status 2, and nothing written under the output root."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from functions.__main__ import main
from functions.core.paths import REPO_ROOT



def _files(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(argv, capsys, root: Path, message: str) -> str:
    """Run ``argv`` in this process: exit 2, ``message`` in its last stderr line, no traceback, and
    the output root exactly as it was."""
    before = _files(root)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines and re.search(message, lines[-1]), captured.err
    assert lines[-1].startswith("error: ") or ": error: " in lines[-1]
    assert "Traceback" not in captured.err and captured.out == ""
    assert _files(root) == before
    return lines[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(argv, root: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "functions", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TRANSFER_OUTPUT_ROOT": str(root), **env})


def write_results(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"depth": 6}, *records]))
    return path


# ----------------------------------------------------------------------------- tracebacks

@pytest.mark.parametrize("depth", ["10", "100000"])
def test_a_network_too_deep_for_its_images_is_refused_by_the_config(depth, capsys, output_root):
    refused(["pretrain", "MNIST", "--set", f"depth={depth}"], capsys, output_root,
            rf"depth={depth} is too deep for 28 x 28 MNIST images .* give depth <= 9")


def test_a_too_deep_network_is_one_line_from_the_real_command_line(output_root):
    done = run_cli(["run", "MNIST", "--set", "depth=10", "--cuts", "1"], output_root)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert re.fullmatch(r"error: depth=10 is too deep for .*\n", done.stderr)
    assert list(output_root.iterdir()) == []


def test_summary_names_the_record_and_the_key_it_lacks(capsys, output_root):
    write_results(output_root / "MNIST" / "results" / "results_regular_FR.json",
                  [{"sampled_percentage": 0.01, "sampled_cut_point": 1, "repeat": 0, "test_acc": 0.5},
                   {"sampled_percentage": 0.01, "repeat": 1, "test_acc": 0.5}])
    refused(["summary", "MNIST"], capsys, output_root,
            r"results_regular_FR.json: run record 2 .* lacks \['sampled_cut_point'\]")


def test_run_refuses_a_damaged_results_file_before_training(capsys, output_root):
    write_results(output_root / "MNIST" / "results" / "results_regular_FR.json",
                  [{"sampled_percentage": 0.01, "sampled_cut_point": 1, "test_acc": 0.5}])
    refused(["run", "MNIST", "--cuts", "1"], capsys, output_root, r"run record 1 .* lacks \['repeat'\]")


def test_a_resumed_results_file_names_the_run_record_and_the_key_it_lacks(output_root):
    from functions.core.errors import DataError
    from functions.runs.store import ResultsFile, sweep_key
    path = write_results(output_root / "MNIST" / "results" / "results_regular_FR.json",
                         [{"sampled_percentage": 0.01, "sampled_cut_point": 1, "test_acc": 0.5}])
    resumed = ResultsFile(path, {"depth": 6})  # as a notebook or a sweep resumes it
    with pytest.raises(DataError, match=r"results_regular_FR.json: run record \{'sampled_percentage': 0.01, 'sampled_cut_point': 1, "
                                        r"'test_acc': 0.5\} lacks \['repeat'\]; .*: restore the results file"):
        resumed.done()
    with pytest.raises(DataError, match=r"^run record \{'x': '0{80,}\.\.\. lacks \['sampled_percentage', "):
        sweep_key({"x": "0" * 200})  # a long record is shown cut short


def test_run_refuses_a_results_path_that_is_a_folder(capsys, output_root):
    (output_root / "MNIST" / "results" / "results_regular_FR.json").mkdir(parents=True)
    refused(["run", "MNIST", "--cuts", "1"], capsys, output_root, r"results_regular_FR.json is a folder")


def test_run_refuses_an_output_root_that_is_a_file(tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    root.write_text("not a folder")
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(root))
    refused(["run", "MNIST", "--cuts", "1"], capsys, tmp_path, rf"{root} is a file, not a folder")


def test_recommend_refuses_an_out_that_is_a_file_or_lies_under_one(capsys, output_root):
    (output_root / "taken").write_text("a file")
    refused(["recommend", "--out", str(output_root / "taken")], capsys, output_root, r"--out .*taken is a file")
    refused(["recommend", "--out", str(output_root / "taken" / "sub")], capsys, output_root,
            r"taken is a file, not a folder")


@pytest.mark.parametrize("content, reason", [(b"", "EmptyDataError"),
                                             (b'setup,score\n"MNIST,1\n', "ParserError")])
def test_recommend_refuses_a_records_csv_that_is_not_a_csv(content, reason, capsys, output_root):
    good = output_root / "FashionMNIST" / "results" / "transferability_records_regular.csv"
    good.parent.mkdir(parents=True)
    good.write_text("setup,score\nFashionMNIST,1\n")
    path = output_root / "MNIST" / "results" / "transferability_records_regular.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    refused(["recommend", "--out", str(output_root / "out")], capsys, output_root,
            rf"^error: {re.escape(str(path))} is not a readable CSV \({reason}: .*\); re-run the transferability "
            rf"notebook of MNIST, or delete the file$")


# ----------------------------------------------------------------------------- accepted or wrong

@pytest.mark.parametrize("argv, option, value", [
    (["run", "MNIST", "--cuts", "5", "5"], "--cuts", "5"),
    (["run", "MNIST", "--percentages", "0.01", "0.010"], "--percentages", "0.01"),
    (["fe-vs-ft", "MNIST", "--samples-per-class", "1", "1"], "--samples-per-class", "1"),
    (["fe-vs-ft", "MNIST", "--pipelines", "FE", "FE"], "--pipelines", "FE"),
    (["fe-vs-ft", "MNIST", "--layers", "head", "head"], "--layers", "head"),
    (["sample-efficiency", "MNIST", "--methods", "adam", "adam"], "--methods", "adam"),
    (["sample-efficiency", "MNIST", "--classes", "1", "2", "1"], "--classes", "1"),
    (["zoo", "build", "--models", "a", "a"], "--models", "a"),
    (["prepare-data", "MNIST", "MNIST"], "datasets", "MNIST"),
])
def test_a_value_given_twice_in_a_list_is_refused(argv, option, value, capsys, output_root):
    refused(argv, capsys, output_root, rf"argument {option}: {value} given more than once; give each value once")


def test_a_set_key_given_twice_is_refused(capsys, output_root):
    refused(["run", "MNIST", "--set", "depth=2", "--set", "depth=3"], capsys, output_root,
            r"'depth' is given twice")


def test_fe_vs_ft_checks_frozen_and_layers_against_the_backbone_before_any_work(capsys, output_root):
    refused(["fe-vs-ft", "MNIST", "--backbone", "study", "--frozen", "99"], capsys, output_root,
            r"frozen=99 \(--frozen\) asks for more stages than study has: 6 .* give 0..6")
    refused(["fe-vs-ft", "MNIST", "--backbone", "study", "--layers", "block9"], capsys, output_root,
            r"study has no layer\(s\) \['block9'\]; its layers are \['block1'")
    refused(["fe-vs-ft", "MNIST", "--backbone", "study", "--weights", str(output_root / "x.pt")], capsys,
            output_root, r"drop the weights file \(--weights\)")


@pytest.mark.parametrize("argv", [
    ["summary", "MNIST", "--set", "nosuchkey=1"],
    ["summary", "MNIST", "--repeats", "2"],
    ["run", "MNIST", "--perc", "0.1"],  # no abbreviations: summary's --set would be read as --setup
])
def test_options_a_command_does_not_take_are_refused(argv, capsys, output_root):
    refused(argv, capsys, output_root, r"unrecognized arguments")


def test_summary_honours_cuts_and_percentages(capsys, output_root):
    write_results(output_root / "MNIST" / "results" / "results_regular_FR.json",
                  [{"sampled_percentage": p, "sampled_cut_point": c, "repeat": 0, "test_acc": 0.5}
                   for p in (0.01, 0.05) for c in (1, 2)])
    assert main(["summary", "MNIST", "--cuts", "2", "--percentages", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "cut 2" in out and "cut 1" not in out and "0.05" in out and "0.01" not in out
    refused(["summary", "MNIST", "--cuts", "5"], capsys, output_root, r"hold no runs of cuts \[5\]")


def test_pretrain_refuses_datasets_it_would_skip(capsys, output_root):
    refused(["pretrain", "--all", "--datasets", "NoSuchDataset"], capsys, output_root,
            r"argument --datasets: invalid choice: 'NoSuchDataset'")
    refused(["pretrain", "--all", "--datasets", "digits"], capsys, output_root, r"no setup pretrains on \[.digits.\]")
    refused(["pretrain", "MNIST", "--datasets", "MNIST"], capsys, output_root, r"add --all, or drop --datasets")
    refused(["pretrain", "MNIST", "--all"], capsys, output_root, r"drop the folder and --setup, or drop --all")


def test_notebooks_refuses_an_unknown_folder(capsys, output_root):
    refused(["notebooks", "NoSuchFolder"], capsys, output_root, r"no notebooks for folder\(s\) \['NoSuchFolder'\]")


@pytest.mark.parametrize("argv", [["run", "MNIST"], ["sweep", "MNIST/empirical.ipynb"], ["zoo", "build"],
                                  ["fe-vs-ft", "MNIST"]])
def test_ray_options_need_the_ray_executor(argv, capsys, output_root):
    refused([*argv, "--address", "auto"], capsys, output_root, r"--address needs --executor ray")
    refused([*argv, "--task-cpus", "2", "--max-retries", "1"], capsys, output_root,
            r"--task-cpus, --max-retries need --executor ray; drop them or add --executor ray")


def test_sample_efficiency_refuses_options_it_would_ignore(capsys, output_root):
    refused(["sample-efficiency", "MNIST", "--dataset", "FashionMNIST"], capsys, output_root,
            r"dataset 'FashionMNIST' is given without classes \(--classes")
    refused(["sample-efficiency", "MNIST", "--input-size", "96"], capsys, output_root, r"drop --input-size")
    refused(["sample-efficiency", "MNIST", "--extractor", "resnet50", "--cut", "2"], capsys, output_root,
            r"drop --cut")


def test_sample_efficiency_refuses_a_profile_it_would_ignore(capsys, output_root):
    refused(["sample-efficiency", "MNIST", "--extractor", "resnet50", "--profile", "quick"], capsys, output_root,
            r"--profile chooses .*; --extractor resnet50 is an ImageNet network, so --profile would be ignored: "
            r"drop --profile")
    refused(["sample-efficiency", "MNIST", "--weights", str(output_root / "model.pt"), "--profile", "range"], capsys,
            output_root, r"--weights .*model.pt is the model, so --profile would be ignored: drop --profile")


def test_sweep_checks_parameter_names_before_starting_ray(capsys, output_root, monkeypatch):
    import functions.runs.executors as executors

    def no_executor(*args, **kwargs):
        raise AssertionError("an executor was started before the parameter names were checked")

    monkeypatch.setattr(executors, "make_executor", no_executor)
    out = str(output_root / "sweeps")
    refused(["sweep", "MNIST/empirical.ipynb", "--grid", "nosuchparam=[1,2]", "--out", out, "--executor", "ray"],
            capsys, output_root, r"empirical.ipynb has no parameter\(s\) \['nosuchparam'\]")
    refused(["sweep", "MNIST/empirical.ipynb", "--grid", "seed=1", "--out", out, "--executor", "ray"], capsys,
            output_root, r"grid value of 'seed' must be a non-empty list")
    refused(["sweep", "MNIST/nosuch.ipynb", "--out", out, "--executor", "ray"], capsys, output_root,
            r"no notebook .*nosuch.ipynb")


def test_sweep_refuses_names_the_notebook_does_not_define(capsys, output_root):
    out = str(output_root / "sweeps")
    refused(["sweep", "MNIST/empirical.ipynb", "--grid", "nosuchparam=[1,2]", "--out", out], capsys, output_root,
            r"empirical.ipynb has no parameter\(s\) \['nosuchparam'\]; its parameters cell defines \[.*'seed'")
    refused(["sweep", "MNIST/empirical.ipynb", "--param", "nosuch=1", "--out", out], capsys, output_root,
            r"no parameter\(s\) \['nosuch'\]")
    refused(["sweep", "MNIST/empirical.ipynb", "--grid", "seed=[1,2]", "--param", "seed=3", "--out", out], capsys,
            output_root, r"\['seed'\] given both as --grid and as --param")


# ----------------------------------------------------------------------------- checked first, not late

def test_recommend_model_checks_the_recommender_and_the_task_before_any_feature(capsys, output_root):
    refused(["recommend-model", "--task", "MNIST:0,1:100", "--recommender", "nosuch"], capsys, output_root,
            r"unknown recommender 'nosuch'; choose one of \['linear regression', 'gradient boosting'")
    refused(["recommend-model", "--task", "MNIST:4-0:100"], capsys, output_root,
            r"the class range 4-0 is empty because it descends; write the lower class first \(MNIST:0-4:100\)")


@pytest.mark.parametrize("url, message", [
    ("notaurl", r"update_url 'notaurl' \(--update-url\) is not an http\(s\) URL"),
    ("http://127.0.0.1:{port}", r"nothing answers at update_url http://127.0.0.1:\d+ \(--update-url"),
])
def test_sample_efficiency_checks_the_outside_method_before_training(url, message, capsys, output_root):
    refused(["sample-efficiency", "MNIST", "--update-url", url.format(port=free_port()), "--seeds", "1",
             "--no-progress"], capsys, output_root, message)


# ----------------------------------------------------------------------------- clear messages

def test_a_garbage_weights_file_is_named_without_torch_advice(tmp_path, capsys, output_root):
    from PIL import Image
    image, weights = tmp_path / "image.png", tmp_path / "garbage.pt"
    Image.new("RGB", (32, 32)).save(image)
    weights.write_bytes(os.urandom(300))
    line = refused(["classify", str(image), "--weights", str(weights)], capsys, output_root,
                   r"garbage.pt is not a state-dict file of efficientnet_lite0")
    assert "weights_only" not in line


def test_fe_vs_ft_names_val_per_class_when_the_validation_split_is_too_small(capsys, output_root):
    refused(["fe-vs-ft", "MNIST", "--target", "digits", "--backbone", "study", "--samples-per-class", "1",
             "--no-track"], capsys, output_root, r"val_per_class=20 \(--val-per-class\): .* give at most \d+")


def test_prepare_data_without_a_copy_says_so_in_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    from functions.data.sources import prepare
    from functions.core.errors import DataError
    logged = []
    with pytest.raises(DataError, match=r"CIFAR10 is not under .*, torchvision's download failed \(OSError\) and "
                                        r"CIFAR10 has no packaged copy"):
        prepare("CIFAR10", tmp_path, log=logged.append)
    assert logged == []


def test_options_of_a_pipeline_or_action_that_does_not_run_are_refused(capsys, output_root):
    refused(["fe-vs-ft", "MNIST", "--pipelines", "FT", "--layers", "head"], capsys, output_root,
            r"layers \(--layers\) is a setting of the FE pipeline, which is not run")
    refused(["fe-vs-ft", "MNIST", "--pipelines", "FE", "--frozen", "2"], capsys, output_root,
            r"frozen \(--frozen\) is a setting of the FT pipeline")
    refused(["zoo", "pretrain", "--seeds", "2", "--executor", "ray"], capsys, output_root,
            r"--seeds, --executor: options of zoo build, which zoo pretrain would ignore; drop them")


@pytest.mark.parametrize("pipeline, option, value, setting", [
    ("FT", "--classifier", "svc", "classifier"), ("FT", "--C", "2", "C"), ("FT", "--embedding", "fne", "embedding"),
    ("FE", "--hidden", "8", "hidden"), ("FE", "--optimizer", "sgd", "optimizer"), ("FE", "--lr", "0.1", "lr"),
    ("FE", "--weight-decay", "0", "weight_decay"), ("FE", "--epochs", "3", "max_epochs"),
    ("FE", "--patience", "2", "patience"), ("FE", "--batch-size", "4", "batch_size"),
])
def test_fe_vs_ft_refuses_the_options_of_a_pipeline_that_does_not_run(pipeline, option, value, setting, capsys,
                                                                        output_root):
    other = {"FE": "FT", "FT": "FE"}[pipeline]
    refused(["fe-vs-ft", "MNIST", "--pipelines", pipeline, option, value], capsys, output_root,
            rf"^error: {setting} \({option}\) is a setting of the {other} pipeline, which is not run: add {other} "
            rf"to the pipelines, or drop it$")


def test_fe_vs_ft_refuses_such_options_given_at_their_default_and_names_them_all(capsys, output_root):
    refused(["fe-vs-ft", "MNIST", "--pipelines", "FT", "--classifier", "linear_svc", "--C", "1", "--layers", "head"],
            capsys, output_root, r"layers \(--layers\), classifier \(--classifier\), C \(--C\) are settings of "
                                 r"the FE pipeline, which is not run: add FE to the pipelines, or drop them$")


def test_fe_vs_ft_model_selection_reads_some_options_of_both_pipelines(output_root):
    from functions.core.errors import DataError
    from functions.runs.fe_vs_ft import FeVsFtSettings, refuse_idle_settings, run_study
    # --select tries both pipelines: it reads the embedding (FE) and the training options (FT) ...
    refuse_idle_settings(["embedding"], ["FT"], select=True)
    refuse_idle_settings(["hidden", "max_epochs", "batch_size"], ["FE"], select=True)
    # ... but chooses layers, classifier and C, frozen depth and learning rate itself
    for setting, pipelines in (("classifier", ["FT"]), ("C", ["FT"]), ("frozen", ["FE"]), ("lr", ["FE"])):
        with pytest.raises(DataError, match=rf"^{setting} .* is a setting of the"):
            refuse_idle_settings([setting], pipelines, select=True)
    # from Python, a setting away from its default is refused the same way, before any work
    with pytest.raises(DataError, match=r"momentum, max_epochs \(--epochs\) are settings of the FT pipeline"):
        run_study("MNIST", None, FeVsFtSettings(backbone="study", max_epochs=3, momentum=0.5), [1], 1, ["FE"], track=False)
    assert list(output_root.iterdir()) == []
