import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from functions.__main__ import main
from functions.core.paths import REPO_ROOT



def _packages(lines):
    return sorted(re.split(r"[=<>]", ln.strip().lstrip("- "))[0].lower() for ln in lines
                  if re.match(r"^\s*-?\s*[A-Za-z][\w.-]*==", ln))


def test_requirements_and_environment_list_the_same_pinned_packages():
    req = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    env = (REPO_ROOT / "environment.yml").read_text().splitlines()
    assert _packages(req) == _packages(env) and len(_packages(req)) > 10
    pins = lambda lines: sorted(ln.strip().lstrip("- ") for ln in lines if "==" in ln)
    assert pins(req) == pins(env)


def test_ci_runs_make_test():
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_cli_runs_a_small_sweep_and_prints_the_summary(output_root, capsys):
    code = main(["run", "MNIST", "--percentages", "0.002", "--repeats", "1", "--cuts", "2", "--no-progress",
                 "--set", "num_channels=4", "--set", "depth=2", "--set", "num_train=1", "--set", "num_train_pretrain=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"baseline\s+0\.\d{3} ± 0\.000 \(n=1\)", out) and re.search(r"cut 2\s+0\.\d{3}", out)
    # then the gain over the baseline (one repeat: no interval) and what the design can say of it
    gains = out[out.index("Gain over the baseline"):]
    assert re.search(r"\ncut 2\s+[+-]0\.\d{3}\n", gains)
    assert "MNIST FR (quick profile) at 0.2% of the data: the cut validation picks (2) gains" in gains
    assert "the design cannot detect it: with 1 repeat the smallest p" in gains
    assert (output_root / "MNIST" / "results" / "results_regular_FR.json").exists()


def test_more_repeats_go_to_the_cut_the_saved_runs_validation_picks(output_root, capsys):
    small = ["MNIST", "--percentages", "0.002", "--no-progress", "--set", "num_channels=4", "--set", "depth=2",
             "--set", "num_train=1", "--set", "num_train_pretrain=1"]
    assert main(["run", *small, "--repeats", "1", "--cuts", "1", "2", "--no-baselines"]) == 0
    path = output_root / "MNIST" / "results" / "results_regular_FR.json"
    first = json.loads(path.read_text())[1:]
    picked = max(first, key=lambda r: r["val_acc"])["sampled_cut_point"]
    capsys.readouterr()
    assert main(["run", *small, "--repeats", "3", "--at-chosen-cut", "--no-baselines"]) == 0
    runs = json.loads(path.read_text())[1:]
    assert sorted((r["sampled_cut_point"], r["repeat"]) for r in runs) == sorted(
        [(1, 0), (2, 0), (picked, 1), (picked, 2)])
    assert main(["run", *small, "--at-chosen-cut", "--cuts", "1"]) == 2
    assert "--at-chosen-cut picks the cut point from the saved runs: drop --cuts" in capsys.readouterr().err
    assert main(["run", *small[:1], "--percentages", "0.005", *small[3:], "--at-chosen-cut"]) == 2
    assert "has no runs at [0.005] to pick a cut point from" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "SVHN"], "argument folder: invalid choice: 'SVHN'"),
    (["run", "MNIST", "--setup", "reverse"], "unknown setup 'reverse'"),
    (["run", "MNIST", "--mode", "XY"], "argument --mode: unknown mode 'XY'; choose one of .*'progressive', 'discriminative', 'lora', 'ia3', 'bitfit'"),
    (["run", "MNIST", "--percentages", "1.5"], r"--percentages: 1.5 is out of range: .* must be in \(0.0, 1.0\]"),
    (["run", "MNIST", "--repeats", "0"], "--repeats: 0 is out of range: it must be at least 1"),
    (["run", "MNIST", "--repeats", "two"], "--repeats: 'two' is not an integer"),
    (["run", "MNIST", "--set", "depth=3", "--cuts", "5"], "outside 0..3"),
    (["run", "MNIST", "--set", "colour=1"], "unknown parameter 'colour'"),
    (["run", "MNIST", "--set", "depth=abc"], "--set depth='abc': depth must be an integer"),
    (["run", "MNIST", "--set", "lr_fine_tune=nan"], "--set lr_fine_tune='nan': lr_fine_tune must be a finite number"),
    (["run", "MNIST", "--set", "lr_fine_tune=0"], "lr_fine_tune=0.0 must be positive: a learning rate"),
    (["run", "MNIST", "--set", "lr_fine_tune=-0.001"], "lr_fine_tune=-0.001 must be positive: a learning rate"),
    (["run", "MNIST", "--set", "use_pooling=maybe"], "use_pooling must be true or false"),
    (["run", "MNIST", "--set", "val_split=1.5"], r"val_split=1.5 must be in \[0, 1\)"),
    (["run", "MNIST", "--profile", "huge"], "argument --profile: invalid choice: 'huge'"),
    (["summary", "MNIST", "--mode", "FT"], "no results files for MNIST/regular mode FT"),
    (["sample-efficiency", "MNIST", "--threshold", "1.5"], r"--threshold: 1.5 is out of range"),
])
def test_bad_command_lines_exit_with_a_clear_message(argv, message, capsys, output_root):
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "functions", "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0 and "prepare-data" in out.stdout


