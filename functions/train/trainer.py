"""Training one network: Adam or SGD, early stopping on validation accuracy, best weights back.

:func:`fit` takes any ``nn.Module``.  For the study CNN, speed comes from data layout, not from
changing the protocol: splits are whole tensors, and when the first ``k`` blocks are frozen
their output never changes, so it is computed once per (model, cut, data) by
:func:`prefix_features` and training runs only the blocks after the cut (``start=k``).
Methods are terms added to the cross-entropy (``extra_loss``: distillation, domain alignment);
what a step trains on comes from a batch sampler (:class:`ShuffledBatches`, or
:class:`PairedBatches` for labelled images paired with unlabelled ones).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import forward_chunk
from ..data.tasks import Split
from ..models.study_cnn import StudyCNN, frozen_prefix_length

Forward = Callable[[torch.Tensor], torch.Tensor]
ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
AfterEpoch = Callable[[int, float], None]
AfterStep = Callable[[float], bool]
Epochs = Iterator[Iterator[tuple[torch.Tensor, torch.Tensor]]]


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


def best_on_validation(name: str, values, candidates: list[tuple]) -> tuple:
    """Of one run's ``candidates`` (``(model, RunResult)``, one per setting of ``values`` of
    ``name``, each from the same seeds), the one with the best validation accuracy (the first of
    equal ones): its result notes the value it chose (``chosen_<name>``) and each value's validation
    accuracy, and its seconds become all the candidates' (what a run that chooses costs; its own in
    ``seconds_chosen_<name>``)."""
    best = max(range(len(candidates)), key=lambda i: candidates[i][1].val_acc)
    model, result = candidates[best]
    result.details = {**(result.details or {}), f"chosen_{name}": values[best],
                      **{f"val_acc_{name}{value:g}": run.val_acc for value, (_, run) in zip(values, candidates)},
                      f"seconds_chosen_{name}": result.seconds}
    result.seconds = sum(run.seconds for _, run in candidates)
    return model, result


def best_learning_rate(learning_rates, candidates: list[tuple]) -> tuple:
    """:func:`best_on_validation` of the learning rates."""
    return best_on_validation("lr", learning_rates, candidates)


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
    correct, chunk = 0, forward_chunk(split.x.device)
    for i in range(0, len(split), chunk):
        logits = forward(split.x[i:i + chunk])
        correct += (logits.argmax(1) == split.y[i:i + chunk]).sum().item()
    model.train(was_training)
    return correct / len(split)


@torch.no_grad()
def prefix_features(model: StudyCNN, split: Split, stop: int) -> Split:
    """The activation entering block ``stop`` for every image of ``split`` (computed in chunks)."""
    model.eval()
    chunk = forward_chunk(split.x.device)
    parts = [model.features(split.x[i:i + chunk], 0, stop) for i in range(0, len(split), chunk)]
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


def as_dtype(split: Split | None, dtype: torch.dtype) -> Split | None:
    """``split`` with its images in ``dtype`` (integer inputs, such as token ids, as they are)."""
    return Split(split.x.to(dtype), split.y) if split is not None and split.x.is_floating_point() else split


class ShuffledBatches:
    """The batches of ordinary training: an epoch passes over the training rows in a new seeded
    order as many times as it takes to make ``min_steps`` optimiser steps (see
    :func:`passes_per_epoch`); the last batch of a pass may be smaller, and joins the one before
    it when it would hold fewer than ``min_batch`` rows (a BatchNorm layer cannot train on one
    image whose feature map is 1 x 1)."""

    def __init__(self, batch_size: int, min_steps: int = 1, min_batch: int = 1):
        self.batch_size, self.min_steps, self.min_batch = batch_size, min_steps, min_batch

    def __call__(self, train: Split, generator: torch.Generator) -> Epochs:
        """Each epoch's ``(rows, inputs)`` batches, drawn from ``generator`` as the epoch runs."""
        passes = passes_per_epoch(len(train), self.batch_size, self.min_steps)

        def epoch():
            for _ in range(passes):
                order = torch.randperm(len(train), generator=generator)
                starts = list(range(0, len(train), self.batch_size))
                if len(starts) > 1 and len(train) - starts[-1] < self.min_batch:
                    starts.pop()
                for i, start in enumerate(starts):
                    rows = order[start:starts[i + 1] if i + 1 < len(starts) else len(train)]
                    yield rows, train.x[rows]
        while True:
            yield epoch()


