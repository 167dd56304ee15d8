"""Training one network: Adam or SGD, early stopping on validation accuracy, best weights back.

:func:`fit` takes any ``nn.Module``.  For the study CNN, speed comes from data layout, not from
changing the protocol: splits are whole tensors, and when the first ``k`` blocks are frozen
their output never changes, so it is computed once per (model, cut, data) by
:func:`prefix_features` and training runs only the blocks after the cut (``start=k``).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tasks import Split
from ..models.study_cnn import StudyCNN, frozen_prefix_length

EVAL_CHUNK = 256  # small chunks stay in cache: about 2x faster than large ones on a 2-core CPU

Forward = Callable[[torch.Tensor], torch.Tensor]
BeforeEpoch = Callable[[int, nn.Module, torch.optim.Optimizer], None]
ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
AfterEpoch = Callable[[int, float], None]


@dataclass
class RunResult:
    train_acc: float
    val_acc: float
    test_acc: float
    epochs: int
    seconds: float
    n_train: int
    status: str = "ok"
    trainable_params: int | None = None  # recorded by the strategies, whose counts differ per cut and mode
    details: dict | None = None  # a mode's own measurements (distillation: the teacher's), stored beside

    def record(self) -> dict:
        fields = {k: v for k, v in asdict(self).items() if v is not None and k != "details"}
        return {**fields, **(self.details or {})}


def study_forward(model: StudyCNN, start: int) -> Forward:
    """The study CNN's logits for inputs entering at block ``start`` (0: images; k: the cached
    output of a frozen prefix of k blocks), refused when block ``start - 1`` still trains."""
    if start == 0:
        return model
    if start > frozen_prefix_length(model):
        raise ValueError(f"inputs enter at block {start} but block {frozen_prefix_length(model)} is trainable")
    return lambda x: model.forward_from(x, start)


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, start: int = 0, *, forward: Forward | None = None) -> float:
    """Fraction of ``split`` classified correctly, in eval mode (batch norm uses its running
    statistics).  Logits come from ``forward`` (default: the model; with ``start``, the study
    CNN from block ``start`` on)."""
    if len(split) == 0:
        return float("nan")
    forward = forward or study_forward(model, start)
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split), EVAL_CHUNK):
        logits = forward(split.x[i:i + EVAL_CHUNK])
        correct += (logits.argmax(1) == split.y[i:i + EVAL_CHUNK]).sum().item()
    model.train(was_training)
    return correct / len(split)


@torch.no_grad()
def prefix_features(model: StudyCNN, split: Split, stop: int) -> Split:
    """The activation entering block ``stop`` for every image of ``split`` (computed in chunks)."""
    model.eval()
    parts = [model.features(split.x[i:i + EVAL_CHUNK], 0, stop) for i in range(0, len(split), EVAL_CHUNK)]
    x = torch.cat(parts) if parts else split.x[:0]
    return Split(x, split.y)


def _optimizer(name: str, groups: list[dict], lr: float, momentum: float) -> torch.optim.Optimizer:
    """Adam with torch's defaults, or SGD with momentum; a group's own ``lr`` or
    ``weight_decay`` overrides the default (weight decay is an L2 term on the gradient)."""
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer {name!r} is unknown; choose 'adam' or 'sgd'")


def passes_per_epoch(size: int, batch_size: int, min_steps: int) -> int:
    """Passes over ``size`` images in batches of ``batch_size`` that make at least ``min_steps`` steps."""
    steps_per_pass = max(1, -(-size // batch_size))
    return max(1, -(-min_steps // steps_per_pass))


def as_dtype(split: Split, dtype: torch.dtype) -> Split:
    """``split`` with its images in ``dtype`` (integer inputs, such as token ids, as they are)."""
    return Split(split.x.to(dtype), split.y) if split.x.is_floating_point() else split


def fit(model: nn.Module, train: Split, val: Split, test: Split, *, lr: float, max_epochs: int, patience: int,
        batch_size: int, seed: int, start: int = 0, forward: Forward | None = None, optimizer: str = "adam",
        momentum: float = 0.9, param_groups: list[dict] | None = None, before_epoch: BeforeEpoch | None = None,
        extra_loss: ExtraLoss | None = None, after_epoch: AfterEpoch | None = None,
        min_steps_per_epoch: int = 1, dtype: torch.dtype = torch.float32) -> RunResult:
    """Train ``model`` in place and return its accuracies with the best validation weights.

    Each epoch visits ``train`` in an order drawn from a generator seeded with ``seed``, so a
    run is repeatable on the CPU.  Logits come from ``forward`` (default: the model; for the
    study CNN, ``start`` says at which block the splits' tensors enter).  The loss is the
    cross-entropy plus ``extra_loss(model, rows, inputs, logits, labels)`` when given (``rows``: the
    batch's indices into ``train``, to look up per-image targets computed once, e.g. a teacher's).
    ``param_groups`` (default: every parameter that requires grad, at ``lr``) may give groups
    their own ``lr`` and ``weight_decay``; ``before_epoch(epoch, model, optimizer)`` runs at the
    start of each epoch (0-based), after the model is put in train mode, e.g. to unfreeze layers
    and add them to the optimizer; ``after_epoch(epoch, val_acc)`` sees each epoch's validation
    accuracy (learning curves).  An epoch passes over ``train`` as many times as it takes to make
    ``min_steps_per_epoch`` optimiser steps, each pass in a new order: a run on a few dozen
    images then gets as many steps between validations as a large run gets in one pass, instead
    of stopping after a handful.  Training stops once validation accuracy has not improved
    for ``patience`` epochs; a non-finite loss stops it with status ``diverged``.  The model
    ends holding the best state seen (buffers such as batch-norm statistics included), in
    ``dtype`` (the splits are converted too) and in eval mode.
    """
    began = time.perf_counter()
    model.to(dtype)
    train, val, test = (as_dtype(s, dtype) for s in (train, val, test))
    if forward is None:
        forward = study_forward(model, start)
    elif start:
        raise ValueError("give either forward or start, not both")
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optim = _optimizer(optimizer, groups, lr, momentum)
    generator = torch.Generator().manual_seed(seed)
    best_val, best_state, stale, epochs, status = -1.0, copy.deepcopy(model.state_dict()), 0, 0, "ok"
    for epoch in range(max_epochs):
        epochs += 1
        model.train()
        if before_epoch is not None:
            before_epoch(epoch, model, optim)
        passes = passes_per_epoch(len(train), batch_size, min_steps_per_epoch)
        if not all(_train_epoch(model, forward, optim, train, batch_size, generator, extra_loss) for _ in range(passes)):
            status = "diverged"
            break
        val_acc = accuracy(model, val, forward=forward)
        if after_epoch is not None:
            after_epoch(epoch, val_acc)
        if val_acc > best_val:
            best_val, best_state, stale = val_acc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return RunResult(
        train_acc=accuracy(model, train, forward=forward),
        val_acc=accuracy(model, val, forward=forward),
        test_acc=accuracy(model, test, forward=forward),
        epochs=epochs,
        seconds=time.perf_counter() - began,
        n_train=len(train),
        status=status,
    )


def _train_epoch(model: nn.Module, forward: Forward, optim: torch.optim.Optimizer, train: Split, batch_size: int,
                 generator: torch.Generator, extra_loss: ExtraLoss | None) -> bool:
    """One pass over ``train`` in a seeded order; False as soon as a batch's loss is not finite."""
    order = torch.randperm(len(train), generator=generator)
    for i in range(0, len(train), batch_size):
        index = order[i:i + batch_size]
        x, y = train.x[index], train.y[index]
        logits = forward(x)
        loss = F.cross_entropy(logits, y)
        if extra_loss is not None:
            loss = loss + extra_loss(model, index, x, logits, y)
        if not math.isfinite(loss.item()):
            return False
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return True
