"""The runs of the adaptation and distillation modes at one cut point, for the sweep.

Adaptation modes start from the whole source network (the BatchNorm variant) and see the run's
target subset without its labels; distillation trains the study's network cut as in FR, with a
teacher fine-tuned on the same labelled subset.  A teacher is trained once per subset and
process and reused across cut points: it does not depend on the cut.
"""
from __future__ import annotations

import itertools
import json

from ..config import ADAPTATION_MODES, Config, setup_for
from ..data.tasks import Split, TaskData
from ..models.study_cnn import StudyCNN, cut
from ..train.adaptation import adapt
from ..train.distillation import check_teacher, distil, inference_ms, parameter_count
from ..train.engine import fit_group
from .pretrained import load_pretrained

_TEACHERS: dict = {}  # (teacher config, seed, size) -> (teacher, its measurements): one per subset of a sweep


def domain_runs(cfg: Config, task: TaskData, pretrained: StudyCNN, cut_point: int, inputs, subsets: list,
                seeds: list, teacher_seeds: list, trajectory=None) -> list[tuple]:
    """``(model, result)`` per run; ``subsets`` are the runs' rows of the target training split;
    ``trajectory`` (one DANN or CORAL run): record its first steps instead (see
    :mod:`functions.train.reference`)."""
    _, train, val, test = inputs
    if cfg.strategy in ADAPTATION_MODES:
        source = cfg.source_task()
        source_train, source_val = (s.to(train.y.device) for s in (source.train, source.val))
        return [adapt(cfg.strategy, pretrained, cut_point, source_train, source_val, train.subset(rows), test,
                      weights=cfg.alignment_weights, lrs=cfg.learning_rates, schedules=cfg.reversal_schedules,
                      epochs=cfg.num_train, batch_size=cfg.batch_size, min_steps_per_epoch=cfg.min_steps_per_epoch,
                      seed=seed, trajectory=trajectory)
                for rows, seed in zip(subsets, seeds)]
    settings = list(itertools.product(cfg.kd_temperatures or (cfg.kd_temperature,), cfg.kd_alphas or (cfg.kd_alpha,)))
    runs = []
    for rows, seed, teacher_seed in zip(subsets, seeds, teacher_seeds):
        subset = train.subset(rows)
        teacher, measured = fine_tuned_teacher(cfg, task, subset, val, test, teacher_seed)
        candidates = []
        for temperature, alpha in settings:
            student = cut(pretrained, cut_point, cfg, task.num_classes, seed).to(train.x.device)
            result = distil(student, teacher, subset, val, test, temperature=temperature, alpha=alpha,
                            lr=cfg.lr_fine_tune, max_epochs=cfg.num_train, patience=cfg.early_stop_patience,
                            batch_size=cfg.batch_size, seed=seed, min_steps_per_epoch=cfg.min_steps_per_epoch)
            candidates.append((result.val_acc, temperature, alpha, student, result))
        # the first of equal validation accuracies: the order of the settings breaks ties
        val_acc, temperature, alpha, student, result = max(candidates, key=lambda c: c[0])
        chosen = {} if len(settings) == 1 else {
            "chosen_temperature": temperature, "chosen_alpha": alpha,
            **{f"val_acc_t{t:g}_a{a:g}": c_val for c_val, t, a, _, _ in candidates}}
        result.details = {**measured, "student_params": parameter_count(student),
                          "student_ms_per_image": inference_ms(student, test), **chosen}
        runs.append((student, result))
    return runs


def teacher_config(cfg: Config) -> Config:
    """The teacher: the study's network ``teacher_channels`` wide, pretrained on the same source,
    fine-tuned whole (mode F at cut 0)."""
    return cfg.replace(num_channels=cfg.teacher_channels, strategy="cut").with_mode("F")


def fine_tuned_teacher(cfg: Config, task: TaskData, train: Split, val: Split, test: Split, seed: int) -> tuple:
    """The teacher for one labelled subset, and its test accuracy, size and speed."""
    teacher_cfg = teacher_config(cfg)
    key = (json.dumps(teacher_cfg.params(), sort_keys=True), seed, len(train))
    if key not in _TEACHERS:
        source = load_pretrained(setup_for(cfg), teacher_cfg, log=lambda _: None)
        check_teacher(source, len(cfg.pre_train_classes), tuple(train.x.shape[1:]), "the teacher's source model")
        teacher = cut(source, 0, teacher_cfg, task.num_classes, seed)
        (result,) = fit_group([teacher], [train], val, test, lr=cfg.lr_fine_tune, max_epochs=cfg.num_train,
                              patience=cfg.early_stop_patience, batch_size=cfg.batch_size, seeds=[seed],
                              min_steps_per_epoch=cfg.min_steps_per_epoch, device=train.y.device)
        _TEACHERS[key] = teacher, {"teacher_test_acc": result.test_acc, "teacher_epochs": result.epochs,
                                   "teacher_params": parameter_count(teacher),
                                   "teacher_ms_per_image": inference_ms(teacher, test)}
    return _TEACHERS[key]

