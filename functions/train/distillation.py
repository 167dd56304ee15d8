"""Knowledge distillation: a small student learns from a fine-tuned teacher's softened outputs.

The loss is ``alpha * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - alpha) * CE``
(Hinton, Vinyals & Dean 2015): the ``T^2`` keeps the soft term's gradients on the scale of the
cross-entropy's as T changes, so ``alpha`` alone sets the mix.  Training is the project's
trainer (early stopping on the target's validation split, best weights kept), with the soft term
as its extra loss.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import forward_chunk
from ..core.errors import DataError
from ..data.tasks import Split
from .trainer import RunResult, fit


def check_distillation(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise DataError(f"temperature T={temperature} must be positive (1: the teacher's own probabilities; "
                        f"higher: softer ones, e.g. 4)")
    if not 0 <= alpha <= 1:
        raise DataError(f"alpha={alpha} must be in [0, 1]: the distillation term's share of the loss")


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(teacher / T || student / T) * T^2``, averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    check_distillation(temperature, alpha)
    return alpha * soft_loss(student_logits, teacher_logits, temperature) + \
        (1 - alpha) * F.cross_entropy(student_logits, labels)


def check_teacher(teacher: nn.Module, num_classes: int, in_shape: tuple, source: str = "the teacher") -> None:
    """Refuse a teacher that predicts other classes, or takes other images, than the target's."""
    classes = getattr(getattr(teacher, "fc", None), "out_features", None)
    if classes != num_classes:
        raise DataError(f"{source} predicts {classes} classes but the target task has {num_classes}; give a teacher "
                        f"fine-tuned on the target's classes")
    if tuple(getattr(teacher, "in_shape", in_shape)) != tuple(in_shape):
        raise DataError(f"{source} takes images of shape {tuple(teacher.in_shape)}, the target's are {tuple(in_shape)}")


def distil(student: nn.Module, teacher: nn.Module, train: Split, val: Split, test: Split, *, temperature: float,
           alpha: float, lr: float, max_epochs: int, patience: int, batch_size: int, seed: int,
           min_steps_per_epoch: int = 1) -> RunResult:
    """Train ``student`` in place on ``train`` (images) with the teacher's soft labels, which are
    computed once for every training image."""
    check_distillation(temperature, alpha)
    check_teacher(teacher, student.fc.out_features, tuple(train.x.shape[1:]))
    teacher.eval()
    chunk = forward_chunk(train.x.device)
    with torch.no_grad():
        targets = torch.cat([teacher(train.x[i:i + chunk]) for i in range(0, len(train), chunk)])

    def soft_term(model, rows, x, logits, y):
        # the trainer adds this to the cross-entropy it computes: alpha * (soft - CE) + CE is the loss above
        return alpha * (soft_loss(logits, targets[rows], temperature) - F.cross_entropy(logits, y))

    return fit(student, train, val, test, lr=lr, max_epochs=max_epochs, patience=patience, batch_size=batch_size,
               seed=seed, extra_loss=soft_term, min_steps_per_epoch=min_steps_per_epoch)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def inference_ms(model: nn.Module, split: Split) -> float:
    """Milliseconds per image of a forward pass over ``split`` in chunks, as the tests run."""
    model.eval()
    began, chunk = time.perf_counter(), forward_chunk(split.x.device)
    for i in range(0, len(split), chunk):
        model(split.x[i:i + chunk])
    return (time.perf_counter() - began) * 1000 / max(1, len(split))
