"""One config object per experiment, the study's class setups and the named profiles.

The config's fields are the keys of a results file's parameters dict (element 0), named as the
upstream study named them, so that files written by either load with one reader; the dict adds
only the schema version.  Each field declares its type and range once (``Config.constraints``):
values are checked against it whether they come from code, a profile or ``--set key=value`` on
the command line.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import ClassVar

from .core.constraints import Boolean, Interval, Many, Options, Text, check_fields, declared
from .core.errors import DataError
from .data.catalog import check_adaptable, check_percentage, spec, validate_classes

# Bumped when the parameters dict changes shape; stored in every results file's element 0.
SCHEMA_KEY, SCHEMA_VERSION = "schema_version", 2
# Parameters added after results files existed, with the value the code used before them: a file
# that lacks such a key is resumed when the value asked for equals this one (see functions.runs.store).
LEGACY_VALUES: dict = {"min_steps_per_epoch": 1, "precision": "fp32", "batch_norm": False, "dann_weights": [],
                       "coral_weights": [], "kd_temperatures": [], "kd_alphas": [], "lr_fine_tunes": [],
                       "dann_schedule": "ramp", "dann_schedules": []}

MODES = {
    "F": {"freeze": True, "reinit": False, "truncate": False},
    "FR": {"freeze": True, "reinit": True, "truncate": False},
    "FT": {"freeze": True, "reinit": False, "truncate": True},
}
# the whole source network, classifier included, trains on: domain adaptation keeps the source's labels
WHOLE = {"freeze": False, "reinit": False, "truncate": False}
# Other modes of the same study, each with the F/FR/FT flags it runs under, the parameters it adds
# to a results file, and whether its frozen prefix really stays frozen (then the engine's prefix
# cache serves it).  Fine-tuning strategies: the cut point's blocks 0..k-1 keep their pretrained
# weights, frozen or (PEFT) adapted cheaply; blocks k.. keep theirs too and train (as F).
# Domain adaptation (labelled source, unlabelled target images): the source network as a whole,
# tested on the target (source_only), or trained on with its features at the cut aligned (dann,
# coral), or with the BatchNorm statistics of blocks 0..k-1 re-estimated on target images (adabn).
# Distillation: FR at the cut with a fine-tuned wider teacher's soft labels in the loss.
STRATEGIES = {
    "progressive": {"keys": ("stage_epochs",), "prefix_cached": True, "flags": MODES["F"]},
    "discriminative": {"keys": ("lr_decay",), "prefix_cached": True, "flags": MODES["F"]},
    "lora": {"keys": ("lora_rank", "lora_alpha"), "prefix_cached": False, "flags": MODES["F"]},
    "ia3": {"keys": (), "prefix_cached": False, "flags": MODES["F"]},
    "bitfit": {"keys": (), "prefix_cached": False, "flags": MODES["F"]},
    "source_only": {"keys": (), "prefix_cached": False, "flags": WHOLE},
    "dann": {"keys": ("dann_weight", "dann_weights", "dann_schedule", "dann_schedules"), "prefix_cached": False,
             "flags": WHOLE},
    "coral": {"keys": ("coral_weight", "coral_weights"), "prefix_cached": False, "flags": WHOLE},
    "adabn": {"keys": (), "prefix_cached": False, "flags": WHOLE},
    "mcc": {"keys": ("mcc_weight", "mcc_weights"), "prefix_cached": False, "flags": WHOLE},
    "cdan": {"keys": ("cdan_weight", "cdan_weights"), "prefix_cached": False, "flags": WHOLE},
    "distill": {"keys": ("kd_temperature", "kd_alpha", "teacher_channels", "kd_temperatures", "kd_alphas"), "prefix_cached": False,
                "flags": MODES["FR"]},
    # regularisers of fine-tuning (functions.train.regularisers): F with a penalty in the loss
    **{name: {"keys": ("regularisation_weight", "regularisation_weights"), "prefix_cached": True,
              "flags": MODES["F"]} for name in ("l2sp", "delta", "bss")},
}
# the regularisers, and the weights each run chooses between on validation: the paper's value first
# (L2-SP's and DELTA's alpha 0.01, BSS's eta 0.001), then ten times it, toward where a few hundred
# images would need the pretrained point held more firmly
REGULARISER_WEIGHTS = {"l2sp": (0.01, 0.1), "delta": (0.01, 0.1), "bss": (0.001, 0.01)}
REGULARISERS = tuple(REGULARISER_WEIGHTS)
# the strategies that fine-tune on labelled target images (the others adapt to unlabelled ones or distil)
FINE_TUNING = ("progressive", "discriminative", "lora", "ia3", "bitfit", *REGULARISERS)
# the modes that train on unlabelled target images; they use the BatchNorm variant of the network
ADAPTATION_MODES = ("source_only", "dann", "coral", "adabn", "mcc", "cdan")
# an adaptation epoch is a pass over the unlabelled target images, and 1% of a target makes it a
# step or two: it makes at least this many.  Adaptation trains a fixed schedule (epochs of these
# steps, no early stopping), so the fine-tuning modes' step floor, which lets a run converge before
# early stopping ends it, is not its concern (a --set min_steps_per_epoch after the mode changes it)
ADAPTATION_MIN_STEPS = 50
# the adaptation modes that train with a term of their own (DANN, CORAL and CDAN align the features
# at the cut, which therefore lies after a block (1..depth); MCC's term is on the output)
ALIGNING_MODES = ("dann", "coral", "mcc", "cdan")
# What each run of these modes chooses between (with_mode sets them; a --set after the mode
# changes them): DANN's and CORAL's weight by the target risk estimate, which needs no target
# label, the distillation's temperature and share of the soft-label term by validation accuracy.  The papers'
# value and one a step of about 3x to 10x towards the side where it would matter: a gentler
# gradient reversal than Ganin & Lempitsky's 1, which is unstable on small targets; a stronger
# CORAL term than 1, since Deep CORAL's loss, divided by 4d^2, is far below the cross-entropy;
# more of the labels' cross-entropy beside Hinton et al.'s soft labels, where the teacher is weak,
# and a softer temperature than the usual 4 (2: less weight on the teacher's small probabilities,
# which a teacher fine-tuned on a few hundred images has not learned well).
TUNED_SETTINGS = {"dann": {"dann_weights": (0.3, 1.0)}, "coral": {"coral_weights": (1.0, 10.0)},
                  "mcc": {"mcc_weights": (0.3, 1.0)}, "cdan": {"cdan_weights": (0.3, 1.0)},
                  "distill": {"kd_temperatures": (2.0, 4.0), "kd_alphas": (0.5, 0.9)},
                  **{name: {"regularisation_weight": weights[0], "regularisation_weights": weights}
                     for name, weights in REGULARISER_WEIGHTS.items()}}
# A learning rate chosen per run: mode ``<mode>-tuned`` (F, FR, FT or a fine-tuning strategy) trains
# each run at every rate here and keeps the one with the best validation accuracy; the default rate
# and one half a decade either side of it, the range over which Adam's best rate for a small
# network moves between tasks and strategies (adapters favour a higher one, whole blocks a lower)
TUNED_SUFFIX = "-tuned"
TUNED_LEARNING_RATES = (3e-4, 1e-3, 3e-3)
# How DANN's reversal weight reaches its value: Ganin & Lempitsky's ramp from 0, or the value from
# the first step.  Its ``-tuned`` form chooses between them too (with its weight and rate, by the
# target risk estimate): the ramp protects features from an untrained critic, but a run of a few
# hundred steps on a few target images spends most of them barely aligning.
DANN_SCHEDULES = ("ramp", "constant")
TUNED_WITH_RATE = {"dann": {"dann_schedules": DANN_SCHEDULES}}
# the modes that have a ``-tuned`` form; DANN and CORAL choose their rate with their weight, by the
# target risk estimate (no target label), the others by validation accuracy
RATE_CHOOSING = (*MODES, *FINE_TUNING, *ALIGNING_MODES)
# the record's keys that name what a run of a tuned mode chose, and the single setting each fixes
LR_CHOSEN_KEY = {"chosen_lr": ("lr_fine_tune", "lr_fine_tunes")}
CHOSEN_KEYS = {"dann": {"chosen_weight": ("dann_weight", "dann_weights"),
                        "chosen_schedule": ("dann_schedule", "dann_schedules")},
               "coral": {"chosen_weight": ("coral_weight", "coral_weights")},
               "mcc": {"chosen_weight": ("mcc_weight", "mcc_weights")},
               "cdan": {"chosen_weight": ("cdan_weight", "cdan_weights")},
               "distill": {"chosen_temperature": ("kd_temperature", "kd_temperatures"),
                           "chosen_alpha": ("kd_alpha", "kd_alphas")},
               **{name: {"chosen_weight": ("regularisation_weight", "regularisation_weights")}
                  for name in REGULARISERS}}
CUT = "cut"  # the strategy of modes F, FR and FT
PRECISIONS = ("fp32", "bf16")
# the parameters that only the modes above have (each in its own files)
STRATEGY_KEYS = ("strategy", *dict.fromkeys(key for mode in STRATEGIES.values() for key in mode["keys"]))
LORA_MODE = re.compile(r"lora_r([1-9][0-9]*)")
# The side of the square images an ImageNet network is given, wherever a setting chooses it.
INPUT_SIZE = Interval(int, 8, 1024, what="the input size in pixels", help="side of the square input in pixels")


def mode_names() -> list[str]:
    """Every name ``--mode`` takes (a LoRA rank other than the default as ``lora_r<rank>``)."""
    return [*MODES, *STRATEGIES, *(f"{mode}{TUNED_SUFFIX}" for mode in RATE_CHOOSING)]


@dataclass(frozen=True)
class Setup:
    """A study folder's source and target task."""

    folder: str
    name: str
    source_dataset: str
    pre_train_classes: tuple
    target_dataset: str
    fine_tune_classes: tuple


