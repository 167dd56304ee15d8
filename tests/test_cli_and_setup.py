import re
import subprocess
import sys
from pathlib import Path

import pytest

from functions.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def _packages(lines):
    return sorted(re.split(r"[=<>]", ln.strip().lstrip("- "))[0].lower() for ln in lines
                  if re.match(r"^\s*-?\s*[A-Za-z][\w.-]*==", ln))


def test_requirements_and_environment_list_the_same_pinned_packages():
    req = (ROOT / "requirements.txt").read_text().splitlines()
    env = (ROOT / "environment.yml").read_text().splitlines()
    assert _packages(req) == _packages(env) and len(_packages(req)) > 10
    pins = lambda lines: sorted(ln.strip().lstrip("- ") for ln in lines if "==" in ln)
    assert pins(req) == pins(env)


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cli_runs_a_small_sweep_and_prints_the_summary(output_root, capsys):
    code = main(["run", "MNIST", "--percentages", "0.002", "--repeats", "1", "--cuts", "2", "--no-progress",
                 "--set", "num_channels=4", "--set", "depth=2", "--set", "num_train=1", "--set", "num_train_pretrain=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"baseline\s+0\.\d{3} ± 0\.000 \(n=1\)", out) and re.search(r"cut 2\s+0\.\d{3}", out)
    assert (output_root / "MNIST" / "results" / "results_regular_FR.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["run", "SVHN"], "argument folder: invalid choice: 'SVHN'"),
    (["run", "MNIST", "--setup", "reverse"], "unknown setup 'reverse'"),
    (["run", "MNIST", "--mode", "XY"], "argument --mode: invalid choice: 'XY'"),
    (["run", "MNIST", "--percentages", "1.5"], r"--percentages: 1.5 is out of range: .* must be in \(0.0, 1.0\]"),
    (["run", "MNIST", "--repeats", "0"], "--repeats: 0 is out of range: it must be at least 1"),
    (["run", "MNIST", "--repeats", "two"], "--repeats: 'two' is not an integer"),
    (["run", "MNIST", "--set", "depth=3", "--cuts", "5"], "outside 0..3"),
    (["run", "MNIST", "--set", "colour=1"], "unknown parameter 'colour'"),
    (["run", "MNIST", "--set", "depth=abc"], "--set depth='abc': depth must be an integer"),
    (["run", "MNIST", "--set", "lr_fine_tune=nan"], "--set lr_fine_tune='nan': lr_fine_tune must be a finite number"),
    (["run", "MNIST", "--set", "lr_fine_tune=0"], "lr_fine_tune=0.0 must be a positive learning rate"),
    (["run", "MNIST", "--set", "lr_fine_tune=-0.001"], "lr_fine_tune=-0.001 must be a positive learning rate"),
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
    out = subprocess.run([sys.executable, "-m", "functions", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "prepare-data" in out.stdout


def test_package_imports_from_any_folder(tmp_path):
    """The package is installed (editable), not found through the working directory."""
    out = subprocess.run([sys.executable, "-c", "import functions, functions.config; print(functions.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and Path(out.stdout.strip()) == ROOT / "functions" / "__init__.py"


SMALL_SWEEP = ["run", "MNIST", "--percentages", "0.002", "0.004", "0.006", "0.008", "--repeats", "2",
               "--cuts", "0", "1", "2", "--no-progress", "--set", "num_channels=4", "--set", "depth=2",
               "--set", "num_train=2", "--set", "num_train_pretrain=1"]


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
    child = subprocess.Popen([sys.executable, "-m", "functions", *SMALL_SWEEP], env=env, cwd=ROOT, text=True,
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

    rerun = subprocess.run([sys.executable, "-m", "functions", *SMALL_SWEEP], env=env, cwd=ROOT, text=True,
                           capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = json.loads(results.read_text())[1:]
    keys = [(r["sampled_percentage"], r["sampled_cut_point"], r["repeat"]) for r in records]
    assert len(keys) == len(set(keys)) == 4 * 2 * 3