def test_package_imports_from_any_folder(tmp_path):
    """The package is installed (editable), not found through the working directory."""
    out = subprocess.run([sys.executable, "-c", "import functions, functions.config; print(functions.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and Path(out.stdout.strip()) == REPO_ROOT / "functions" / "__init__.py"


# the quick profile's floor of 100 steps per epoch cut to 20: the sweep still runs long enough to be interrupted
SMALL_SWEEP = ["run", "MNIST", "--percentages", "0.002", "0.004", "0.006", "0.008", "--repeats", "2",
               "--cuts", "0", "1", "2", "--no-progress", "--set", "num_channels=4", "--set", "depth=2",
               "--set", "num_train=2", "--set", "num_train_pretrain=1", "--set", "min_steps_per_epoch=20"]


def _restore_sigint():
    # a child started from a non-interactive shell inherits SIGINT ignored; a user's terminal does not
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_sweep_says_what_is_saved_and_a_rerun_resumes(output_root):
    import json
    import os
    import signal
    import time

    env = {**os.environ, "TRANSFER_OUTPUT_ROOT": str(output_root), "OMP_NUM_THREADS": "1"}
    results = output_root / "MNIST" / "results" / "results_regular_FR.json"
    child = subprocess.Popen([sys.executable, "-m", "functions", *SMALL_SWEEP], env=env, cwd=REPO_ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_restore_sigint)
    deadline = time.monotonic() + 120
    while not results.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert child.poll() is None, "the sweep ended before it could be interrupted"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    saved = len(json.loads(results.read_text())) - 1
    assert "Traceback" not in err
    assert re.fullmatch(rf"interrupted: {saved} runs are saved in .*results_regular_FR.json.*; re-running the "
                        r"same command resumes from there\n", err, re.S)
    assert 0 < saved < 4 * 2 * 3

    rerun = subprocess.run([sys.executable, "-m", "functions", *SMALL_SWEEP], env=env, cwd=REPO_ROOT, text=True,
                           capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = json.loads(results.read_text())[1:]
    keys = [(r["sampled_percentage"], r["sampled_cut_point"], r["repeat"]) for r in records]
    assert len(keys) == len(set(keys)) == 4 * 2 * 3


# ----------------------------------------------------------------------------- every command once

TINY = ["--set", "num_channels=4", "--set", "depth=2", "--set", "num_train=1", "--set", "num_train_pretrain=1"]
CELL = re.compile(r"(\d\.\d{3}) ± (\d\.\d{3}) \(n=(\d+)\)")


def _table(out: str) -> dict:
    """A printed summary table: {(row, percentage column): (mean, std, n)}, the numbers as printed."""
    lines = [line for line in out.splitlines() if CELL.search(line)]
    header = out.splitlines()[out.splitlines().index(lines[0]) - 1].split()
    table = {}
    for line in lines:
        row = re.match(r"(baseline|cut \d+)", line).group(1)
        for column, cell in zip(header, CELL.findall(line), strict=True):
            table[(row, column)] = cell
    return table


def _expected_table(*paths) -> dict:
    """The same cells computed here from the results files: mean and sample std of test_acc, 3 decimals."""
    import json
    import statistics
    runs: dict = {}
    for path in paths:
        for record in json.loads(path.read_text())[1:]:
            row = "baseline" if record["sampled_cut_point"] == -1 else f"cut {record['sampled_cut_point']}"
            runs.setdefault((row, f"{record['sampled_percentage']:g}"), []).append(record["test_acc"])
    return {key: (f"{statistics.mean(accs):.3f}", f"{statistics.stdev(accs) if len(accs) > 1 else 0:.3f}",
                  str(len(accs))) for key, accs in runs.items()}


def test_prepare_data_verifies_what_is_there_and_leaves_it_alone(tmp_path, monkeypatch, capsys):
    import hashlib
    import shutil
    from functions.core.paths import data_root
    from functions.data.sources import MNIST_IDX_MD5
    shutil.copytree(data_root() / "MNIST", tmp_path / "MNIST")
    monkeypatch.setenv("TRANSFER_DATA_ROOT", str(tmp_path))
    before = {p: p.read_bytes() for p in (tmp_path / "MNIST").rglob("*") if p.is_file()}
    assert main(["prepare-data", "MNIST"]) == 0
    assert capsys.readouterr().out == "MNIST: ready\n"
    assert {p: p.read_bytes() for p in (tmp_path / "MNIST").rglob("*") if p.is_file()} == before
    for name, md5 in MNIST_IDX_MD5.items():
        assert hashlib.md5((tmp_path / "MNIST" / "raw" / name).read_bytes()).hexdigest() == md5


def test_pretrain_run_and_summary_print_what_their_files_hold(output_root, capsys):
    import json
    assert main(["pretrain", "MNIST", *TINY]) == 0
    out = capsys.readouterr().out
    model = output_root / "MNIST" / "pretrained_models"
    (path,) = model.glob("regular_*.pt")
    info = json.loads(path.with_suffix(".json").read_text())
    assert f"pretraining MNIST/regular on MNIST classes [0, 1, 2, 3, 4] ({info['n_train']} images)" in out
    assert f"saved {path.name}: source test accuracy {info['test_acc']:.4f}" in out
    assert out.splitlines()[-1] == f"MNIST/regular: {path}"
    assert info["config"]["num_channels"] == 4 and info["config"]["pre_train_classes"] == [0, 1, 2, 3, 4]

    grid = ["--percentages", "0.002", "0.004", "--repeats", "2", "--cuts", "0", "2", "--no-progress", *TINY]
    results = output_root / "MNIST" / "results"
    assert main(["run", "MNIST", "--mode", "F", "--no-baselines", *grid]) == 0
    out = capsys.readouterr().out
    assert not (results / "baselines_regular.json").exists() and "pretraining" not in out
    assert _table(out) == _expected_table(results / "results_regular_F.json")
    assert {row for row, _ in _table(out)} == {"cut 0", "cut 2"}
    assert f"wrote {results / 'results_regular_F.json'}" in out.splitlines()

    assert main(["run", "MNIST", "--mode", "FR", "--plot", *grid]) == 0
    out = capsys.readouterr().out
    files = [results / "baselines_regular.json", results / "results_regular_FR.json"]
    printed = _table(out)
    assert printed == _expected_table(*files) and len(printed) == 3 * 2
    assert all(n == "2" for _, _, n in printed.values())
    figure = results / "figures" / "test_accuracy_regular_FR.png"
    assert {f"wrote {p}" for p in [*files, figure]} <= set(out.splitlines())
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["summary", "MNIST", "--mode", "FR"]) == 0
    summary = capsys.readouterr().out
    assert _table(summary) == printed and summary.strip() in out
    assert main(["summary", "MNIST", "--mode", "F"]) == 0  # the baselines written since are shown too
    assert _table(capsys.readouterr().out) == _expected_table(results / "baselines_regular.json",
                                                              results / "results_regular_F.json")


def test_summary_without_results_is_one_line_on_stderr_and_exit_code_2(tmp_path):
    import os
    done = subprocess.run([sys.executable, "-m", "functions", "summary", "MNIST", "--mode", "FR"], cwd=REPO_ROOT,
                          env={**os.environ, "TRANSFER_OUTPUT_ROOT": str(tmp_path)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert re.fullmatch(r"error: no results files for MNIST/regular mode FR \(.*results_regular_FR.json\); "
                        r"run `python -m functions run MNIST --setup regular --mode FR` first\n", done.stderr)


def test_notebooks_command_writes_each_template_and_keeps_notebooks_whose_cells_match(tmp_path, monkeypatch,
                                                                                      capsys):
    import nbformat
    from functions.notebooks import templates
    monkeypatch.setattr(templates, "path", lambda folder, kind: tmp_path / folder / f"{kind}.ipynb")
    kinds = templates.kinds("MNIST")
    assert main(["notebooks", "MNIST"]) == 0
    written = [tmp_path / "MNIST" / f"{kind}.ipynb" for kind in kinds]
    assert capsys.readouterr().out.splitlines() == [f"wrote {p}" for p in written]
    assert sorted(tmp_path.rglob("*.ipynb")) == sorted(written)
    for kind, path in zip(kinds, written):
        assert templates.same_cells(nbformat.read(path, as_version=4), templates.build("MNIST", kind))

    # stored outputs stay while the cells are unchanged; a notebook whose cells differ is written anew
    kept, stale = written[0], written[-1]
    notebook = nbformat.read(kept, as_version=4)
    code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a stored output\n")]
    nbformat.write(notebook, kept)
    edited = nbformat.read(stale, as_version=4)
    edited.cells[0].source += "\nedited by hand"
    nbformat.write(edited, stale)
    kept_bytes = kept.read_bytes()
    assert main(["notebooks", "MNIST"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {p}" for p in written]
    assert kept.read_bytes() == kept_bytes
    assert templates.same_cells(nbformat.read(stale, as_version=4), templates.build(stale.parent.name, kinds[-1]))


def test_sample_efficiency_command_prints_the_table_of_the_file_it_wrote(output_root, tmp_path, monkeypatch,
                                                                         capsys):
    import json
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    argv = ["sample-efficiency", "MNIST", "--task", "binary", "--seeds", "2", "--max-samples", "20", "--pool", "60",
            "--methods", "ridge", "ncm", "--window", "2", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    path = output_root / "MNIST" / "results" / "sample_efficiency_regular_binary.json"
    assert out[-1] == f"wrote {path}"
    params, *records = json.loads(path.read_text())
    assert (params["classes"], params["pool_size"], params["max_samples"], params["window"]) == ([5, 6], 60, 20, 2)
    assert sorted((r["method"], r["seed"]) for r in records) == [(m, s) for m in ("adam", "ncm", "ridge")
                                                                 for s in (0, 1)]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:-1]}
    assert list(rows) == ["adam", "ridge", "ncm"]
    for method, (median, iqr, never, ratio, final) in rows.items():
        runs = [r for r in records if r["method"] == method]
        reached = [r["milestone"] for r in runs if r["milestone"] is not None]
        assert median == (f"{np.median(reached):g}" if reached else "never")
        assert iqr == (f"{np.percentile(reached, 25):g}-{np.percentile(reached, 75):g}" if reached else "-")
        assert never == f"{len(runs) - len(reached)}/{len(runs)}"
        ratios = [r["relative_efficiency"] for r in runs if r["relative_efficiency"] is not None]
        assert ratio == (f"{np.median(ratios):.2f}" if ratios else "-")
        assert final == f"{np.median([r['final_accuracy'] for r in runs]):.3f}"
    assert any(r["milestone"] is not None for r in records)
    for figure in ("curves", "milestones"):
        assert (path.parent / "figures" / f"{path.stem}_{figure}.png").read_bytes()[:4] == b"\x89PNG"


def test_commands_run_a_folder_with_its_own_settings_and_set_overrides_them():
    from functions.commands import parser as build_parser
    from functions.commands.study import experiment
    from functions.config import PAPER_WEIGHTS
    args = build_parser().parse_args(["run", "MNIST_to_FashionMNIST", "--mode", "dann"])
    assert list(experiment(args)[1].dann_weights) == PAPER_WEIGHTS["dann_weights"] == []  # as its committed files
    args = build_parser().parse_args(["run", "MNIST_to_FashionMNIST", "--mode", "dann", "--set", "dann_weights=0.3,1"])
    assert list(experiment(args)[1].dann_weights) == [0.3, 1.0]
    args = build_parser().parse_args(["run", "MNIST_to_digits", "--mode", "dann"])
    assert list(experiment(args)[1].dann_weights) == [0.3, 1.0]  # the tuned default elsewhere
