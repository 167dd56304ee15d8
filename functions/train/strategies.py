"""Fine-tuning strategies as modes of the cut-point study, built on :class:`Finetuner`.

At cut point k, blocks 0..k-1 keep their pretrained weights and are frozen (``progressive``,
``discriminative``) or adapted cheaply (``lora``, ``ia3``: peft adapters on their convolutions;
``bitfit``: their biases); blocks k.. keep their pretrained weights and train, as in mode F; the
output layer is new.  ``progressive`` trains the head first and unfreezes one block per stage from
the top down to block k (each stage stops early on a validation plateau; the best weights over
all stages are kept); ``discriminative`` gives block i the learning rate
``lr * lr_decay ** (depth - i)``, the head ``lr``.  The regularisers ``l2sp``, ``delta`` and
``bss`` train as F does, with their penalty (:mod:`functions.train.regularisers`) in the loss;
given several weights, a run trains at each from the same seeds and keeps the best on validation.

The frozen prefix of progressive and discriminative runs never changes, so their inputs are the
engine's cached prefix outputs at the cut; the adapter strategies change every block and run
from the images.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..config import FINE_TUNING, STRATEGIES, Config
from ..core.errors import DataError
from ..data.tasks import Split
from ..models.backbones import Backbone
from ..models.registry import STUDY, create_backbone
from ..models.study_cnn import StudyCNN
from .finetune import HEAD, EarlyStopping, Finetuner, ModelCheckpoint
from .regularisers import REGULARISERS, Regulariser
from .trainer import RunResult, best_on_validation


def finetuner_for(cfg: Config, pretrained: StudyCNN, cut_point: int, num_classes: int, seed: int) -> Finetuner:
    """The strategy's network at ``cut_point`` on the study CNN ``pretrained``, its trainable parts
    set; the head seeded by ``seed``."""
    cfg.check_cut(cut_point)
    backbone = create_backbone(STUDY, pretrained, mean=0.0, std=1.0)  # the study's tensors are normalised already
    hidden = (cfg.hidden_dim_lin,) if cfg.two_linear_layers else ()
    return strategy_finetuner(backbone, cfg.strategy, cut_point, num_classes, seed, lr=cfg.lr_fine_tune,
                              lr_decay=cfg.lr_decay, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                              head_hidden_sizes=hidden, pooling="flatten")


def strategy_finetuner(backbone: Backbone, strategy: str, cut_point: int, num_classes: int, seed: int, *, lr: float,
                       lr_decay: float = Config.lr_decay, lora_rank: int | None = Config.lora_rank,
                       lora_alpha: float = Config.lora_alpha, weight_decay: float = 0.0,
                       head_hidden_sizes=(), pooling: str | None = None) -> Finetuner:
    """``strategy``'s network at ``cut_point`` on any pretrained ``backbone`` (the study CNN, an
    ImageNet network): a new head seeded by ``seed``, the stages before the cut frozen or adapted."""
    if strategy not in FINE_TUNING:
        raise DataError(f"{strategy!r} is not a fine-tuning strategy; choose one of {list(FINE_TUNING)}")
    names = backbone.layer_names
    below = names[:cut_point]
    rates = {}
    if strategy == "discriminative":
        rates = {HEAD: lr, **{name: lr * lr_decay ** (len(names) - i) for i, name in enumerate(names) if i >= cut_point}}
    tuner = Finetuner(backbone, num_classes, freeze_layers=names if strategy == "progressive" else below,
                      head_hidden_sizes=head_hidden_sizes, layer_learning_rates=rates, lr=lr,
                      weight_decay=weight_decay, pooling=pooling, seed=seed)
    if strategy == "bitfit":
        tuner.train_biases(below)
    elif strategy == "lora" and below:
        tuner.add_lora(below, lora_rank, lora_alpha)
    elif strategy == "ia3" and below:
        tuner.add_ia3(below)
    return tuner


def train_strategy(cfg: Config, pretrained: StudyCNN, cut_point: int, num_classes: int, train: Split, val: Split,
                   test: Split, start: int, seed: int) -> tuple[Finetuner, RunResult]:
    """One run of ``cfg.strategy`` at ``cut_point`` on the study CNN; the splits enter at block
    ``start`` (:func:`input_stage`)."""
    began = time.perf_counter()
    tuner, result = fit_strategy(lambda: finetuner_for(cfg, pretrained, cut_point, num_classes, seed), cfg.strategy,
                                 cut_point, train, val, test, start, seed, epochs=cfg.num_train,
                                 stage_epochs=cfg.stage_epochs, patience=cfg.early_stop_patience,
                                 batch_size=cfg.batch_size, min_steps_per_epoch=cfg.min_steps_per_epoch,
                                 weights=cfg.regularisation_candidates)
    # in float32, as the stored runs were scored: a run trained again records the same number
    result.test_acc = float(np.float32(result.test_acc))
    result.seconds = time.perf_counter() - began
    return tuner, result


def input_stage(strategy: str, cut_point: int) -> int:
    """Where a strategy's inputs enter: at the cut for the strategies whose prefix stays frozen
    (its output is computed once), at the first stage for those that adapt it."""
    return cut_point if STRATEGIES[strategy]["prefix_cached"] else 0


def fit_strategy(build: Callable[[], Finetuner], strategy: str, cut_point: int, train: Split, val: Split,
                 test: Split, start: int, seed: int, *, epochs: int, stage_epochs: int, patience: int,
                 batch_size: int, min_steps_per_epoch: int, weights: tuple = ()) -> tuple[Finetuner, RunResult]:
    """A network made by ``build`` (:func:`strategy_finetuner`) trained the strategy's way and
    scored on ``test``.  A regulariser trains at each of its ``weights`` from the same seeds (a new
    network each) and keeps the one best on validation.  Adapters are merged into the weights
    before the test (the merged network computes what the adapted one did)."""
    fit = dict(epochs=epochs, stage_epochs=stage_epochs, patience=patience, batch_size=batch_size,
               min_steps_per_epoch=min_steps_per_epoch)
    if strategy not in REGULARISERS:
        tuner = build()
        return tuner, _fit_once(tuner, strategy, cut_point, train, val, test, start, seed, **fit)
    if not weights:
        raise DataError(f"{strategy} needs its weight; give at least one")
    candidates = []
    for weight in weights:
        tuner = build()
        regulariser = Regulariser(strategy, tuner.net, weight, start, train)
        candidates.append((tuner, _fit_once(tuner, strategy, cut_point, train, val, test, start, seed,
                                            regulariser=regulariser, **fit)))
    return best_on_validation("weight", weights, candidates) if len(weights) > 1 else candidates[0]


def _fit_once(tuner: Finetuner, strategy: str, cut_point: int, train: Split, val: Split, test: Split, start: int,
              seed: int, *, epochs: int, stage_epochs: int, patience: int, batch_size: int,
              min_steps_per_epoch: int, regulariser: Regulariser | None = None) -> RunResult:
    trainable = tuner.trainable_parameters()
    names = tuner.layer_names
    fit = dict(batch_size=batch_size, inputs_at=start, min_steps_per_epoch=min_steps_per_epoch)
    if strategy == "progressive":
        best, total, stop = ModelCheckpoint(), 0, EarlyStopping(patience)
        stages = len(names) - cut_point + 1
        for stage in range(stages):
            if stage:
                tuner.unfreeze_layers([names[-stage]])
            # each stage but the last lasts at most stage_epochs; the last one, where every block
            # from the cut up trains, has the whole budget, as the other modes' runs do
            budget = epochs if stage == stages - 1 else stage_epochs
            result = tuner.fit(train, val, epochs=budget, callbacks=[stop, best], seed=seed + stage, **fit)
            total += result.epochs
        result.epochs = total
        trainable = tuner.trainable_parameters()
    else:
        result = tuner.fit(train, val, epochs=epochs, callbacks=[EarlyStopping(patience)], seed=seed,
                           regulariser=regulariser, **fit)
    tuner.merge()
    result.test_acc = tuner.evaluate(test, inputs_at=start)["test_acc"]
    result.n_train, result.trainable_params = len(train), trainable
    return result