SETUPS = {
    (s.folder, s.name): s
    for s in (
        Setup("MNIST", "regular", "MNIST", (0, 1, 2, 3, 4), "MNIST", (5, 6, 7, 8, 9)),
        Setup("FashionMNIST", "regular", "FashionMNIST", (0, 1, 2, 3, 4, 6, 8), "FashionMNIST", (5, 7, 9)),
        Setup("FashionMNIST", "random", "FashionMNIST", (0, 1, 2, 4, 6, 7, 9), "FashionMNIST", (3, 5, 8)),
        Setup("CIFAR", "regular", "CIFAR10", (0, 1, 8, 9), "CIFAR10", (2, 3, 4, 5, 6, 7)),
        Setup("CIFAR", "reverse", "CIFAR10", (2, 3, 4, 5, 6, 7), "CIFAR10", (0, 1, 8, 9)),
        Setup("CIFAR", "random", "CIFAR10", (5, 6, 7, 8, 9), "CIFAR10", (0, 1, 2, 3)),
        Setup("MNIST_to_FashionMNIST", "cross", "MNIST", tuple(range(10)), "FashionMNIST", tuple(range(10))),
        Setup("FashionMNIST_to_MNIST", "cross", "FashionMNIST", tuple(range(10)), "MNIST", tuple(range(10))),
        Setup("MNIST_to_digits", "cross", "MNIST", tuple(range(10)), "digits", tuple(range(10))),
    )
}
FOLDERS = sorted({folder for folder, _ in SETUPS})
# the pairs whose source and target classes mean different things (digits against clothing): no
# alignment can tell there which class is which, so their DANN and CORAL sweeps keep the papers'
# single weight instead of choosing between candidates (as `make adaptation` runs them)
PAPER_WEIGHT_FOLDERS = ("MNIST_to_FashionMNIST", "FashionMNIST_to_MNIST")
PAPER_WEIGHTS = {"dann_weights": [], "coral_weights": []}


