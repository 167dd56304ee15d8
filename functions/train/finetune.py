"""Fine-tuning a pretrained backbone: the network, how it predicts and is scored, and the
:class:`Finetuner` that trains it, in the vocabulary of general transfer libraries (freeze and
unfreeze layers by name, per-layer learning rates, a head of any depth, callbacks, adapters
through peft).

A :class:`Finetuner` owns one :class:`FineTuneNet` and trains it with the general trainer, so
early stopping, seeded batch orders and best-weight restoring are the project's own protocol.
Layer names are the backbone's stage names (``block1``.., ``stem``..); ``classifier`` names the
new head in ``layer_learning_rates``.  The study's fine-tuning strategies and the fe-vs-ft grid's
fine-tuning are built on it.

Frozen stages keep their BatchNorm statistics (they stay in eval mode while the rest trains), so
their output never changes: it is computed once for the training and validation images
(:func:`staged`) and training runs only the stages after them, as the study's engine does for
its frozen prefixes.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from ..core.atomic import atomic_file
from ..core.constraints import Interval, Options
from ..core.device import forward_chunk
from ..core.errors import DataError
from ..data.tasks import Split
from ..models.backbones import POOLINGS, Backbone, pool
from .evaluation import crop_scores, ranked_scores, scores
from .trainer import RunResult, ShuffledBatches, accuracy, fit

OPTIMIZERS = ("adam", "sgd")
HEAD = "classifier"  # the new head's name among the layers (a network may have a stage named "head")


class FineTuneNet(nn.Module):
    """A backbone (its first ``frozen`` stages frozen), pooling (``avg``, ``max`` or ``flatten``),
    and a new head: linear, or ``hidden`` layers of those sizes with ReLU (and dropout before
    each linear layer after the first, when ``dropout`` > 0).

    ``frozen_stages`` names the stages whose pretrained weights stay fixed; they stay in eval mode
    while the rest trains, so their BatchNorm layers keep their pretrained statistics, even when
    adapters or biases inside them train.
    """

    def __init__(self, backbone: Backbone, num_classes: int, frozen: int = 0, hidden=(), pooling: str = "avg",
                 dropout: float = 0.0):
        super().__init__()
        depth = len(backbone.layer_names)
        if not 0 <= frozen <= depth:
            raise DataError(f"frozen depth {frozen} is outside 0..{depth}: {backbone.name} has {depth} stages "
                            f"({backbone.layer_names})")
        if pooling not in POOLINGS:
            raise DataError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
        if not 0 <= dropout < 1:
            raise DataError(f"dropout={dropout} must be in [0, 1)")
        hidden = (hidden,) if isinstance(hidden, int) and hidden else tuple(hidden or ())
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise DataError(f"head hidden sizes {list(hidden)} must be positive integers")
        self.backbone, self.pooling = backbone, pooling
        with torch.no_grad():
            probe = torch.zeros(1, backbone.channels, backbone.input_size, backbone.input_size)
            width = pool(backbone.eval().run(probe), pooling).shape[1]
        layers, sizes = [], [width, *hidden]
        for i, (size_in, size_out) in enumerate(zip(sizes, sizes[1:])):
            layers += ([nn.Dropout(dropout)] if dropout and i else []) + [nn.Linear(size_in, size_out), nn.ReLU()]
        last = nn.Linear(sizes[-1], num_classes)
        self.head = last if not hidden else nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout else []), last)
        self.frozen_stages: set[str] = set()
        self.freeze(backbone.layer_names[:frozen])

    @property
    def frozen(self) -> int:
        """How many leading stages are frozen with no trainable parameter: their output never
        changes, so it can be computed once."""
        count = 0
        for name, stage in self.backbone.stages.items():
            if name not in self.frozen_stages or any(p.requires_grad for p in stage.parameters()):
                break
            count += 1
        return count

    def freeze(self, names) -> None:
        for name in names:
            self.backbone.stages[name].requires_grad_(False)
            self.frozen_stages.add(name)

    def unfreeze(self, names) -> None:
        for name in names:
            self.backbone.stages[name].requires_grad_(True)
            self.frozen_stages.discard(name)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen_stages:
            self.backbone.stages[name].eval()  # frozen BatchNorm layers keep their pretrained statistics
        return self

    def from_stage(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the output of the first ``start`` stages (0: an adapted image)."""
        return self.head(pool(self.backbone.run(h, start), self.pooling))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_stage(x, 0)

    def check_start(self, start: int) -> None:
        """Refuse inputs that would enter after a stage that still trains."""
        if start > self.frozen:
            raise DataError(f"inputs enter at stage {start}, but only the first {self.frozen} stages are frozen")

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trains_batch_norm(self) -> bool:
        """Whether a BatchNorm layer updates its statistics in training (one outside the frozen stages)."""
        frozen = [self.backbone.stages[name] for name in self.frozen_stages]
        inside = {id(m) for stage in frozen for m in stage.modules()}
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in inside for m in self.modules())


