"""Does a stored run still come out of the code?  Trained again, and compared in a way that holds
on any kind of CPU.

Results files are resumed, so a notebook re-run reads them instead of training; a re-check
trains one stored run again so that a code change altering results shows all the same.  How it
compares depends on whether the training is stable under float rounding:

* the study's cut-point modes, the fine-tuning strategies and distillation land within 0.01 of
  the stored test accuracy on every CPU we measured (AMD Zen 3, Zen 4 and Intel Xeon, and under
  AVX2 kernels on an AVX-512 machine: the suite checks the last one), so they are compared there;
* the aligning modes (DANN, CORAL) are chaotic: one seed ends anywhere from 0.27 to 0.59.  They
  are compared by their first :data:`REFERENCE_STEPS` optimiser steps trained in float64 with
  deterministic algorithms against a stored trajectory of the same steps
  (``references_<setup>_<mode>.json`` beside the results), which every CPU reproduces to about
  1e-11 and any change to the method's loss or steps does not.

A missing trajectory is recorded on the first re-check, but only on a machine whose float32 run
reproduces the stored accuracy, so that the trajectory stands for the code that wrote the run.
"""
from __future__ import annotations

from ..config import ALIGNING_MODES, LEGACY_VALUES, Config, Setup
from ..core.device import pick_device
from ..core.errors import DataError
from ..core.paths import results_dir
from ..data.catalog import same_percentage
from ..train.reference import Trajectory, deterministic, first_difference
from .pretrained import load_pretrained
from .store import BASELINE_CUT, ResultsFile, load_results, results_path, sweep_key
from .sweep import run_inputs, train_group

REFERENCE_STEPS = 100  # chaos grows: two CPUs agree to 2e-11 at step 100, to 2e-7 at step 200
FLOAT32_TOLERANCE = 0.01  # the largest move between kinds of CPU seen in stable modes was 0.008


def stored_cell(setup: Setup, cfg: Config, cut_point: int, percentage: float, profile: str) -> dict:
    """The stored runs of one cell: repeat -> record."""
    kind = "baselines" if cut_point == BASELINE_CUT else "results"
    path = results_path(setup.folder, kind, setup.name, cfg.mode, profile)
    return {r["repeat"]: r for r in load_results(path)[1]
            if r["sampled_cut_point"] == cut_point and same_percentage(r["sampled_percentage"], percentage)}


def retrain_stored_run(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int,
                       device: str = "auto", profile: str = "quick", trajectory: Trajectory | None = None) -> tuple:
    """One stored run trained again from scratch: ``(model, result, stored record)``.

    The run trains alone, at the cost of one run: the sweep trained its cell's repeats as one
    group, whose grouped convolutions round float32 sums in another order, so it comes back to
    within the float rounding between kinds of CPU (:data:`FLOAT32_TOLERANCE`), not bit for bit.
    With ``trajectory`` (aligning modes) only its first steps train, in its dtype."""
    stored = stored_cell(setup, cfg, cut_point, percentage, profile)
    if repeat not in stored:
        kind = "baselines" if cut_point == BASELINE_CUT else "results"
        raise DataError(f"{results_path(setup.folder, kind, setup.name, cfg.mode, profile)} has no run at cut "
                        f"{cut_point}, percentage {percentage}, repeat {repeat}")
    cfg = cfg.as_chosen(stored[repeat])  # a tuned mode's run trains again at the setting it chose
    task = cfg.target_task()
    source = None if cut_point == BASELINE_CUT else load_pretrained(setup, cfg)
    inputs = run_inputs(cfg, task, source, max(cut_point, 0), pick_device(device))
    ((model, result),) = train_group(cfg, task, source, cut_point, [(percentage, repeat)], inputs, trajectory)
    return model, result, stored[repeat]


def reference_path(setup: Setup, mode: str, profile: str):
    return results_dir(setup.folder, profile) / f"references_{setup.name}_{mode}.json"


