"""Re-checks of stored runs: they pass on any kind of CPU and fail when the code changes.

The chaos detector at the end trains the re-checked runs again under AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``): on an AVX-512 machine they round
differently from the native ones, as another CPU's would, and every re-check must still pass.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from functions.core.errors import DataError
from functions.notebooks import study
from functions.runs import recheck
from functions.train import adaptation
from functions.train.reference import Trajectory, first_difference

DIGITS = "MNIST_to_digits"
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def dann_plan():
    chosen, cfg, grid = study.plan(DIGITS, None, "quick", "dann")
    return chosen, cfg, cfg.depth, grid.percentages[0]


def test_first_difference_names_the_step_where_two_runs_part():
    steps = [[1.0, 2.0, 3.0], [0.5, 2.5, 3.5], [0.25, 3.0, 4.0]]
    assert first_difference(steps, [list(s) for s in steps]) is None
    assert first_difference(steps, [s[:] for s in steps[:1]] + [[0.5, 2.5 + 1e-12, 3.5], [0.25, 3.0, 4.1]]) == 2
    assert first_difference(steps, steps[:2]) == 2  # cut short


def test_a_trajectory_stops_training_after_its_steps():
    trajectory = Trajectory(3)
    params = [torch.ones(2, dtype=torch.float64)]
    assert [trajectory.record(0.5, params) for _ in range(3)] == [True, True, False]
    assert trajectory.points[0] == [0.5, 2.0, 2.0]


def test_a_trajectory_with_a_reference_stops_at_the_first_step_that_leaves_it():
    params = [torch.ones(2, dtype=torch.float64)]
    reference = [[0.5, 2.0, 2.0], [0.4, 2.0, 2.0], [0.3, 2.0, 2.0]]
    trajectory = Trajectory(3, reference=reference)
    assert [trajectory.record(loss, params) for loss in (0.5, 0.41)] == [True, False]  # step 1 leaves it
    assert first_difference(reference, trajectory.points) == 1
    same = Trajectory(3, reference=reference)
    assert [same.record(loss, params) for loss in (0.5, 0.4, 0.3)] == [True, True, False]
    assert first_difference(reference, same.points) is None


def test_the_stored_dann_steps_come_back():
    chosen, cfg, cut, percentage = dann_plan()
    check = recheck.compare_trajectory(chosen, cfg, cut, percentage, 0, "quick", float32_reproduced=False)
    assert check["first_difference"] is None and check["steps"] == recheck.REFERENCE_STEPS


class _SkippingAdam(torch.optim.Adam):
    """Adam that leaves out its 50th step."""

    def step(self, closure=None):
        self.calls = getattr(self, "calls", 0) + 1
        return None if self.calls == 50 else super().step(closure)


# deliberate changes to DANN: (object, attribute, replacement)
CHANGES = {
    "gradient not reversed": (adaptation, "reverse_gradient",
                              lambda x, weight: adaptation._ReverseGradient.apply(x, -weight)),
    "reversal weight 1% higher": (adaptation, "reversal_weight",
                                  lambda p, final, schedule, ramp=adaptation.reversal_weight:
                                  1.01 * ramp(p, final, schedule)),
    "one step skipped": (torch.optim, "Adam", _SkippingAdam),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_dann_fails_its_recheck(change, monkeypatch):
    monkeypatch.setattr(*CHANGES[change])
    chosen, cfg, cut, percentage = dann_plan()
    check = recheck.compare_trajectory(chosen, cfg, cut, percentage, 0, "quick", float32_reproduced=False)
    assert check["first_difference"] is not None, change
    shown = study.shown_check({**check, "stored_test_acc": 0.268, "reproduced": False})
    assert shown["trained again"].startswith("float64 steps differ from step")


def test_steps_are_recorded_only_where_the_float32_run_reproduces_the_stored_one(output_root):
    from functions.core.paths import REPO_ROOT
    shutil.copytree(REPO_ROOT / DIGITS / "results", output_root / DIGITS / "results",
                    ignore=shutil.ignore_patterns("references_*"))
    chosen, cfg, cut, percentage = dann_plan()
    with pytest.raises(DataError, match="does not reproduce the stored accuracy"):
        recheck.compare_trajectory(chosen, cfg, cut, percentage, 0, "quick", float32_reproduced=False)
    path = recheck.reference_path(chosen, "dann", "quick")
    assert not path.exists()
    recorded = recheck.compare_trajectory(chosen, cfg, cut, percentage, 0, "quick", float32_reproduced=True)
    (written,) = json.loads(path.read_text())[1:]
    (committed,) = json.loads((REPO_ROOT / DIGITS / "results" / path.name).read_text())[1:]
    assert recorded["first_difference"] is None and len(written["trajectory"]) == recheck.REFERENCE_STEPS
    assert first_difference(committed["trajectory"], written["trajectory"]) is None


def test_the_command_line_refuses_a_cut_point_for_a_baseline(capsys):
    from functions.__main__ import main
    assert main(["recheck", DIGITS, "--baseline", "--cut", "3"]) == 2
    assert "give --cut or --baseline, not both" in capsys.readouterr().err


# one stored run of each way of training the notebooks re-check, at the smallest fraction of its
# profile: the engine from a frozen prefix (F; FR and FT train the same way) and from the images
# (the baseline) on the range profile's 0.1%, the fine-tuning trainer through peft adapters merged
# after training (lora_r4; progressive, discriminative, IA3 and BitFit share its loop), distillation
# and DANN on the quick profile's 1%; and two runs that chose their learning rate on validation,
# trained again at the rate they chose (FR through the engine, BitFit through the trainer)
RECHECKS = [("MNIST", "range", "F", None), ("MNIST", "range", "FR", -1), ("MNIST", "quick", "lora_r4", None),
            (DIGITS, "quick", "distill", None), (DIGITS, "quick", "dann", 6), ("MNIST", "quick", "FR-tuned", 3),
            ("MNIST", "quick", "bitfit-tuned", 5)]
CHAOS_SCRIPT = """
import json, sys
from functions.notebooks import study
out = []
for folder, profile, mode, cut in json.loads(sys.argv[1]):
    chosen, cfg, grid = study.plan(folder, None, profile, mode)
    cut = grid.cut_points[len(grid.cut_points) // 2] if cut is None else cut
    check = study.recheck_run(chosen, cfg, cut, min(grid.percentages), 0, device="cpu", profile=profile)
    out.append([folder, mode, cut, check["reproduced"], check["stored_test_acc"], check["test_acc"]])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_rechecks_pass_under_another_cpus_rounding():
    env = {**os.environ, **AVX2, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHAOS_SCRIPT, json.dumps(RECHECKS)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    failed = [r for r in results if not r[3]]
    assert not failed, f"not reproduced under AVX2 kernels: {failed}"
    assert len(results) == len(RECHECKS)


@pytest.mark.slow
def test_a_changed_dann_fails_under_another_cpus_rounding_too():
    script = ("from functions.train import adaptation\n"
              "adaptation.reverse_gradient = lambda x, w: adaptation._ReverseGradient.apply(x, -w)\n"
              "from functions.notebooks import study\nfrom functions.runs import recheck\n"
              f"chosen, cfg, grid = study.plan({DIGITS!r}, None, 'quick', 'dann')\n"
              "print(recheck.compare_trajectory(chosen, cfg, cfg.depth, grid.percentages[0], 0, 'quick', False)"
              "['first_difference'])\n")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **AVX2, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] != "None"


def test_the_command_line_rechecks_a_run_with_its_folders_own_settings(capsys, monkeypatch):
    """The command's wiring (the adaptation notebook of MNIST_to_FashionMNIST re-checks that very
    run end to end, and the tests above the float64 steps themselves)."""
    from functions.__main__ import main
    asked = []

    def checked(setup, cfg, cut_point, percentage, repeat, **_):
        asked.append((setup.folder, tuple(cfg.alignment_weights), cut_point, percentage, repeat))
        return {"stored_test_acc": 0.5, "compared": "float64 steps", "steps": recheck.REFERENCE_STEPS,
                "first_difference": None, "reproduced": True}

    monkeypatch.setattr(study, "recheck_run", checked)
    # the MNIST <-> FashionMNIST pairs run DANN at the paper's single weight, not the tuned candidates
    assert main(["recheck", "MNIST_to_FashionMNIST", "--mode", "dann", "--cut", "6"]) == 0
    assert "first 100 steps in float64 as stored (reproduced" in capsys.readouterr().out
    assert main(["recheck", DIGITS, "--mode", "dann", "--cut", "6"]) == 0
    assert asked == [("MNIST_to_FashionMNIST", (1.0,), 6, 0.01, 0), (DIGITS, (0.3, 1.0), 6, 0.01, 0)]
