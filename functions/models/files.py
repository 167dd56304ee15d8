"""A study CNN as a file: its weights with the parameters that built it, and back.

Pretraining writes these files and everything that reads a source model (sweeps, feature
extractors, the service) rebuilds it through :func:`load_model`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ARCHITECTURE_KEYS, Config
from ..core.atomic import atomic_file
from ..core.errors import DataError
from .study_cnn import StudyCNN


def save_model(path, model: StudyCNN, info: dict) -> Path:
    """``info`` (its ``config`` holding at least the architecture keys and ``pre_train_classes``,
    and ``in_shape``) and the state dict, written atomically."""
    with atomic_file(path, "wb") as fh:
        torch.save({**info, "state_dict": model.state_dict()}, fh)
    return Path(path)


def load_model(path) -> tuple[StudyCNN, dict]:
    """The network saved in ``path`` and everything saved beside its weights."""
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        params = saved["config"]
        cfg = Config().replace(**{k: params[k] for k in ARCHITECTURE_KEYS if k in params})
        model = StudyCNN(cfg, tuple(saved["in_shape"]), len(params["pre_train_classes"]))
        model.load_state_dict(saved["state_dict"])
    except (OSError, KeyError, TypeError, RuntimeError, EOFError) as err:
        raise DataError(f"{path} is not a source model file written by `python -m functions pretrain` "
                        f"({type(err).__name__}: {err})") from err
    return model.to(memory_format=torch.channels_last), {k: v for k, v in saved.items() if k != "state_dict"}