@torch.no_grad()
def staged(backbone: Backbone, images: torch.Tensor, frozen: int) -> torch.Tensor:
    """Images in [0, 1] adapted and run through the first ``frozen`` stages (in eval mode), in chunks:
    what the trainable part of every network frozen there sees."""
    backbone.eval()
    chunk = forward_chunk(images.device)
    parts = [backbone.run(backbone.adapt(images[i:i + chunk]), 0, frozen) for i in range(0, len(images), chunk)]
    return torch.cat(parts).contiguous(memory_format=torch.channels_last)


def staged_split(backbone: Backbone, split: Split, frozen: int) -> Split:
    """A split's images (read whole from a pixel cache) through the first ``frozen`` stages, labels kept."""
    return Split(staged(backbone, split.x[torch.arange(len(split))], frozen), split.y)


@torch.no_grad()
def predict(net: FineTuneNet, x: torch.Tensor, crops: bool = False, start: int | None = None) -> list[np.ndarray]:
    """Class probabilities of every image, one array per view.  ``x``: images in [0, 1] (``start``
    None), seen whole (one view) or as ten crops (``crops``); or the output of the first ``start``
    stages, all frozen (:func:`staged`, computed once and shared by every network frozen there)."""
    net.eval()
    if start is not None and crops:
        raise DataError("ten crops are cut from images; give images in [0, 1] (start=None) to score crops")
    if start is not None:
        net.check_start(start)
    views, chunk = [[] for _ in range(10 if crops else 1)], forward_chunk(x.device)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk]
        if start is not None:
            inputs, stage = [part], start
        else:
            inputs, stage = (net.backbone.crops(part) if crops else [net.backbone.adapt(part)]), 0
        for v, h in enumerate(inputs):
            views[v].append(net.from_stage(h, stage).softmax(1).numpy())
    return [np.concatenate(v) for v in views]


def evaluate(net: FineTuneNet, test: Split, crops: bool = False, start: int | None = None,
             ranked: bool = False) -> dict:
    """Test accuracy and mean per-class accuracy of :func:`predict`'s classes (ten crops: by
    majority vote, and by mean probability as ``test_prob_*``); ``ranked`` adds the top-k accuracy
    and macro F1 of the (mean) probabilities, which the study's records do not carry."""
    views = predict(net, test.x, crops, start)
    y = test.y.numpy()
    out = scores(y, views[0].argmax(1)) if not crops else \
        crop_scores(y, [p.argmax(1) for p in views], views, views[0].shape[1])
    return {**out, **ranked_scores(y, np.mean(views, axis=0))} if ranked else out


class Callback:
    """What a :meth:`Finetuner.fit` tells its callbacks: each epoch's validation accuracy, and its end."""

    def on_epoch_end(self, finetuner: "Finetuner", epoch: int, val_acc: float) -> None:
        pass

    def on_fit_end(self, finetuner: "Finetuner") -> bool:
        """True when it changed the network's weights."""
        return False