def float64_steps(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int, profile: str,
                  steps: int = REFERENCE_STEPS, reference: list | None = None) -> list:
    """The run's first ``steps`` optimiser steps in float64 on the CPU, deterministic algorithms on;
    with a ``reference``, only up to the first step that leaves it."""
    trajectory = Trajectory(steps, reference=reference)
    with deterministic():
        retrain_stored_run(setup, cfg, cut_point, percentage, repeat, "cpu", profile, trajectory)
    return trajectory.points


def _references(setup: Setup, cfg: Config, profile: str) -> ResultsFile:
    return ResultsFile(reference_path(setup, cfg.mode, profile),
                       {**cfg.params(), "reference_steps": REFERENCE_STEPS, "reference_dtype": "float64"},
                       legacy=LEGACY_VALUES)


def _run_key(cut_point: int, percentage: float, repeat: int) -> tuple:
    return sweep_key({"sampled_percentage": percentage, "sampled_cut_point": cut_point, "repeat": repeat})


def has_trajectory(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int, profile: str) -> bool:
    """Whether the run's float64 reference steps are stored."""
    key = _run_key(cut_point, percentage, repeat)
    return reference_path(setup, cfg.mode, profile).exists() and \
        any(sweep_key(r) == key for r in _references(setup, cfg, profile).records)


def compare_trajectory(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int, profile: str,
                       float32_reproduced: bool) -> dict:
    """The run's float64 steps against its stored reference (recorded here when there is none and
    this machine reproduced the stored accuracy in float32)."""
    references = _references(setup, cfg, profile)
    run = {"sampled_percentage": percentage, "sampled_cut_point": cut_point, "repeat": repeat}
    stored = [r["trajectory"] for r in references.records if sweep_key(r) == _run_key(cut_point, percentage, repeat)]
    if not stored and not float32_reproduced:
        raise DataError(f"{references.path} has no float64 steps of {cfg.mode} at cut {cut_point}, percentage "
                        f"{percentage}, repeat {repeat}, and this machine does not reproduce the stored accuracy "
                        f"to record them: run the re-check on the kind of CPU that wrote the results file")
    again = float64_steps(setup, cfg, cut_point, percentage, repeat, profile, reference=stored[0] if stored else None)
    if not stored:
        references.add({**run, "trajectory": again})
    return {"compared": "float64 steps", "steps": len(again),
            "first_difference": first_difference(stored[0], again) if stored else None}


def recheck(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int = 0,
            tolerance: float = FLOAT32_TOLERANCE, device: str = "auto", profile: str = "quick",
            model_wanted: bool = True) -> tuple:
    """``(model trained again, check)``: the check holds the stored and the new test accuracy and
    ``reproduced``, decided as the module's docstring says.  An aligning mode whose float64 steps
    are stored is decided by them alone: without ``model_wanted`` its float32 run is not trained
    (its accuracy would be shown, never compared), and the model and ``test_acc`` are None."""
    aligning = cfg.strategy in ALIGNING_MODES and cut_point != BASELINE_CUT
    if aligning and not model_wanted and has_trajectory(setup, cfg, cut_point, percentage, repeat, profile):
        stored = stored_cell(setup, cfg, cut_point, percentage, profile).get(repeat)
        if stored is None:
            raise DataError(f"no stored {cfg.mode} run at cut {cut_point}, percentage {percentage}, repeat {repeat}")
        check = {"cut_point": cut_point, "percentage": percentage, "repeat": repeat,
                 "stored_test_acc": stored["test_acc"], "test_acc": None, "within_tolerance": None,
                 **compare_trajectory(setup, cfg, cut_point, percentage, repeat, profile, False)}
        return None, {**check, "reproduced": check["first_difference"] is None}
    model, result, stored = retrain_stored_run(setup, cfg, cut_point, percentage, repeat, device, profile)
    within = abs(result.test_acc - stored["test_acc"]) <= tolerance
    check = {"cut_point": cut_point, "percentage": percentage, "repeat": repeat,
             "stored_test_acc": stored["test_acc"], "test_acc": result.test_acc, "within_tolerance": within}
    if aligning:
        check.update(compare_trajectory(setup, cfg, cut_point, percentage, repeat, profile, within))
        check["reproduced"] = check["first_difference"] is None
    else:
        check.update(compared=f"float32 within {tolerance}", reproduced=within)
    return model, check
