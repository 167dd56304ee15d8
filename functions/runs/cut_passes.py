"""A source model's activations at every cut point: the blocks run once per chunk of images, and
each activation entering a block is handed on as it is made (only one chunk's is alive).

:class:`functions.analysis.transferability.CutScores` scores what this pass hands it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.study_cnn import StudyCNN


@contextmanager
def _evaluating(model: StudyCNN):
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


@torch.no_grad()
def cut_shapes(model: StudyCNN, x: torch.Tensor) -> list[tuple]:
    """(channels, height, width) of the activation entering each block 0..depth (0: the image)."""
    with _evaluating(model) as device:
        return [tuple(model.features(x[:1].to(device), 0, k).shape[1:]) for k in range(len(model.blocks) + 1)]


@torch.no_grad()
def pass_per_cut(model: StudyCNN, x: torch.Tensor, feed: Callable, chunk_size: int = 512,
                 progress: bool = True) -> np.ndarray:
    """Run ``model``'s blocks once per chunk of ``x``: ``feed(rows, k, activation)`` receives the
    activation entering block k (0: the images) of the rows ``rows`` (a slice); returns the source
    head's softmax (float64) of every image."""
    probs = []
    with _evaluating(model) as device:
        depth = len(model.blocks)
        for i in tqdm(range(0, len(x), chunk_size), desc="cut scores", unit="chunk", disable=not progress):
            rows = slice(i, i + chunk_size)
            h = x[rows].to(device)
            for k in range(depth + 1):
                if k:
                    h = model.blocks[k - 1](h)
                feed(rows, k, h)
            probs.append(torch.softmax(model.head(h).double(), 1).cpu().numpy())
    return np.concatenate(probs)