class LearningCurve(Callback):
    """The validation accuracy of every epoch, in order."""

    def __init__(self):
        self.val_acc: list[float] = []

    def on_epoch_end(self, finetuner: "Finetuner", epoch: int, val_acc: float) -> None:
        self.val_acc.append(val_acc)


class EarlyStopping(Callback):
    """Stop a :meth:`Finetuner.fit` once validation accuracy has not improved for ``patience`` epochs."""

    def __init__(self, patience: int = 5):
        if not isinstance(patience, int) or patience < 1:
            raise DataError(f"EarlyStopping patience={patience!r} must be a positive integer")
        self.patience = patience  # the trainer counts the stale epochs and ends on the best one


class ModelCheckpoint(Callback):
    """Keep the best weights seen over every :meth:`Finetuner.fit` it is passed to (the trainer
    keeps the best of one call) and give them back at the end of each; with ``path``, also write
    them there (atomically) whenever they improve."""

    def __init__(self, path=None):
        self.path, self.best_val, self.state = path, -1.0, None

    def on_epoch_end(self, finetuner: "Finetuner", epoch: int, val_acc: float) -> None:
        if val_acc > self.best_val:
            self.best_val, self.state = val_acc, copy.deepcopy(finetuner.net.state_dict())
            if self.path is not None:
                with atomic_file(self.path, "wb") as fh:
                    torch.save(self.state, fh)

    def on_fit_end(self, finetuner: "Finetuner") -> bool:
        if self.state is None:
            return False
        finetuner.net.load_state_dict(self.state)
        return True


