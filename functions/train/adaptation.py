"""Unsupervised domain adaptation of the study CNN: labelled source images, unlabelled target images.

Three methods, each placed at a cut point k of the source network (its blocks 0..k-1 are "below
the cut"); the network is the study CNN or anything with its blocks (``blocks``, ``features``,
``head``, ``forward_from``): the trainable stages of a cut ImageNet backbone are seen that way
by :class:`~functions.models.stage_view.StageView`, so the same code adapts them:

* DANN (Ganin & Lempitsky 2015): a domain classifier on the features entering block k, trained
  through a gradient-reversal layer, so that the blocks below learn features the classifier
  cannot tell apart by domain.  The reversal weight ramps from 0 to ``dann_weight`` as
  ``2 / (1 + exp(-10 p)) - 1`` over the training progress p, as in the paper (schedule ``ramp``),
  or holds ``dann_weight`` from the first step (schedule ``constant``).
* CORAL (Sun & Saenko 2016, the deep form): the squared Frobenius distance between the source and
  target feature covariances at the cut, over ``4 d^2``, added to the source cross-entropy.
* CDAN (Long et al. 2018, with entropy conditioning): DANN's critic and reversal schedule, but the
  critic sees the features at the cut multiplied with the classifier's predictions (their outer
  product, or its randomised form of :data:`CDAN_RANDOM_WIDTH` dimensions when that would be wider
  than :data:`CDAN_MAX_WIDTH`), each image weighted by ``1 + exp(-entropy)`` of its prediction, so
  that the classes, not only the domains, are aligned and confident images count more.
* MCC (Jin et al. 2020, Minimum Class Confusion): no critic; the loss is the target batch's class
  confusion: predictions ``softmax(z / T)`` (``T`` = :data:`MCC_TEMPERATURE`), images weighted by
  ``1 + exp(-entropy)`` (normalised to the batch size), the confusion matrix ``Y^T W Y`` with each
  column divided by its sum, and its off-diagonal sum over the number of classes.  It acts on the
  network's output, so in the study CNN, where every block trains, its cut only seeds the run.
* AdaBN (Li et al. 2016): no training; the BatchNorm statistics of blocks 0..k-1 are estimated
  again on target images, the weights stay as they are.

Features at the cut are average-pooled to at most 4 x 4 positions before they are aligned: the
covariance of a block's full maps (up to 12,544 values) would not fit, and coarse positions keep
what the pooled classifier input of the last block holds.  No target label is used for training
or model selection: DANN and CORAL train a fixed number of epochs and keep their last weights, and
when given several alignment weights, learning rates or (DANN) schedules they keep the run whose
deep embedded validation risk
(:func:`dev_risk`, You et al. 2019: the source validation loss weighted towards the target by a
domain classifier) is lowest.
Their BatchNorm layers keep the source's statistics while they train (in training mode every
batch would mix the two domains' statistics): what they change is weights only, and AdaBN is the
method that changes statistics.  Both train through the project's trainer, the alignment term as
its extra loss and the source/target pairs from its paired batch sampler.
"""
from __future__ import annotations

import copy
import itertools
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from ..config import ALIGNING_MODES, DANN_SCHEDULES
from ..core.device import forward_chunk
from ..core.errors import DataError
from ..data.tasks import Split
from ..models.study_cnn import StudyCNN
from .reference import Trajectory
from .trainer import PairedBatches, RunResult, accuracy, as_dtype, fit