def folder_settings(folder: str) -> dict:
    """The overrides of every mode's parameters that the folder's sweeps and notebooks run with."""
    return dict(PAPER_WEIGHTS) if folder in PAPER_WEIGHT_FOLDERS else {}


def default_setup(folder: str) -> str:
    """The folder's first listed setup: the study's main one."""
    if folder not in FOLDERS:
        raise DataError(f"unknown dataset folder {folder!r}; choose one of {FOLDERS}")
    return next(n for f, n in SETUPS if f == folder)


def setup_names(folder: str) -> list[str]:
    default_setup(folder)
    return [n for f, n in SETUPS if f == folder]


def setup_for(cfg: "Config") -> Setup:
    """The setup whose source and target tasks ``cfg`` has: where its source models live."""
    for setup in SETUPS.values():
        if (setup.source_dataset, setup.pre_train_classes, setup.target_dataset, setup.fine_tune_classes) == \
                (cfg.source_dataset, cfg.pre_train_classes, cfg.target_dataset, cfg.fine_tune_classes):
            return setup
    raise DataError(f"no study folder has source {cfg.source_dataset} {list(cfg.pre_train_classes)} and target "
                    f"{cfg.target_dataset} {list(cfg.fine_tune_classes)}; a teacher's source model is kept in its "
                    f"folder: use a folder's classes")


