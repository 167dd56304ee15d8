"""Fitting one transferred network: Adam, early stopping on validation accuracy, best weights back.

Speed comes from data layout, not from changing the protocol: splits are whole tensors, and
when the first ``k`` blocks are frozen their output never changes, so it is computed once per
(model, cut, data) by :func:`prefix_features` and training runs only the blocks after the cut.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..data.tasks import Split
from ..models.study_cnn import StudyCNN, frozen_prefix_length

EVAL_CHUNK = 256  # small chunks stay in cache: about 2x faster than large ones on a 2-core CPU


@dataclass
class RunResult:
    train_acc: float
    val_acc: float
    test_acc: float
    epochs: int
    seconds: float
    n_train: int
    status: str = "ok"

    def record(self) -> dict:
        return asdict(self)


@torch.no_grad()
def accuracy(model: StudyCNN, split: Split, start: int = 0) -> float:
    """Fraction of ``split`` classified correctly; ``split.x`` enters the network at block ``start``."""
    if len(split) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split), EVAL_CHUNK):
        logits = model.forward_from(split.x[i:i + EVAL_CHUNK], start)
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


def fit(model: StudyCNN, train: Split, val: Split, test: Split, *, lr: float, max_epochs: int,
        patience: int, batch_size: int, seed: int, start: int = 0) -> RunResult:
    """Train ``model`` in place and return its accuracies with the best validation weights.

    ``start`` says at which block the splits' tensors enter the network (0: images; k: the
    cached output of a frozen prefix of k blocks).  Epochs stop early once validation accuracy
    has not improved for ``patience`` epochs; a non-finite loss stops training with status
    ``diverged`` and keeps the best weights seen before it.
    """
    began = time.perf_counter()
    if start > frozen_prefix_length(model):
        raise ValueError(f"inputs enter at block {start} but block {frozen_prefix_length(model)} is trainable")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    best_val, best_state, stale, epochs, status = -1.0, copy.deepcopy(model.state_dict()), 0, 0, "ok"
    model.train()
    for _ in range(max_epochs):
        epochs += 1
        order = torch.randperm(len(train), generator=generator)
        for i in range(0, len(train), batch_size):
            index = order[i:i + batch_size]
            loss = F.cross_entropy(model.forward_from(train.x[index], start), train.y[index])
            if not math.isfinite(loss.item()):
                status = "diverged"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if status == "diverged":
            break
        val_acc = accuracy(model, val, start)
        if val_acc > best_val:
            best_val, best_state, stale = val_acc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return RunResult(
        train_acc=accuracy(model, train, start),
        val_acc=accuracy(model, val, start),
        test_acc=accuracy(model, test, start),
        epochs=epochs,
        seconds=time.perf_counter() - began,
        n_train=len(train),
        status=status,
    )