ALIGNED_SIZE = 4  # features at the cut are pooled to at most this many positions per side
DOMAIN_HIDDEN = 100  # the domain classifier's hidden width
RAMP_GAMMA = 10.0  # Ganin & Lempitsky's ramp of the reversal weight
TRAINING = ALIGNING_MODES  # the methods that train: each with a weight on its term
CRITICS = ("dann", "cdan")  # the methods with a domain critic behind a reversed gradient
CONDITIONED = ("cdan", "mcc")  # the methods that need the target images' predictions
MCC_TEMPERATURE = 2.5  # the Transfer-Learning-Library's default for MCC
CDAN_MAX_WIDTH, CDAN_RANDOM_WIDTH = 4096, 1024  # the paper's limit of the outer product, and its random map


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient flows back negated and scaled by ``weight``."""

    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    return _ReverseGradient.apply(x, float(weight))


def reversal_weight(progress: float, final: float, schedule: str = "ramp") -> float:
    """The reversal weight after ``progress`` (0..1) of training.  ``ramp``: 0 at the start, near
    ``final`` at the end, so that the domain classifier's noisy early signal does not disturb the
    features; ``constant``: ``final`` throughout, which aligns from the first step, where a short
    run on a few target images may need it."""
    if schedule == "constant":
        return final
    if schedule != "ramp":
        raise DataError(f"unknown reversal schedule {schedule!r}; choose one of {list(DANN_SCHEDULES)}")
    return final * (2.0 / (1.0 + math.exp(-RAMP_GAMMA * progress)) - 1.0)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)`` for feature batches ``(n, d)`` (unbiased covariances)."""
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise DataError(f"CORAL needs two (n, d) feature batches of the same width; got {tuple(source.shape)} "
                        f"and {tuple(target.shape)}")
    if len(source) < 2 or len(target) < 2:
        raise DataError("CORAL needs at least two images per domain in a batch to estimate a covariance")
    width = source.shape[1]
    return (torch.cov(source.T) - torch.cov(target.T)).square().sum() / (4 * width * width)


def entropy_weights(probabilities: torch.Tensor) -> torch.Tensor:
    """``1 + exp(-H(p))`` per image, normalised to mean 1 over the batch (no gradient: a weighting)."""
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(1)
    weights = (1 + torch.exp(-entropy)).detach()
    return weights * len(weights) / weights.sum()