def get_setup(folder: str, name: str | None = None) -> Setup:
    """A folder's setup by name; None: its main one."""
    name = name or default_setup(folder)
    if (folder, name) not in SETUPS:
        names = sorted(setup_names(folder))
        raise DataError(f"unknown setup {name!r} for {folder}; choose one of {names}")
    return SETUPS[(folder, name)]


@declared
@dataclass(frozen=True)
class Config:
    """Everything that decides the outcome of one training run (the results file's element 0)."""

    source_dataset: str = "MNIST"
    target_dataset: str = "MNIST"
    pre_train_classes: tuple = (0, 1, 2, 3, 4)
    fine_tune_classes: tuple = (5, 6, 7, 8, 9)
    depth: int = 6
    num_channels: int = 64
    kernel_size: int = 3
    activation_function: str = "ReLU"
    use_pooling: bool = True
    pooling_every_n_layers: int = 2
    pooling_stride: int = 2
    two_linear_layers: bool = False
    hidden_dim_lin: int = 128
    # BatchNorm after every convolution: the variant that AdaBN re-estimates (the adaptation modes)
    batch_norm: bool = False
    lr_pretrain: float = 0.001
    lr_fine_tune: float = 0.001
    num_train: int = 40
    num_train_pretrain: int = 40
    early_stop_patience: int = 6
    # an epoch repeats passes over a small subset until it has made this many optimiser steps, so
    # that a run on 0.1% of the data trains as long between validations as one on 10% (1: one pass)
    min_steps_per_epoch: int = 1
    # fine-tuning arithmetic: "bf16" autocasts convolutions and matrix products on a CUDA device
    precision: str = "fp32"
    batch_size: int = 4096
    val_split: float = 0.1
    generate_dataset_seed: int = 42
    freeze: bool = True
    reinit: bool = True
    truncate: bool = False
    reinit_both_dense: bool = True
    strategy: str = CUT
    stage_epochs: int = 3
    lr_decay: float = 0.5
    lora_rank: int = 4
    lora_alpha: float = 8.0
    dann_weight: float = 1.0  # the gradient reversal's weight at the end of training (ramped up from 0)
    coral_weight: float = 1.0
    mcc_weight: float = 1.0  # MCC's class-confusion term beside the source cross-entropy
    cdan_weight: float = 1.0  # CDAN's reversal weight at the end of training (ramped as DANN's)
    # several weights: each run trains at each and keeps the one its target risk estimate, which
    # needs no target label, ranks best (functions.train.adaptation.dev_risk); empty: the weight above
    dann_weights: tuple = ()
    coral_weights: tuple = ()
    mcc_weights: tuple = ()
    cdan_weights: tuple = ()
    # how the reversal weight reaches dann_weight (see DANN_SCHEDULES); several: chosen like the weights
    dann_schedule: str = "ramp"
    dann_schedules: tuple = ()
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9  # the distillation term's share of the loss; 1 - kd_alpha is the cross-entropy's
    teacher_channels: int = 64  # the teacher: this wide a network (64: the paper's), fine-tuned whole
    # several temperatures or shares: each run trains at every pair and keeps the one with the best
    # validation accuracy; empty: the value above
    kd_temperatures: tuple = ()
    kd_alphas: tuple = ()
    # several learning rates: each run trains at each and keeps the one with the best validation
    # accuracy (modes <mode>-tuned); empty: lr_fine_tune alone
    lr_fine_tunes: tuple = ()
    # the regularisers' weight (alpha of L2-SP and DELTA, eta of BSS); several: each run trains at
    # each and keeps the one with the best validation accuracy
    regularisation_weight: float = 0.01
    regularisation_weights: tuple = ()

    # Each field's type and range (see functions.core.constraints): checked here, and read by the
    # command line's --set.  Dataset names and class lists are checked against the catalogue below.
    constraints: ClassVar[dict] = {
        "source_dataset": Text(), "target_dataset": Text(),
        "pre_train_classes": Many(Interval(int)), "fine_tune_classes": Many(Interval(int)),
        **dict.fromkeys(("depth", "num_channels", "kernel_size", "pooling_every_n_layers", "pooling_stride",
                         "hidden_dim_lin", "num_train", "num_train_pretrain", "early_stop_patience",
                         "min_steps_per_epoch", "batch_size", "stage_epochs", "lora_rank", "teacher_channels"),
                        Interval(int, 1)),
        "activation_function": Text(),
        **dict.fromkeys(("use_pooling", "two_linear_layers", "batch_norm", "freeze", "reinit", "truncate",
                         "reinit_both_dense"), Boolean()),
        **dict.fromkeys(("lr_pretrain", "lr_fine_tune"),
                        Interval(float, 0, low_open=True, note="a learning rate, e.g. 0.001")),
        "precision": Options(PRECISIONS, note="bf16 needs a CUDA device"),
        "val_split": Interval(float, 0, 1, high_open=True, note="the fraction of training data held out"),
        "generate_dataset_seed": Interval(int, 0),
        "strategy": Options((CUT, *STRATEGIES)),
        "lr_decay": Interval(float, 0, 1, low_open=True, note="each block down from the head trains at lr_decay "
                                                             "times the learning rate of the block above it"),
        "lora_alpha": Interval(float, 0, low_open=True, note="e.g. 8"),
        **dict.fromkeys(("dann_weights", "coral_weights", "mcc_weights", "cdan_weights"),
                        Many(Interval(float, 0, low_open=True), noun="a list of weights, e.g. 0.1,0.3,1")),
        **dict.fromkeys(("dann_weight", "coral_weight", "mcc_weight", "cdan_weight", "kd_temperature"),
                        Interval(float, 0, low_open=True, note="defaults: the weights 1, kd_temperature 4")),
        "regularisation_weight": Interval(float, 0, low_open=True, note="e.g. 0.01 (L2-SP, DELTA), 0.001 (BSS)"),
        "regularisation_weights": Many(Interval(float, 0, low_open=True), noun="a list of weights, e.g. 0.01,0.1"),
        "lr_fine_tunes": Many(Interval(float, 0, low_open=True), noun="a list of learning rates, e.g. 0.0003,0.001"),
        "dann_schedule": Options(DANN_SCHEDULES, note="ramp: from 0 as Ganin & Lempitsky; constant: from the start"),
        "dann_schedules": Many(Options(DANN_SCHEDULES), noun=f"a list of schedules, e.g. {','.join(DANN_SCHEDULES)}"),
        "kd_temperatures": Many(Interval(float, 0, low_open=True), noun="a list of temperatures, e.g. 2,4"),
        "kd_alphas": Many(Interval(float, 0, 1), noun="a list of shares in [0, 1], e.g. 0.5,0.9"),
        "kd_alpha": Interval(float, 0, 1, note="the share of the distillation term in the loss (0: cross-entropy "
                                               "alone)"),
    }

    def __post_init__(self):
        check_fields(self)
        validate_classes(self.source_dataset, self.pre_train_classes, "pre_train_classes")
        validate_classes(self.target_dataset, self.fine_tune_classes, "fine_tune_classes")
        if self.source_dataset == self.target_dataset:
            overlap = sorted(set(self.pre_train_classes) & set(self.fine_tune_classes))
            if overlap:
                raise DataError(f"pre_train_classes and fine_tune_classes share {overlap} within "
                                f"{self.source_dataset}; a transfer study needs disjoint class sets")
        check_adaptable(spec(self.target_dataset).image_shape, spec(self.source_dataset).image_shape,
                        f"{self.target_dataset} images for a {self.source_dataset} network")
        if self.reinit and self.truncate:
            raise DataError("reinit and truncate are both set; choose one mode: F, FR or FT")
        self._check_depth()
        self._check_strategy()

    def _check_depth(self) -> None:
        """Every pooling needs an image at least 2 pixels wide: checked here, because torch finds out
        only after the data are loaded, deep inside a forward pass."""
        if not self.use_pooling:
            return
        _, height, width = spec(self.source_dataset).image_shape
        side = min(height, width)
        for layer in range(self.depth):
            side += 2 * (self.kernel_size // 2) - self.kernel_size + 1  # padding kernel_size // 2
            if (layer + 1) % self.pooling_every_n_layers == 0:
                if side < 2:
                    raise DataError(f"depth={self.depth} is too deep for {height} x {width} {self.source_dataset} "
                                    f"images pooled after every {self.pooling_every_n_layers} layers: the image is "
                                    f"{side} pixel wide at the pooling of layer {layer + 1}; give depth <= {layer}, "
                                    f"or raise pooling_every_n_layers, or set use_pooling=false")
                side = (side - 2) // self.pooling_stride + 1

    def _check_strategy(self) -> None:
        if self.strategy != CUT and self.precision != "fp32":
            raise DataError(f"strategy {self.strategy!r} trains in fp32 only; set precision=fp32")
        if self.strategy != CUT:
            flags = STRATEGIES[self.strategy]["flags"]
            if any(getattr(self, k) != v for k, v in flags.items()):
                wanted = ", ".join(f"{k}={str(v).lower()}" for k, v in flags.items())
                raise DataError(f"mode {self.strategy!r} needs {wanted} (use --mode {self.strategy})")
        if self.strategy == "adabn" and not self.batch_norm:
            raise DataError("mode 'adabn' re-estimates BatchNorm statistics: it needs batch_norm=true")
        if self.lr_fine_tunes and self.strategy not in (CUT, *FINE_TUNING, *ALIGNING_MODES):
            raise DataError(f"mode {self.strategy!r} does not choose its learning rate: set lr_fine_tunes=[] "
                            f"(F, FR, FT, the fine-tuning strategies {list(FINE_TUNING)} and "
                            f"{list(ALIGNING_MODES)} do)")
        if self.strategy == "progressive" and self.stage_epochs > self.num_train:
            raise DataError(f"stage_epochs={self.stage_epochs} must be in 1..num_train={self.num_train}: a "
                            f"progressive stage cannot be longer than the epoch budget")

    @property
    def mode(self) -> str:
        """The name in results files and plots: F, FR, FT, a strategy, or ``lora_r<rank>``; with
        ``-tuned`` after it where each run chooses its learning rate."""
        if self.strategy == "lora":
            name = f"lora_r{self.lora_rank}"
        elif self.strategy != CUT:
            name = self.strategy
        else:
            name = "FT" if self.truncate else "FR" if self.reinit else "F"
        return name + TUNED_SUFFIX if self.lr_fine_tunes else name

    @property
    def learning_rates(self) -> tuple:
        """The learning rates a run chooses between (one: no choice)."""
        return self.lr_fine_tunes or (self.lr_fine_tune,)

    @property
    def regularisation_candidates(self) -> tuple:
        """The regulariser weights a run chooses between (none for the other modes)."""
        if self.strategy not in REGULARISERS:
            return ()
        return self.regularisation_weights or (self.regularisation_weight,)

    @property
    def reversal_schedules(self) -> tuple:
        """The DANN reversal schedules a run chooses between (one: no choice); CDAN ramps its
        weight as the paper does."""
        if self.strategy != "dann":
            return DANN_SCHEDULES[:1]
        return self.dann_schedules or (self.dann_schedule,)

    @property
    def alignment_weights(self) -> tuple:
        """The weights of DANN, CORAL, MCC or CDAN a run chooses between (one: no choice)."""
        method = self.strategy if self.strategy in ALIGNING_MODES else "dann"
        return getattr(self, f"{method}_weights") or (getattr(self, f"{method}_weight"),)

    @property
    def prefix_cached(self) -> bool:
        """Whether the blocks before the cut never change, so their output is computed once."""
        return self.freeze and (self.strategy == CUT or STRATEGIES[self.strategy]["prefix_cached"])

    def with_mode(self, mode: str) -> "Config":
        """This config in ``mode``; the adaptation modes switch to the BatchNorm variant and to
        :data:`ADAPTATION_MIN_STEPS` steps per epoch (the others leave both as they are), and the
        modes of :data:`TUNED_SETTINGS` get the candidates each run chooses between, and a mode
        named ``<mode>-tuned`` the learning rates of :data:`TUNED_LEARNING_RATES` (and DANN's
        the schedules of :data:`TUNED_WITH_RATE`)."""
        if mode.endswith(TUNED_SUFFIX):
            untuned = mode[:-len(TUNED_SUFFIX)]
            if untuned not in RATE_CHOOSING and not LORA_MODE.fullmatch(untuned):
                raise DataError(f"mode {mode!r}: only F, FR, FT, the fine-tuning strategies {list(FINE_TUNING)} "
                                f"and {list(ALIGNING_MODES)} choose their learning rate (e.g. ia3{TUNED_SUFFIX})")
            return self.with_mode(untuned).replace(lr_fine_tunes=TUNED_LEARNING_RATES,
                                                   **TUNED_WITH_RATE.get(untuned, {}))
        if mode in MODES:
            return dataclasses.replace(self, **MODES[mode], strategy=CUT)
        lora = LORA_MODE.fullmatch(mode)
        if mode in STRATEGIES or lora:
            strategy = "lora" if lora else mode
            extra = {"lora_rank": int(lora.group(1))} if lora else {}
            if strategy in ADAPTATION_MODES:
                extra.update(batch_norm=True, min_steps_per_epoch=ADAPTATION_MIN_STEPS)
            extra.update(TUNED_SETTINGS.get(strategy, {}))
            return dataclasses.replace(self, **STRATEGIES[strategy]["flags"], strategy=strategy, **extra)
        raise DataError(f"unknown mode {mode!r}; choose one of {mode_names()} (or lora_r<rank>, e.g. lora_r2)")

    def as_chosen(self, record: dict) -> "Config":
        """This config with the one setting that ``record``'s run chose in place of the candidates:
        a chosen candidate trains exactly as it would alone (each from the same seeds), so a
        stored run is trained again without its rivals."""
        fixed = {}
        for key, (single, several) in {**CHOSEN_KEYS.get(self.strategy, {}), **LR_CHOSEN_KEY}.items():
            if key in record:
                fixed.update({single: record[key], several: ()})
        return self.replace(**fixed)

    def replace(self, **changes) -> "Config":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise DataError(f"unknown parameter(s) {unknown}; known: {sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})

    def params(self) -> dict:
        """JSON-safe parameters dict (classes as lists, activation as its name) with the schema
        version; a strategy's parameters appear only in its own files."""
        own = () if self.strategy == CUT else ("strategy", *STRATEGIES[self.strategy]["keys"])
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                  if k not in STRATEGY_KEYS or k in own}
        return {**fields, SCHEMA_KEY: SCHEMA_VERSION}

    def source_task(self):
        """The source classes' task (train / validation / test tensors) this config pretrains on."""
        from .data.tasks import load_task
        return load_task(self.source_dataset, self.pre_train_classes, self.val_split, self.generate_dataset_seed)

    def target_task(self):
        """The target classes' task this config transfers to."""
        from .data.tasks import load_task
        return load_task(self.target_dataset, self.fine_tune_classes, self.val_split, self.generate_dataset_seed,
                         shape=spec(self.source_dataset).image_shape)

    def default_cuts(self) -> tuple:
        """The cut points a sweep of this mode covers: every one, but where features are aligned
        only after a block, and source-only testing has no cut (recorded as 0)."""
        if self.strategy == "source_only":
            return (0,)
        return tuple(range(1 if self.strategy in ALIGNING_MODES else 0, self.depth + 1))

    def check_cut(self, cut_point: int) -> int:
        if not (isinstance(cut_point, int) and 0 <= cut_point <= self.depth):
            raise DataError(f"cut point {cut_point!r} is outside 0..{self.depth} (depth {self.depth}): "
                            f"cut k keeps conv layers 0..k-1 of the pretrained model")
        if cut_point == 0 and self.strategy in ALIGNING_MODES:
            raise DataError(f"mode {self.strategy!r} aligns the features after block k-1 of cut point k: give cut "
                            f"points 1..{self.depth} (at cut 0 they would be the images themselves)")
        return cut_point


ARCHITECTURE_KEYS = ("depth", "num_channels", "kernel_size", "activation_function", "use_pooling",
                     "pooling_every_n_layers", "pooling_stride", "two_linear_layers", "hidden_dim_lin", "batch_norm")
SOURCE_KEYS = ("source_dataset", "pre_train_classes", "depth", "num_channels", "kernel_size",
               "activation_function", "use_pooling", "pooling_every_n_layers", "pooling_stride",
               "two_linear_layers", "hidden_dim_lin", "lr_pretrain", "num_train_pretrain",
               "early_stop_patience", "batch_size", "val_split", "generate_dataset_seed")
MODE_KEYS = ("freeze", "reinit", "truncate", "reinit_both_dense")


def baseline_params(cfg: Config) -> dict:
    """A baseline trains from scratch: the source model and the mode do not affect it."""
    skip = {"source_dataset", "pre_train_classes", "lr_pretrain", "num_train_pretrain", "lr_fine_tunes", *MODE_KEYS,
            *STRATEGY_KEYS}
    return {k: v for k, v in cfg.params().items() if k not in skip}


def source_params(cfg: Config) -> dict:
    """What a source model depends on; a later architecture option appears only away from its
    legacy value, so the models saved before it keep their names."""
    params = cfg.params()
    later = [k for k in LEGACY_VALUES if k in ARCHITECTURE_KEYS and params[k] != LEGACY_VALUES[k]]
    return {k: params[k] for k in (*SOURCE_KEYS, *later)}


@dataclass(frozen=True)
class Grid:
    """Which runs a sweep makes: percentages x repeats x cut points (not part of the parameters)."""

    percentages: tuple
    cut_points: tuple
    repeats: dict = field(default_factory=dict)  # percentage -> number of repeats
    profile: str = "quick"  # where its results files live (see functions.runs.store.results_path)

    def __post_init__(self):
        for p in self.percentages:
            check_percentage(p)
        if self.profile not in PROFILES:
            raise DataError(f"unknown profile {self.profile!r}; choose one of {list(PROFILES)}")

    def repeats_for(self, percentage: float) -> int:
        return self.repeats[percentage]


def paper_repeats(percentage: float) -> int:
    """The upstream study's repeats: 25 for <= 1%, 20 below 50%, 5 otherwise."""
    return 25 if percentage <= 0.01 else 20 if percentage < 0.5 else 5


PAPER_PERCENTAGES = (0.001, 0.01, 0.1, 0.5, 1.0)
PROFILES = ("quick", "range", "paper")
# The range profile's repeats.  At 0.1% and 1% transfer gains 0.01-0.13 with a spread that 12
# paired repeats detect: an exact Wilcoxon test can then stay below 0.05 after Holm's correction
# over the 7 cut points against the baseline (from 9 repeats: 7 * 2 / 2**9) and over the 28 pairs
# of 8 arms that ask which cut is best (from 11: 28 * 2 / 2**11), with room for a repeat of the
# other sign.  From 10% on the gains are below 0.01 and would need 10 to over 100 repeats
# (stats.repeats_for_power), so there the study gives their intervals, not tests.
RANGE_REPEATS = {0.001: 12, 0.01: 12, 0.1: 3, 0.5: 3, 1.0: 3}


def profile(name: str, setup: Setup) -> tuple[Config, Grid]:
    """``quick``: a 2-core CPU finishes a folder in minutes; ``range``: the quick network over the
    upstream fractions 0.1%..100% in well under an hour; ``paper``: the upstream grid."""
    cifar = setup.source_dataset == "CIFAR10"
    base = Config(source_dataset=setup.source_dataset, target_dataset=setup.target_dataset,
                  pre_train_classes=setup.pre_train_classes, fine_tune_classes=setup.fine_tune_classes)
    if cifar:
        base = base.replace(batch_size=64, num_train=10, early_stop_patience=5, num_train_pretrain=10)
    depth_cuts = tuple(range(base.depth + 1))
    if name == "paper":
        return base, Grid(PAPER_PERCENTAGES, depth_cuts, {p: paper_repeats(p) for p in PAPER_PERCENTAGES}, name)
    # a narrower net (16 channels) and small batches: same protocol, a 2-core CPU runs it in minutes
    quick = base.replace(num_channels=16, batch_size=64, num_train=10, early_stop_patience=3, num_train_pretrain=5)
    # at 1% of a target task one pass is a few steps (at 0.1% a single one); 100 steps per epoch
    # (what 25% of MNIST 5-9 takes in one pass) let every arm, the baseline included, converge
    # before early stopping ends it, instead of stopping after a few dozen steps
    quick = quick.replace(min_steps_per_epoch=100)
    if name == "quick":
        # 1,081 digits training images: the grid reaches 100%
        percentages = (0.01, 0.05, 1.0) if setup.target_dataset == "digits" else (0.01, 0.05)
        return quick, Grid(percentages, depth_cuts, {p: 2 for p in percentages}, name)
    if name == "range":
        return quick, Grid(PAPER_PERCENTAGES, depth_cuts, dict(RANGE_REPEATS), name)
    raise DataError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