class PairedBatches:
    """Labelled rows paired with as many ``unlabelled`` images (in the run's dtype): a step's input
    is a labelled batch followed by an unlabelled one of the same size (the ``inputs`` an extra loss
    sees), so both weigh the same in the step and a network that splits its input in halves
    (domain alignment) finds them; the forward pass returns the logits of the labelled half.  An
    epoch passes over the unlabelled images in whole batches, as many times as it takes to make
    ``min_steps`` steps; the labelled rows cycle in whole batches through seeded passes of their own."""

    def __init__(self, unlabelled: torch.Tensor, labelled: int, batch_size: int, min_steps: int = 1):
        self.unlabelled = unlabelled
        self.batch_size = min(batch_size, len(unlabelled), labelled)
        self.per_pass = len(unlabelled) // self.batch_size
        self.passes = max(1, -(-min_steps // self.per_pass))

    @property
    def steps_per_epoch(self) -> int:
        return self.per_pass * self.passes

    def _labelled(self, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        while True:
            order = torch.randperm(size, generator=generator)
            for i in range(0, size - self.batch_size + 1, self.batch_size):
                yield order[i:i + self.batch_size]

    def __call__(self, train: Split, generator: torch.Generator) -> Epochs:
        """Each epoch's ``(labelled rows, inputs)`` batches; an unlabelled pass draws its order
        before the labelled batch it starts with, and a labelled pass when the one before runs out."""
        labelled, size = self._labelled(len(train), generator), self.batch_size

        def epoch():
            for _ in range(self.passes):
                order = torch.randperm(len(self.unlabelled), generator=generator)
                for i in range(self.per_pass):
                    rows = next(labelled)
                    yield rows, torch.cat([train.x[rows], self.unlabelled[order[i * size:][:size]]])
        while True:
            yield epoch()


def fit(model: nn.Module, train: Split, val: Split | None, test: Split | None, *, lr: float, max_epochs: int,
        patience: int, batch_size: int, seed: int, start: int = 0, forward: Forward | None = None,
        optimizer: str = "adam", momentum: float = 0.9, param_groups: list[dict] | None = None,
        extra_loss: ExtraLoss | None = None, after_epoch: AfterEpoch | None = None,
        after_step: AfterStep | None = None, batches: ShuffledBatches | PairedBatches | None = None,
        min_steps_per_epoch: int = 1, dtype: torch.dtype = torch.float32) -> RunResult:
    """Train ``model`` in place and return its accuracies with the best validation weights.

    Each epoch visits ``train`` in an order drawn from a generator seeded with ``seed``, so a
    run is repeatable on the CPU.  Logits come from ``forward`` (default: the model; for the
    study CNN, ``start`` says at which block the splits' tensors enter).  The loss is the
    cross-entropy plus ``extra_loss(model, rows, inputs, logits, labels)`` when given (``rows``: the
    batch's indices into ``train``, to look up per-image targets computed once, e.g. a teacher's).
    ``param_groups`` (default: every parameter that requires grad, at ``lr``) may give groups
    their own ``lr`` and ``weight_decay``; ``after_epoch(epoch, val_acc)`` sees each epoch's
    validation accuracy (learning curves); ``after_step(loss)`` runs after each optimiser step and
    ends training by returning False (a reference trajectory's first steps).  ``batches`` makes
    each epoch's batches (default :class:`ShuffledBatches` of ``batch_size``, at least
    ``min_steps_per_epoch`` steps: a run on a few dozen images then gets as many steps between
    validations as a large run gets in one pass, instead of stopping after a handful).  Training
    stops once validation accuracy has not improved for ``patience`` epochs; a non-finite loss
    stops it with status ``diverged``.  The model ends holding the best state seen (buffers such as
    batch-norm statistics included), in ``dtype`` (the splits are converted too) and in eval mode.
    Without ``val`` there is nothing to select on: training lasts ``max_epochs``, keeps its last
    weights and scores nothing (the accuracies are NaN; the caller scores what its method means).
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
    batches = batches or ShuffledBatches(batch_size, min_steps_per_epoch)
    epochs_of = batches(train, torch.Generator().manual_seed(seed))
    best_val, stale, epochs, status = -1.0, 0, 0, "ok"
    best_state = copy.deepcopy(model.state_dict()) if val is not None else None
    for epoch in range(max_epochs):
        epochs += 1
        model.train()
        ended = _train_epoch(model, forward, optim, train, next(epochs_of), extra_loss, after_step)
        if ended is not None:  # diverged, or stopped by after_step
            status = "diverged" if ended == "diverged" else status
            break
        if val is None:
            continue
        val_acc = accuracy(model, val, forward=forward)
        if after_epoch is not None:
            after_epoch(epoch, val_acc)
        if val_acc > best_val:
            best_val, best_state, stale = val_acc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()

    def score(split: Split | None) -> float:
        return accuracy(model, split, forward=forward) if val is not None and split is not None else float("nan")
    return RunResult(train_acc=score(train), val_acc=score(val), test_acc=score(test), epochs=epochs,
                     seconds=time.perf_counter() - began, n_train=len(train), status=status)


def _train_epoch(model: nn.Module, forward: Forward, optim: torch.optim.Optimizer, train: Split,
                 batches: Iterator[tuple[torch.Tensor, torch.Tensor]], extra_loss: ExtraLoss | None, after_step: AfterStep | None) -> str | None:
    """One epoch's steps; ``diverged`` as soon as a batch's loss is not finite, ``stopped`` when
    ``after_step`` ends training, None when the epoch ran to its end."""
    for rows, x in batches:
        y = train.y[rows]
        logits = forward(x)
        loss = F.cross_entropy(logits, y)
        if extra_loss is not None:
            loss = loss + extra_loss(model, rows, x, logits, y)
        if not math.isfinite(loss.item()):
            return "diverged"
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if after_step is not None and not after_step(loss.item()):
            return "stopped"
    return None
