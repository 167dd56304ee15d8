"""Source models: pretrained once per source configuration, saved beside the study folder, reused.

One file per configuration (a hash of the source keys in its name), so quick and paper models
live side by side and a results file never pairs with a model trained under other parameters.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..config import Config, Setup, profile, source_params
from ..core.atomic import locked, write_json_atomic
from ..core.device import pick_device
from ..core.errors import DataError
from ..core.paths import REPO_ROOT, output_root
from ..data.catalog import spec
from ..data.tasks import TaskData
from ..models.backbones import Backbone
from ..models.files import load_model, save_model
from ..models.registry import STUDY, create_backbone
from ..models.study_cnn import StudyCNN, build
from ..train.engine import fit_group
from ..train.trainer import fit
from .store import differing_keys


def _config_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def pretrained_path(setup: Setup, cfg: Config) -> Path:
    """One file per source configuration, so quick and paper models live side by side.  With an
    output root of its own (a papermill sweep), a model committed in the repository is reused."""
    name = Path(setup.folder) / "pretrained_models" / f"{setup.name}_{_config_hash(source_params(cfg))}.pt"
    committed = REPO_ROOT / name
    return committed if committed.exists() and not (output_root() / name).exists() else output_root() / name


def load_pretrained(setup: Setup, cfg: Config, log=print, train_if_missing: bool = True,
                    device: torch.device | str | None = None) -> StudyCNN:
    """The source model for ``cfg``: loaded when a file with the same config exists, else trained
    (on ``device``: see :func:`pretrain`).  Processes asking for the same missing model train it
    once: the first trains under the file's lock, the others wait and load what it wrote."""
    path = pretrained_path(setup, cfg)
    if not path.exists():
        if not train_if_missing:
            raise DataError(f"no pretrained model {path}; run `python -m functions pretrain {setup.folder} "
                            f"--setup {setup.name}` with the same parameters")
        with locked(path):
            if not path.exists():
                pretrain(setup, cfg, cfg.source_task(), log, device)
    model, saved = load_model(path)
    if saved["config"] != source_params(cfg):
        raise DataError(f"{path} holds a model for other parameters "
                        f"{differing_keys(saved['config'], source_params(cfg))}; delete it to retrain")
    return model


def source_backbone(setup: Setup, cfg: Config | None = None, log=print, train_if_missing: bool = True) -> Backbone:
    """The source CNN for ``cfg`` (default: the setup's quick profile) as a backbone, normalised as
    its source dataset (see :func:`load_pretrained`)."""
    cfg = profile("quick", setup)[0] if cfg is None else cfg
    stats = spec(cfg.source_dataset)
    return create_backbone(STUDY, load_pretrained(setup, cfg, log, train_if_missing), mean=stats.mean, std=stats.std)


def pretrained_info(setup: Setup, cfg: Config) -> dict:
    """What pretraining recorded beside the model: its config, epochs and accuracies."""
    return json.loads(pretrained_path(setup, cfg).with_suffix(".json").read_text())


def pretrain(setup: Setup, cfg: Config, task: TaskData, log=print, device: torch.device | str | None = None) -> dict:
    """Train the source network on all source training data and save it with its config.

    On the CPU (``device`` None or a CPU) the plain trainer trains it, as it trained every
    committed source model, so they come out again bit for bit; on a GPU the engine trains it on
    the device (the same protocol, equal up to float rounding)."""
    model = build(cfg, tuple(task.train.x.shape[1:]), task.num_classes, cfg.generate_dataset_seed)
    log(f"pretraining {setup.folder}/{setup.name} on {task.dataset} classes {task.classes} "
        f"({len(task.train)} images)")
    protocol = dict(lr=cfg.lr_pretrain, max_epochs=cfg.num_train_pretrain, patience=cfg.early_stop_patience,
                    batch_size=cfg.batch_size)
    if device is None or pick_device(device).type == "cpu":
        result = fit(model, task.train, task.val, task.test, seed=cfg.generate_dataset_seed, **protocol)
    else:
        (result,) = fit_group([model], [task.train], task.val, task.test, seeds=[cfg.generate_dataset_seed],
                              device=device, **protocol)
    info = {"config": source_params(cfg), "in_shape": list(task.train.x.shape[1:]), **result.record()}
    path = pretrained_path(setup, cfg)
    # the model last: a process that finds it (without waiting on the lock) finds its record too
    write_json_atomic(path.with_suffix(".json"), info)
    save_model(path, model, info)
    log(f"saved {path.name}: source test accuracy {result.test_acc:.4f}")
    return info