def mcc_loss(logits: torch.Tensor, temperature: float = MCC_TEMPERATURE) -> torch.Tensor:
    """Minimum Class Confusion of a target batch's ``(n, classes)`` logits."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise DataError(f"MCC takes (images, classes) logits of two classes or more; got {tuple(logits.shape)}")
    probabilities = torch.softmax(logits / temperature, 1)
    confusion = (probabilities * entropy_weights(probabilities).unsqueeze(1)).T @ probabilities
    confusion = confusion / confusion.sum(0, keepdim=True)
    return (confusion.sum() - confusion.trace()) / logits.shape[1]


class ConditionedFeatures(nn.Module):
    """CDAN's input to the critic: ``features (x) predictions`` flattened, or, when that is wider
    than :data:`CDAN_MAX_WIDTH`, the randomised map ``(R_f f) * (R_g g) / sqrt(width)`` with fixed
    Gaussian ``R_f``, ``R_g`` drawn from ``seed``."""

    def __init__(self, features: int, classes: int, seed: int):
        super().__init__()
        self.randomised = features * classes > CDAN_MAX_WIDTH
        self.width = CDAN_RANDOM_WIDTH if self.randomised else features * classes
        if self.randomised:
            generator = torch.Generator().manual_seed(seed)
            self.register_buffer("features_map", torch.randn(features, self.width, generator=generator))
            self.register_buffer("classes_map", torch.randn(classes, self.width, generator=generator))

    def forward(self, features: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        if self.randomised:
            return (features @ self.features_map) * (probabilities @ self.classes_map) / math.sqrt(self.width)
        return torch.bmm(features.unsqueeze(2), probabilities.unsqueeze(1)).flatten(1)


def cdan_loss(critic: nn.Module, conditioned: ConditionedFeatures, features: torch.Tensor, logits: torch.Tensor,
              reversal: float) -> torch.Tensor:
    """CDAN+E's critic loss on a batch whose first half is source and second half target images:
    the critic's cross-entropy on the conditioned features through a gradient reversed with weight
    ``reversal`` (the predictions enter without gradient), each image weighted by its entropy."""
    half = len(features) // 2
    probabilities = torch.softmax(logits, 1)
    inputs = conditioned(reverse_gradient(features, reversal), probabilities.detach())
    domains = torch.cat([torch.zeros(half), torch.ones(len(features) - half)]).unsqueeze(1).to(features.dtype)
    losses = F.binary_cross_entropy_with_logits(critic(inputs), domains, reduction="none").squeeze(1)
    return (losses * entropy_weights(probabilities)).mean()


def aligned_features(h: torch.Tensor) -> torch.Tensor:
    """The activation at the cut as the vector that is aligned (see the module's docstring)."""
    if h.dim() == 4:
        h = F.adaptive_avg_pool2d(h, (min(h.shape[2], ALIGNED_SIZE), min(h.shape[3], ALIGNED_SIZE)))
    return h.flatten(1)


def domain_classifier(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(width, DOMAIN_HIDDEN), nn.ReLU(), nn.Linear(DOMAIN_HIDDEN, 1))


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batch_norm(model: StudyCNN, images: torch.Tensor, blocks: int, batch_size: int = 256) -> StudyCNN:
    """AdaBN in place: the running statistics of blocks ``0..blocks-1`` become the plain averages
    over ``images`` (the target images, as they enter block 0); weights and the other blocks'
    statistics are untouched.  Returns the model in eval mode."""
    below = model.blocks[:blocks]
    norms = batch_norms(below)
    if blocks and not norms:
        raise DataError("AdaBN re-estimates BatchNorm statistics, and this network has none: build it with "
                        "batch_norm=true")
    if len(images) == 0:
        raise DataError("AdaBN needs target images to estimate statistics from; none were given")
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
    model.eval()
    below.train()
    for i in range(0, len(images), batch_size):
        h = images[i:i + batch_size]
        for block in below:
            h = block(h)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.eval()


class Aligned(nn.Module):
    """The study CNN trained to align the domains at ``cut_point`` by ``method`` (DANN or CDAN with
    a domain ``critic``, CORAL or MCC without one), as one module for the trainer.

    Its input is a source batch followed by a target batch of the same size
    (:class:`~functions.train.trainer.PairedBatches`): both run through blocks ``0..cut_point-1``
    together, the source half on to the classifier (both halves, for the methods that need the
    target's predictions), and it returns the source half's logits; the aligned features (and
    logits) of both halves are kept for :meth:`alignment_loss`, the trainer's extra loss.  In
    training mode its BatchNorm layers keep the source's statistics: AdaBN is the method that
    changes them."""

    def __init__(self, model: StudyCNN, method: str, cut_point: int, critic: nn.Module | None, weight: float,
                 steps: int, schedule: str = "ramp", conditioned: ConditionedFeatures | None = None):
        super().__init__()
        self.model, self.critic = model, critic  # in this order: the optimiser's order of parameters
        self.method, self.cut_point, self.weight, self.steps, self.step = method, cut_point, weight, steps, 0
        self.schedule, self.conditioned = schedule, conditioned
        self.features: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    def train(self, mode: bool = True):
        super().train(mode)
        for norm in batch_norms(self.model):
            norm.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.model.features(x, 0, self.cut_point)
        half = len(h) // 2
        if self.method in CONDITIONED:
            self.logits = self.model.forward_from(h, self.cut_point)
            logits = self.logits[:half]
        else:
            logits = self.model.forward_from(h[:half], self.cut_point)
        self.features = aligned_features(h)
        return logits

    def alignment_loss(self, model, rows, inputs, logits, labels) -> torch.Tensor:
        """DANN's domain classification through the reversed gradient (its weight following the
        schedule over the training progress), CDAN's on the features conditioned on the
        predictions, or ``weight`` times CORAL's covariance distance or MCC's class confusion of the
        target half, on the last batch."""
        half = len(self.features) // 2
        progress, self.step = self.step / self.steps, self.step + 1
        if self.method == "coral":
            return self.weight * coral_loss(self.features[:half], self.features[half:])
        if self.method == "mcc":
            return self.weight * mcc_loss(self.logits[half:])
        reversal = reversal_weight(progress, self.weight, self.schedule)
        if self.method == "cdan":
            return cdan_loss(self.critic, self.conditioned, self.features, self.logits, reversal)
        domains = torch.cat([torch.zeros(half), torch.ones(half)]).unsqueeze(1).to(self.features.dtype)
        reversed_ = reverse_gradient(self.features, reversal)
        return F.binary_cross_entropy_with_logits(self.critic(reversed_), domains)


def train_aligned(model: StudyCNN, method: str, cut_point: int, source: Split, target: torch.Tensor, *, weight: float,
                  lr: float, epochs: int, batch_size: int, min_steps_per_epoch: int, seed: int, schedule: str = "ramp",
                  trajectory: Trajectory | None = None) -> str:
    """One of the :data:`TRAINING` methods in place through the trainer: each step pairs a source
    batch with a batch of the target images (:class:`Aligned`).  An epoch is a pass over the target
    images (at least ``min_steps_per_epoch`` steps; the reversal weight of DANN and CDAN follows
    ``schedule``, see :func:`reversal_weight`); no label of the target is seen, so there is no
    validation: the run lasts ``epochs`` and keeps its last weights.  With ``trajectory``, the run
    is in its dtype (``model``, ``source`` and ``target`` come in it), each step is recorded, and
    training stops where the trajectory ends.  Returns the status: ``ok`` or ``diverged``."""
    if method not in TRAINING:
        raise DataError(f"unknown alignment {method!r}; choose one of {list(TRAINING)}")
    if len(target) < 2:
        raise DataError(f"{method} needs unlabelled target images to align with (at least 2); got {len(target)}")
    batches = PairedBatches(target, len(source), batch_size, min_steps_per_epoch)
    with torch.no_grad():
        h = model.eval().features(target[:1], 0, cut_point)
        width, classes = aligned_features(h).shape[1], model.forward_from(h, cut_point).shape[1]
    conditioned = ConditionedFeatures(width, classes, seed).to(target.dtype) if method == "cdan" else None
    critic = domain_classifier(width if conditioned is None else conditioned.width, seed).to(target.dtype) \
        if method in CRITICS else None
    aligned = Aligned(model, method, cut_point, critic, weight, epochs * batches.steps_per_epoch, schedule,
                      conditioned)
    params = [p for p in aligned.parameters() if p.requires_grad]
    record = None if trajectory is None else (lambda loss: trajectory.record(loss, params))
    result = fit(aligned, source, None, None, lr=lr, max_epochs=epochs, patience=epochs,
                 batch_size=batches.batch_size, seed=seed, forward=aligned, extra_loss=aligned.alignment_loss,
                 after_step=record, batches=batches, dtype=target.dtype)
    return result.status


DEV_IMAGES = 2000  # source training images the domain classifier of dev_risk sees at most


@torch.no_grad()
def embedding(model: StudyCNN, images: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """The last block's activation as :func:`aligned_features` pools it, and the logits, for every
    image in one pass (eval mode)."""
    model.eval()
    chunk, features, logits = forward_chunk(images.device), [], []
    for i in range(0, len(images), chunk):
        h = model.features(images[i:i + chunk])
        features.append(aligned_features(h))
        logits.append(model.head(h))
    return torch.cat(features).double().cpu().numpy(), torch.cat(logits)


def dev_risk(model: StudyCNN, source: Split, source_val: Split, target: torch.Tensor, seed: int = 0) -> float:
    """Deep embedded validation (You et al. 2019): an estimate of ``model``'s loss on the target
    domain from labelled source validation images and unlabelled target images only.

    A logistic domain classifier on the model's embedding (source training images against the
    target images, classes balanced) gives each validation image the density ratio
    ``w = p_target / p_source`` as ``d / (1 - d)``; the risk is the mean of ``w * loss`` with the
    paper's control variate ``eta = -cov(w * loss, w) / var(w)`` added as ``eta * (mean(w) - 1)``,
    which cancels most of the weights' variance."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(source))[:DEV_IMAGES]
    (source_features, _), (target_features, _) = embedding(model, source.x[rows]), embedding(model, target)
    val_features, val_logits = embedding(model, source_val.x)
    both = np.concatenate([source_features, target_features])
    centre, scale = both.mean(axis=0), both.std(axis=0) + 1e-8
    critic = LogisticRegression(class_weight="balanced", max_iter=2000)
    critic.fit((both - centre) / scale, np.r_[np.zeros(len(source_features)), np.ones(len(target_features))])
    target_probability = np.clip(critic.predict_proba((val_features - centre) / scale)[:, 1], 1e-6, 1 - 1e-6)
    weights = target_probability / (1 - target_probability)
    losses = F.cross_entropy(val_logits, source_val.y, reduction="none").double().cpu().numpy()
    weighted = weights * losses
    spread = weights.var(ddof=1)
    eta = -np.cov(weighted, weights)[0, 1] / spread if spread > 0 else 0.0
    return float(weighted.mean() + eta * (weights.mean() - 1.0))


def _candidate_key(what: str, weight: float, lr: float | None, schedule: str | None) -> str:
    """The record's key of one candidate's ``what`` (``dev_risk``, ``test_acc``, ``source_val_acc``;
    its rate and schedule named only where they were chosen between (else None), so that files
    written before that keep their keys)."""
    return f"{what}_{weight:g}" + (f"_lr{lr:g}" if lr is not None else "") + (f"_{schedule}" if schedule else "")


def adapt(method: str, source_model: StudyCNN, cut_point: int, source: Split, source_val: Split, target: Split,
          test: Split, *, weights: tuple = (1.0,), lrs: tuple = (1e-3,), schedules: tuple = ("ramp",),
          epochs: int = 10, batch_size: int = 64, min_steps_per_epoch: int = 1, seed: int = 0,
          trajectory: Trajectory | None = None) -> tuple[StudyCNN, RunResult]:
    """One adaptation run from a copy of ``source_model``: ``source_only``, ``adabn`` or one of the
    :data:`TRAINING` methods at ``cut_point``, with ``target``'s images (its labels are only scored,
    never used).

    The training methods run at weight ``weights[0]`` and learning rate ``lrs[0]`` (the reversal
    weight of DANN and CDAN on schedule ``schedules[0]``); given several of any, one run per combination
    from the same seed, and the one with the lowest :func:`dev_risk` is kept: what it chose and
    every candidate's risk go into the result's details, with each candidate's accuracy on ``test``
    and ``source_val`` scored after the choice (to judge it, never to make it), and its seconds
    are all the candidates' (what a run that chooses costs).  The result's
    ``test_acc`` is on the target's test split, ``train_acc`` on the target images adapted to,
    ``val_acc`` on the source's validation split (the only labels a method may see).  With
    ``trajectory`` (the training methods only) the run is the trajectory's first steps in its dtype, and
    nothing is scored (the accuracies are NaN): the steps are what it is for.
    """
    began = time.perf_counter()
    aligning = method in TRAINING
    candidates = list(itertools.product(weights, lrs, schedules))
    if trajectory is not None and not aligning:
        raise DataError(f"{method!r} does not train: only {list(TRAINING)} have a trajectory to record")
    if len(schedules) > 1 and method not in CRITICS:
        raise DataError(f"schedules {list(schedules)} are the reversal weight's of {list(CRITICS)}; {method!r} has none "
                        f"to choose")
    if len(candidates) > 1 and (not aligning or trajectory is not None):
        raise DataError(f"several weights {list(weights)} or learning rates {list(lrs)} are chosen between for one "
                        f"run of {list(TRAINING)}; {method!r} takes none" if not aligning else
                        "a trajectory records one weight's, rate's and schedule's run")
    dtype = trajectory.dtype if trajectory is not None else torch.float32
    source, target = as_dtype(source, dtype), as_dtype(target, dtype)
    status, details = "ok", None
    if method == "adabn":
        model = adapt_batch_norm(copy.deepcopy(source_model), target.x, cut_point)
    elif aligning:
        runs = {}
        for weight, lr, schedule in candidates:
            model = copy.deepcopy(source_model).to(dtype)
            runs[weight, lr, schedule] = model, train_aligned(
                model, method, cut_point, source, target.x, weight=weight, lr=lr, epochs=epochs,
                batch_size=batch_size, min_steps_per_epoch=min_steps_per_epoch, seed=seed, schedule=schedule,
                trajectory=trajectory)
        chosen = candidates[0]
        if len(runs) > 1:
            risks = {key: dev_risk(m, source, source_val, target.x, seed) if status == "ok" else float("inf")
                     for key, (m, status) in runs.items()}
            chosen = min(risks, key=risks.get)
            several = [len(choices) > 1 for choices in (weights, lrs, schedules)]
            details = {name: value for name, value, chose in zip(("chosen_weight", "chosen_lr", "chosen_schedule"),
                                                                 chosen, several) if chose}
            for (w, lr, schedule), (m, status) in runs.items():
                named = w, lr if several[1] else None, schedule if several[2] else None
                details[_candidate_key("dev_risk", *named)] = risks[w, lr, schedule]
                # every candidate scored after the choice, never for it: on the target's test labels (how
                # far the label-free choice falls from the best in hindsight) and on the source's
                # validation images (what choosing by source accuracy instead would have picked)
                for what, split in (("test_acc", test), ("source_val_acc", source_val)):
                    details[_candidate_key(what, *named)] = accuracy(m, split) if status == "ok" else float("nan")
        model, status = runs[chosen]
    elif method == "source_only":
        model = copy.deepcopy(source_model)
    else:
        raise DataError(f"unknown adaptation method {method!r}; choose source_only, adabn or one of {list(TRAINING)}")
    model.eval()
    score = (lambda split: float("nan")) if trajectory is not None else (lambda split: accuracy(model, split))
    return model, RunResult(train_acc=score(target), val_acc=score(source_val), test_acc=score(test),
                            epochs=epochs if aligning else 0, seconds=time.perf_counter() - began,
                            n_train=len(target), status=status, details=details)
