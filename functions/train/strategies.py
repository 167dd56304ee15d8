"""Fine-tuning strategies as modes of the cut-point study, built on :class:`Finetuner`.

At cut point k, blocks 0..k-1 keep their pretrained weights and are frozen (``progressive``,
``discriminative``) or adapted cheaply (``lora``, ``ia3``: peft adapters on their convolutions;
``bitfit``: their biases); blocks k.. keep their pretrained weights and train, as in mode F; the
output layer is new.  ``progressive`` trains the head first and unfreezes one block per stage from
the top down to block k (each stage stops early on a validation plateau; the best weights over
all stages are kept); ``discriminative`` gives block i the learning rate
``lr * lr_decay ** (depth - i)``, the head ``lr``.

The frozen prefix of progressive and discriminative runs never changes, so their inputs are the
engine's cached prefix outputs at the cut; the adapter strategies change every block and run
from the images.
"""
from __future__ import annotations

import time

import numpy as np

from ..config import STRATEGIES, Config
from ..core.errors import DataError
from ..data.tasks import Split
from ..models.registry import STUDY, create_backbone
from ..models.study_cnn import StudyCNN
from .finetune import HEAD, EarlyStopping, Finetuner, ModelCheckpoint
from .trainer import RunResult


def finetuner_for(cfg: Config, pretrained: StudyCNN, cut_point: int, num_classes: int, seed: int) -> Finetuner:
    """The strategy's network at ``cut_point``, its trainable parts set; the head seeded by ``seed``."""
    if cfg.strategy not in STRATEGIES:
        raise DataError(f"{cfg.strategy!r} is not a fine-tuning strategy; choose one of {list(STRATEGIES)}")
    cfg.check_cut(cut_point)
    backbone = create_backbone(STUDY, pretrained, mean=0.0, std=1.0)  # the study's tensors are normalised already
    names = backbone.layer_names
    below = names[:cut_point]
    rates = {}
    if cfg.strategy == "discriminative":
        rates = {HEAD: cfg.lr_fine_tune, **{name: cfg.lr_fine_tune * cfg.lr_decay ** (len(names) - i)
                                           for i, name in enumerate(names) if i >= cut_point}}
    hidden = (cfg.hidden_dim_lin,) if cfg.two_linear_layers else ()
    tuner = Finetuner(backbone, num_classes, freeze_layers=names if cfg.strategy == "progressive" else below,
                      head_hidden_sizes=hidden, layer_learning_rates=rates, lr=cfg.lr_fine_tune, pooling="flatten",
                      seed=seed)
    if cfg.strategy == "bitfit":
        tuner.train_biases(below)
    elif cfg.strategy == "lora" and below:
        tuner.add_lora(below, cfg.lora_rank, cfg.lora_alpha)
    elif cfg.strategy == "ia3" and below:
        tuner.add_ia3(below)
    return tuner


def train_strategy(cfg: Config, pretrained: StudyCNN, cut_point: int, num_classes: int, train: Split, val: Split,
                   test: Split, start: int, seed: int) -> tuple[Finetuner, RunResult]:
    """One run of ``cfg.strategy`` at ``cut_point``; the splits enter at block ``start`` (the cut
    for the strategies with a frozen prefix, 0 for the adapters).  Adapters are merged into the
    weights before the test (the merged network computes what the adapted one did)."""
    began = time.perf_counter()
    tuner = finetuner_for(cfg, pretrained, cut_point, num_classes, seed)
    trainable = tuner.trainable_parameters()
    names = tuner.layer_names
    fit = dict(batch_size=cfg.batch_size, inputs_at=start, min_steps_per_epoch=cfg.min_steps_per_epoch)
    if cfg.strategy == "progressive":
        best, epochs, stop = ModelCheckpoint(), 0, EarlyStopping(cfg.early_stop_patience)
        stages = len(names) - cut_point + 1
        for stage in range(stages):
            if stage:
                tuner.unfreeze_layers([names[-stage]])
            # each stage but the last lasts at most stage_epochs; the last one, where every block
            # from the cut up trains, has the whole budget, as the other modes' runs do
            budget = cfg.num_train if stage == stages - 1 else cfg.stage_epochs
            result = tuner.fit(train, val, epochs=budget, callbacks=[stop, best], seed=seed + stage, **fit)
            epochs += result.epochs
        result.epochs = epochs
        trainable = tuner.trainable_parameters()
    else:
        result = tuner.fit(train, val, epochs=cfg.num_train, callbacks=[EarlyStopping(cfg.early_stop_patience)],
                           seed=seed, **fit)
    tuner.merge()
    # in float32, as the stored runs were scored: a run trained again records the same number
    result.test_acc = float(np.float32(tuner.evaluate(test, inputs_at=start)["test_acc"]))
    result.n_train, result.trainable_params = len(train), trainable
    result.seconds = time.perf_counter() - began
    return tuner, result