class Finetuner:
    """A pretrained ``model`` (a :class:`~functions.models.backbones.Backbone`) with a new head of
    ``head_hidden_sizes`` for ``num_classes``, ``freeze_layers`` frozen, trained by :meth:`fit`.

    ``layer_learning_rates`` maps layer names (and ``classifier``, the new head) to their own
    learning rate; the others train at ``lr``.  ``optimizer`` is ``adam`` or ``sgd`` (with ``momentum``); ``weight_decay``
    applies to every group.  ``pooling`` (``avg``, ``max``, ``flatten``; default the model's own) turns the
    last stage's output into the head's input.  The head's initial weights follow ``seed``.
    """

    # the scalar settings' limits, declared once (see functions.core.constraints); the layer names,
    # pooling and dropout are checked by the network they shape
    constraints = {"num_classes": Interval(int, 2, what="the number of classes"),
                   "optimizer": Options(OPTIMIZERS),
                   "lr": Interval(float, 0, low_open=True, what="a learning rate"),
                   "weight_decay": Interval(float, 0), "momentum": Interval(float, 0), "seed": Interval(int, 0)}

    def __init__(self, model: Backbone, num_classes: int, freeze_layers=(), head_hidden_sizes=(), dropout: float = 0.0,
                 layer_learning_rates: dict | None = None, optimizer: str = "adam", lr: float = 1e-3,
                 weight_decay: float = 0.0, momentum: float = 0.9, pooling: str | None = None, seed: int = 0):
        given = {"num_classes": num_classes, "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
                 "momentum": momentum, "seed": seed}
        for name, constraint in self.constraints.items():
            constraint.check(name, given[name])
        torch.manual_seed(seed)
        self.net = FineTuneNet(copy.deepcopy(model), num_classes, hidden=head_hidden_sizes,
                               pooling=pooling or getattr(model, "pooling", "avg"), dropout=dropout)
        rates = dict(layer_learning_rates or {})
        self._check_names([n for n in rates if n != HEAD], extra=[HEAD])
        if any(not value > 0 for value in rates.values()):
            raise DataError(f"layer_learning_rates {rates} must all be positive")
        self.num_classes, self.optimizer, self.lr, self.weight_decay = num_classes, optimizer, lr, weight_decay
        self.momentum = momentum
        self.layer_learning_rates = rates
        self.peft = None  # the peft wrapper once adapters are added
        self.freeze_layers(freeze_layers)

    # ----------------------------------------------------------------- layers

    @property
    def layer_names(self) -> list[str]:
        return self.net.backbone.layer_names

    def _check_names(self, names, extra=()) -> list[str]:
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self.layer_names]
        if unknown:
            raise DataError(f"unknown layer(s) {unknown}; the model's layers are {[*self.layer_names, *extra]}")
        return names

    def freeze_layers(self, names) -> None:
        """Fix these layers' pretrained weights (their BatchNorm statistics too)."""
        self.net.freeze(self._check_names(names))

    def unfreeze_layers(self, names) -> None:
        """Train these layers again, whole."""
        self.net.unfreeze(self._check_names(names))

    def train_biases(self, names) -> None:
        """BitFit: the biases of these (frozen) layers train, their other weights stay fixed."""
        for name in self._check_names(names):
            for pname, param in self.net.backbone.stages[name].named_parameters():
                if pname.rsplit(".", 1)[-1] == "bias":
                    param.requires_grad_(True)

    def trainable_parameters(self) -> int:
        return self.net.trainable_parameters()

    # ----------------------------------------------------------------- adapters (peft)

    def conv_names(self, layers, grouped: bool = True) -> list[str]:
        """The convolutions inside ``layers`` (without ``grouped``: only those with one group), by
        their module names in the network."""
        self._check_names(layers)
        return [f"backbone.stages.{layer}.{name}" for layer in layers
                for name, module in self.net.backbone.stages[layer].named_modules()
                if isinstance(module, nn.Conv2d) and (grouped or module.groups == 1)]

    def add_lora(self, layers, rank: int, alpha: float, dropout: float = 0.0) -> None:
        """LoRA adapters of ``rank`` on every convolution of ``layers`` but grouped (depthwise) ones,
        which peft cannot merge, scaled by ``alpha / rank``."""
        from peft import LoraConfig  # peft (and the transformers it imports) load only where adapters are used

        from ..models.adapters import weight_space_lora
        if not isinstance(rank, int) or rank < 1:
            raise DataError(f"LoRA rank {rank!r} must be a positive integer")
        targets = self._adapter_targets(layers, grouped=False)
        for name in targets:
            conv = self.net.get_submodule(name)
            most = min(conv.out_channels, conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1])
            if rank > most:
                raise DataError(f"LoRA rank {rank} is larger than {name} allows ({most}: a {conv.in_channels} -> "
                                f"{conv.out_channels} convolution of kernel {tuple(conv.kernel_size)}); give a rank "
                                f"of at most {most}")
        self._wrap(weight_space_lora(LoraConfig(target_modules=targets, r=rank, lora_alpha=alpha, lora_dropout=dropout)))

    def add_ia3(self, layers) -> None:
        """IA3: a learned scale per output channel of every convolution of ``layers``."""
        from peft import IA3Config
        self._wrap(IA3Config(target_modules=self._adapter_targets(layers), feedforward_modules=[]))

    def _adapter_targets(self, layers, grouped: bool = True) -> list[str]:
        layers = self._check_names(layers)
        targets = self.conv_names(layers, grouped)
        if not targets:
            every = self.conv_names(self.layer_names, grouped)
            raise DataError(f"layers {layers} hold no convolution for an adapter; the convolutions are {every}")
        if self.peft is not None:
            raise DataError("this Finetuner already has adapters; make a new one for another set")
        return targets

    def _wrap(self, config) -> None:
        """Insert the adapters; peft freezes everything else, so what trained before trains again."""
        from peft import get_peft_model
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        self.peft = get_peft_model(self.net, config)
        for param in trainable:
            param.requires_grad_(True)
        # the adapters' weights are made in the default layout; channels-last like the rest, no
        # convolution converts its operands (a LoRA step on a 2-core CPU: 1.4x faster)
        self.net.to(memory_format=torch.channels_last)

    def merge(self) -> None:
        """Fold the adapters into the weights they adapt (``merge_and_unload``): the network is a
        plain one again, with the same outputs and no adapter cost at inference."""
        if self.peft is not None:
            self.net, self.peft = self.peft.merge_and_unload(), None

    # ----------------------------------------------------------------- training

    def param_groups(self) -> list[dict]:
        """One optimiser group per layer with trainable parameters and one for the head, each at its
        own learning rate."""
        groups = []
        parts = [*self.net.backbone.stages.items(), (HEAD, self.net.head)]
        for name, module in parts:
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": self.layer_learning_rates.get(name, self.lr),
                               "weight_decay": self.weight_decay, "name": name})
        return groups

    def _inputs(self, split: Split, inputs_at: int | None) -> tuple[Split, int]:
        """The split as it enters the first stage that may change: images in [0, 1] (``inputs_at``
        None) are adapted and run through the leading frozen stages here."""
        if inputs_at is not None:
            self.net.check_start(inputs_at)
            return split, inputs_at
        frozen = self.net.frozen
        return Split(staged(self.net.backbone, split.x, frozen), split.y), frozen

    def fit(self, train: Split, val: Split, *, epochs: int = 30, batch_size: int = 32, callbacks=(), seed: int = 0,
            inputs_at: int | None = None, min_steps_per_epoch: int = 1, regulariser=None) -> RunResult:
        """Train on ``train``; the network ends holding its best validation weights.

        ``inputs_at`` None: the splits are images in [0, 1]; k: they are the output of the first
        k stages (all frozen), computed once by the caller for many runs.  ``EarlyStopping`` in
        ``callbacks`` stops on a validation plateau; every callback's ``on_epoch_end(finetuner,
        epoch, val_acc)`` sees each epoch; an epoch makes at least ``min_steps_per_epoch`` optimiser
        steps (see :func:`~functions.train.trainer.fit`); a ``regulariser``
        (:class:`~functions.train.regularisers.Regulariser`) adds its penalty to every step's loss.
        Returns the accuracies, epochs and seconds.
        """
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("min_steps_per_epoch", min_steps_per_epoch)):
            Interval(int, 1).check(name, value)
        began = time.perf_counter()
        (train, start), (val, _) = self._inputs(train, inputs_at), self._inputs(val, inputs_at)
        stops = [cb.patience for cb in callbacks if isinstance(cb, EarlyStopping)]
        net = self.net

        def after_epoch(epoch: int, val_acc: float) -> None:
            for callback in callbacks:
                callback.on_epoch_end(self, epoch, val_acc)

        # adapters sit inside the network's own layers; a regulariser keeps the last map it sees
        forward = (lambda h: net.from_stage(h, start)) if regulariser is None else regulariser.logits
        # a batch of one image cannot train a BatchNorm layer: a pass's last batch of one joins the one before
        min_batch = 2 if net.trains_batch_norm() else 1
        result = fit(net, train, val, None, lr=self.lr, max_epochs=epochs,
                     batches=ShuffledBatches(batch_size, min_steps_per_epoch, min_batch),
                     patience=min(stops) if stops else epochs, batch_size=batch_size, seed=seed, forward=forward,
                     optimizer=self.optimizer, momentum=self.momentum, param_groups=self.param_groups(),
                     after_epoch=after_epoch, extra_loss=None if regulariser is None else regulariser.loss)
        if regulariser is not None:
            regulariser.release()
        for callback in callbacks:
            if callback.on_fit_end(self):  # other weights than the trainer ended on: score them
                result.train_acc = accuracy(net, train, forward=forward)
                result.val_acc = accuracy(net, val, forward=forward)
        result.seconds = time.perf_counter() - began
        return result

    def evaluate(self, test: Split, inputs_at: int | None = None, crops: bool = False) -> dict:
        """:func:`evaluate` of the network on ``test`` (images in [0, 1], or stage outputs: see :meth:`fit`),
        with the top-k accuracy and macro F1 a classification report gives."""
        return evaluate(self.net, test, crops, inputs_at, ranked=True)
